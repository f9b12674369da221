"""The fast evaluator: the same decisions as pycasbin's ``Enforcer``, in microseconds.

pycasbin evaluates the matcher against every ``p`` line for every request. Here the rules are
compiled once, when a policy is loaded:

- role inheritance is resolved ahead of time, exactly as pycasbin's ``RoleManager`` resolves it
  (a role reaches the roles at most ``MAX_HIERARCHY_LEVEL - 1`` ``g`` links away);
- each role's reachable rules are indexed by method and then in a trie of the pattern's
  literal leading segments (``/api/schools/:tenant`` sits under ``api`` -> ``schools``), so a
  request only meets the rules whose literal prefix its path starts with; at each trie node
  deny lines are kept in file order and allow lines in reverse file order, so the first match
  in each list is the deciding one (see :mod:`policies._decision`);
- path patterns are compiled to the very regular expressions pycasbin's ``keyMatch2`` and
  ``keyGet2`` build (anchored, ``:name`` one segment).

A bounded cache of decisions lives in the compiled state, so a reload (a new state) drops it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Final

from gateway.types import Decision
from policies._decision import (
    ALLOWED,
    EXPLICIT_DENY,
    NO_MATCH,
    POLICY_ERROR,
    matched_method,
    precheck,
)
from policies._source import PolicySource, Rule
from policies._syntax import (
    METHOD_WILDCARD,
    TENANT_VAR,
    keyget2_regex,
    keymatch2_regex,
    literal_prefix,
)

__all__ = ["DEFAULT_CACHE_SIZE", "MAX_HIERARCHY_LEVEL", "FastEvaluator", "role_closure"]

#: pycasbin's ``RoleManager`` default ``max_hierarchy_level``.
MAX_HIERARCHY_LEVEL: Final = 10
DEFAULT_CACHE_SIZE: Final = 16_384
#: Longer paths are decided but not cached, so the cache stays a few MB whatever arrives.
MAX_CACHED_PATH: Final = 256

_SCOPE_ALL: Final = 0
_SCOPE_TENANT: Final = 1
_SCOPE_OWN: Final = 2
_SCOPE_CODES: Final = {"all": _SCOPE_ALL, "tenant": _SCOPE_TENANT, "own": _SCOPE_OWN}
_POLICY_ERROR: Final = Decision(allowed=False, reason=POLICY_ERROR)

# One compiled rule: (index, scope code, regex match function, tenant group or 0, decision).
_Compiled = tuple[int, int, Callable[[str], "re.Match[str] | None"], int, Decision]
# Deny lines in file order, allow lines in reverse order.
_Lists = tuple[tuple[_Compiled, ...], tuple[_Compiled, ...]]
# A trie node: the rules whose literal prefix ends here (or None), and the children by segment.
_Node = tuple["_Lists | None", dict[str, "_Node"]]


def role_closure(
    links: Mapping[str, Collection[str]], role: str, *, max_level: int = MAX_HIERARCHY_LEVEL
) -> frozenset[str]:
    """The roles whose rules ``role`` gets: itself and those within ``max_level - 1`` links.

    Mirrors ``casbin.rbac.default_role_manager.RoleManager._has_link`` level by level.
    """
    reached = {role}
    frontier = {role}
    for _ in range(max_level - 1):
        frontier = {parent for name in frontier for parent in links.get(name, ())} - reached
        if not frontier:
            break
        reached |= frontier
    return frozenset(reached)


def _compile(rule: Rule) -> _Compiled:
    if rule.scope == "own":
        expression, group = keyget2_regex(rule.pattern, TENANT_VAR)
        tenant_group = group or 0
    else:
        expression, tenant_group = keymatch2_regex(rule.pattern), 0
    allowed = rule.effect == "allow"
    decision = Decision(
        allowed=allowed, reason=ALLOWED if allowed else EXPLICIT_DENY, rule=rule.text
    )
    match = re.compile(expression).match
    return (rule.index, _SCOPE_CODES[rule.scope], match, tenant_group, decision)


def _trie(
    entries: list[tuple[tuple[str, ...], Rule]], depth: int, compiled: Mapping[int, _Compiled]
) -> _Node:
    """Rules (in file order, with their literal prefixes) arranged as a trie from ``depth``."""
    here = [rule for prefix, rule in entries if len(prefix) == depth]
    below: dict[str, list[tuple[tuple[str, ...], Rule]]] = {}
    for prefix, rule in entries:
        if len(prefix) > depth:
            below.setdefault(prefix[depth], []).append((prefix, rule))
    lists: _Lists | None = None
    if here:
        lists = (
            tuple(compiled[r.index] for r in here if r.effect == "deny"),
            tuple(compiled[r.index] for r in reversed(here) if r.effect == "allow"),
        )
    children = {segment: _trie(group, depth + 1, compiled) for segment, group in below.items()}
    return (lists, children)


class FastEvaluator:
    """Decides requests over one compiled policy; immutable except for its decision cache."""

    def __init__(self, source: PolicySource, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.source = source
        self._cache_size = cache_size
        self._cache: dict[Hashable, Decision] = {}
        parents: dict[str, set[str]] = {}
        for link in source.links:
            parents.setdefault(link.role, set()).add(link.inherits)
        self.closures: dict[str, frozenset[str]] = {}
        rules_by_role: dict[str, list[Rule]] = {}
        for rule in source.rules:
            rules_by_role.setdefault(rule.role, []).append(rule)
        compiled = {rule.index: _compile(rule) for rule in source.rules}
        self._compiled = compiled
        self._tries: dict[str, dict[str, _Node]] = {}
        for role in set(parents) | set(rules_by_role):
            closure = role_closure(parents, role)
            self.closures[role] = closure
            reachable = sorted(
                (rule for name in closure for rule in rules_by_role.get(name, ())),
                key=lambda rule: rule.index,
            )
            if reachable:
                self._tries[role] = self._index_role(reachable, compiled)

    @staticmethod
    def _index_role(rules: list[Rule], compiled: Mapping[int, _Compiled]) -> dict[str, _Node]:
        """One trie per method the role's rules name (each including the ``*`` lines)."""
        by_method: dict[str, _Node] = {}
        for method in {rule.method for rule in rules} | {METHOD_WILDCARD}:
            entries = [
                (literal_prefix(rule.pattern), rule)
                for rule in rules
                if rule.method in (method, METHOD_WILDCARD)
            ]
            by_method[method] = _trie(entries, 0, compiled)
        return by_method

    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        """The decision for one request (see :mod:`policies._decision`); never raises."""
        try:
            key = (
                roles if isinstance(roles, frozenset) else frozenset(roles),
                tenant,
                method,
                path,
            )
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            refused = precheck(roles=roles, tenant=tenant, method=method, path=path)
            if refused is not None:
                return refused
            found = self._match(roles, tenant or "", matched_method(method), path)
            if self._cache_size and len(path) <= MAX_CACHED_PATH:
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
                self._cache[key] = found
            return found
        except Exception:
            return _POLICY_ERROR

    def matching_rules(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> list[Rule]:
        """Every line that matches the request, in file order (slow; for explaining)."""
        reachable = {name for role in roles for name in self.closures.get(role, {role})}
        return [
            rule
            for rule in self.source.rules
            if rule.role in reachable
            and rule.method in (matched_method(method), METHOD_WILDCARD)
            and _hit(self._compiled[rule.index], tenant or "", path)
        ]

    def _candidates(self, roles: Collection[str], method: str, path: str) -> list[_Lists]:
        """The rule lists of every trie node the path passes, for every role."""
        segments = path[1:].split("/")
        lists: list[_Lists] = []
        for role in roles:
            tries = self._tries.get(role)
            if tries is None:
                continue
            node = tries.get(method) or tries[METHOD_WILDCARD]
            if node[0] is not None:
                lists.append(node[0])
            for segment in segments:
                found = node[1].get(segment)
                if found is None:
                    break
                node = found
                if node[0] is not None:
                    lists.append(node[0])
        return lists

    def _match(self, roles: Collection[str], tenant: str, method: str, path: str) -> Decision:
        lists = self._candidates(roles, method, path)
        deny: Decision | None = None
        deny_index = len(self.source.rules)
        for denies, _ in lists:
            for compiled in denies:  # file order: the first hit is this role's first deny
                if compiled[0] >= deny_index:
                    break
                if _hit(compiled, tenant, path):
                    deny_index, deny = compiled[0], compiled[4]
                    break
        if deny is not None:
            return deny
        allow: Decision | None = None
        allow_index = -1
        for _, allows in lists:
            for compiled in allows:  # reverse file order: the first hit is the last allow
                if compiled[0] <= allow_index:
                    break
                if _hit(compiled, tenant, path):
                    allow_index, allow = compiled[0], compiled[4]
                    break
        return allow if allow is not None else NO_MATCH


def _hit(compiled: _Compiled, tenant: str, path: str) -> bool:
    """Whether one compiled rule matches (the matcher of model.conf, minus ``g`` and method)."""
    scope = compiled[1]
    if scope == _SCOPE_ALL:
        return compiled[2](path) is not None
    if not tenant:
        return False
    found = compiled[2](path)
    if found is None:
        return False
    return scope == _SCOPE_TENANT or found.group(compiled[3]) == tenant
