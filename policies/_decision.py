"""Reasons a decision carries, and the checks every authorizer applies before matching.

Stable snake_case reasons (``Decision.reason``, the audit event's ``event.reason``):

``allowed``            an allow line matched and no deny line did
``explicit_deny``      a deny line matched (it wins over every allow)
``no_matching_rule``   nothing matched: deny by default
``invalid_tenant``     the tenant id is not a plain id (empty, too long, or pattern characters)
``invalid_request``    the method is not an upper-case token, or the path is not a canonical
                       path (does not start with ``/``, has control characters, is too long)
``policy_error``       the evaluator failed unexpectedly; denied, never raised

``HEAD`` is decided as ``GET`` (it is a GET without the body, RFC 9110 9.3.2), so the policy
lists GET only; every other method is taken as it is.

``Decision.rule`` is the deciding line as ``policy.csv`` states it (``p, role, scope, pattern,
method, effect``): for a deny the first matching deny line, for an allow the last matching allow
line. These are the lines pycasbin's ``enforce_ex`` reports, so both engines name the same rule.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from gateway.types import Decision
from policies._syntax import valid_method, valid_path, valid_tenant

__all__ = [
    "ALLOWED",
    "EXPLICIT_DENY",
    "INVALID_REQUEST",
    "INVALID_TENANT",
    "NO_MATCH",
    "NO_MATCHING_RULE",
    "POLICY_ERROR",
    "matched_method",
    "precheck",
]

ALLOWED: Final = "allowed"
EXPLICIT_DENY: Final = "explicit_deny"
NO_MATCHING_RULE: Final = "no_matching_rule"
INVALID_TENANT: Final = "invalid_tenant"
INVALID_REQUEST: Final = "invalid_request"
POLICY_ERROR: Final = "policy_error"

NO_MATCH: Final = Decision(allowed=False, reason=NO_MATCHING_RULE)
_BAD_TENANT: Final = Decision(allowed=False, reason=INVALID_TENANT)
_BAD_REQUEST: Final = Decision(allowed=False, reason=INVALID_REQUEST)


def precheck(
    *, roles: Collection[str], tenant: str | None, method: str, path: str
) -> Decision | None:
    """The denial for malformed input, or ``None`` when the request may be matched."""
    if tenant is not None and not (isinstance(tenant, str) and valid_tenant(tenant)):
        return _BAD_TENANT
    if not (isinstance(method, str) and valid_method(method)):
        return _BAD_REQUEST
    if not (isinstance(path, str) and valid_path(path)):
        return _BAD_REQUEST
    return None


def matched_method(method: str) -> str:
    """The method the policy is matched with: ``HEAD`` as ``GET``, others unchanged."""
    return "GET" if method == "HEAD" else method
