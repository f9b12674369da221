"""Errors of the policies package.

    PolicyError                  base: a policy, model, resources or table file cannot be used
    ├── PolicySyntaxError        a file cannot be read or parsed (names the file and line)
    ├── PolicyInvalid            it parses, but breaks a rule of the policy language we support
    ├── ModelUnsupported         model.conf differs from the model the fast evaluator implements
    ├── ResourcesInvalid         the route/role data file (resources.toml) is malformed
    ├── PolicyTestsFailed        the policy test table fails against the new policy
    └── PolicyLintFailed         lint finds a risky grant (python -m policies review lint)

Each has a stable snake_case ``code`` used as the ``event.reason`` of ``policy.reload_failed``.
Messages name files by their base name and line number; they never reach an HTTP client.
"""

from __future__ import annotations

from typing import ClassVar


class PolicyError(Exception):
    """A policy file cannot be used; the policy in force stays in force."""

    code: ClassVar[str] = "policy_error"


class PolicySyntaxError(PolicyError):
    """A file cannot be read or parsed."""

    code = "policy_syntax_error"


class PolicyInvalid(PolicyError):
    """The policy parses but breaks a rule of the supported policy language."""

    code = "policy_invalid"


class ModelUnsupported(PolicyError):
    """model.conf is not the model the fast evaluator implements."""

    code = "model_unsupported"


class ResourcesInvalid(PolicyError):
    """The route and role data file is malformed."""

    code = "resources_invalid"


class PolicyTestsFailed(PolicyError):
    """The policy test table fails against the new policy."""

    code = "policy_tests_failed"

    def __init__(self, message: str, *, failures: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.failures = failures


class PolicyLintFailed(PolicyError):
    """Lint finds errors (risky grants) in the new policy."""

    code = "policy_lint_failed"
