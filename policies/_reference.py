"""pycasbin's ``Enforcer`` as an :class:`~policies._types.Authorizer`: the reference semantics.

Slow by design (it evaluates the matcher against every line); used by the tests, the benchmark
and ``python -m policies check`` to confirm the fast evaluator, never on the request path.

The gateway asks once per role and combines the answers (:mod:`policies._decision`): a deny
line from any role wins (the lowest-numbered one names the rule), else an allow from any role
(the highest-numbered one, as ``enforce_ex`` reports it), else no matching rule.

``per_role_enforcers=True`` gives each role an ``Enforcer`` holding only the lines whose role
pycasbin's own role manager links it to (``g(role, p.sub)`` is a conjunct of the matcher, so the
other lines cannot match); the differential test uses it to afford 100,000 requests against a
10,000-line policy, and checks it against the unsplit ``Enforcer`` on a sample.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import casbin
from casbin import util

from gateway.types import Decision
from policies._decision import (
    ALLOWED,
    EXPLICIT_DENY,
    NO_MATCH,
    POLICY_ERROR,
    matched_method,
    precheck,
)
from policies._source import PolicySource

__all__ = ["ReferenceAuthorizer", "new_enforcer"]


def new_enforcer(source: PolicySource, *, rule_indices: Collection[int] | None = None) -> Any:
    """A pycasbin ``Enforcer`` over ``source`` (optionally only some ``p`` lines, in order)."""
    model = source.casbin_model(rule_indices=rule_indices)
    enforcer = casbin.Enforcer(model)
    # keyGet2 is one of pycasbin's operators but not registered by default (PITFALLS.md).
    enforcer.add_function("keyGet2", util.key_get2)
    enforcer.build_role_links()
    return enforcer


class ReferenceAuthorizer:
    """Decides with pycasbin's ``Enforcer``; same contract as the fast evaluator."""

    def __init__(self, source: PolicySource, *, per_role_enforcers: bool = False) -> None:
        self.source = source
        self.enforcer = new_enforcer(source)
        self._per_role = per_role_enforcers
        self._enforcers: dict[str, Any] = {}
        self._by_role: dict[str, list[int]] = {}
        for rule in source.rules:
            self._by_role.setdefault(rule.role, []).append(rule.index)
        self._first: dict[tuple[str, ...], int] = {}
        self._last: dict[tuple[str, ...], int] = {}
        for rule in source.rules:
            self._first.setdefault(rule.fields, rule.index)
            self._last[rule.fields] = rule.index

    def _enforcer_for(self, role: str) -> Any:
        if not self._per_role:
            return self.enforcer
        found = self._enforcers.get(role)
        if found is None:
            has_link = self.enforcer.get_role_manager().has_link
            linked = [
                index
                for name, indices in self._by_role.items()
                if has_link(role, name)
                for index in indices
            ]
            found = new_enforcer(self.source, rule_indices=linked)
            self._enforcers[role] = found
        return found

    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        denied = precheck(roles=roles, tenant=tenant, method=method, path=path)
        if denied is not None:
            return denied
        method = matched_method(method)
        deny_at: int | None = None
        allow_at: int | None = None
        for role in roles:
            _, explained = self._enforcer_for(role).enforce_ex(role, tenant or "", path, method)
            if not explained:
                continue
            fields = tuple(str(value) for value in explained)
            if fields[-1] == "deny":
                index = self._first[fields]
                deny_at = index if deny_at is None else min(deny_at, index)
            elif fields[-1] == "allow":
                index = self._last[fields]
                allow_at = index if allow_at is None else max(allow_at, index)
            else:
                return Decision(allowed=False, reason=POLICY_ERROR)
        if deny_at is not None:
            rule = self.source.rules[deny_at]
            return Decision(allowed=False, reason=EXPLICIT_DENY, rule=rule.text)
        if allow_at is not None:
            rule = self.source.rules[allow_at]
            return Decision(allowed=True, reason=ALLOWED, rule=rule.text)
        return NO_MATCH
