"""The fast evaluator's own behaviour: combining roles, reasons, the cache, never raising."""

from __future__ import annotations

from typing import Any

from policies._evaluator import FastEvaluator, role_closure
from policies._source import source_from_text
from tests.policies.conftest import MODEL

MODEL_TEXT = MODEL.read_text(encoding="utf-8")
POLICY = """\
p, reader, own, /t/:tenant/items, GET, allow
p, reader, all, /t/:tenant/items, GET, allow
p, blocked, all, /t/*, *, deny
p, blocked, all, /t/:tenant/items, GET, deny
p, member, tenant, /inbox, GET, allow
g, senior, reader
"""


def _evaluator(**options: Any) -> FastEvaluator:
    return FastEvaluator(source_from_text(MODEL_TEXT, POLICY), **options)


class TestCombiningRoles:
    def test_a_deny_from_any_role_wins(self) -> None:
        """reader allows, blocked denies: the answer is the first matching deny line."""
        decision = _evaluator().decide(
            roles={"reader", "blocked"}, tenant="a", method="GET", path="/t/a/items"
        )
        assert (decision.allowed, decision.reason) == (False, "explicit_deny")
        assert decision.rule == "p, blocked, all, /t/*, *, deny"

    def test_an_allow_names_the_last_matching_allow_line(self) -> None:
        """As pycasbin's enforce_ex reports it: the highest-numbered matching allow."""
        decision = _evaluator().decide(
            roles={"senior"}, tenant="a", method="GET", path="/t/a/items"
        )
        assert decision.allowed
        assert decision.rule == "p, reader, all, /t/:tenant/items, GET, allow"

    def test_no_roles_means_no_matching_rule(self) -> None:
        """An empty role set is denied by default."""
        decision = _evaluator().decide(roles=set(), tenant=None, method="GET", path="/inbox")
        assert (decision.allowed, decision.reason, decision.rule) == (
            False,
            "no_matching_rule",
            None,
        )

    def test_tenant_scope_needs_a_tenant(self) -> None:
        """A tenant-scoped line matches callers with a tenant, and only them."""
        evaluator = _evaluator()
        assert evaluator.decide(roles={"member"}, tenant="a", method="GET", path="/inbox").allowed
        assert not evaluator.decide(
            roles={"member"}, tenant=None, method="GET", path="/inbox"
        ).allowed


class TestNeverRaises:
    def test_unhashable_roles_are_a_policy_error_denial(self) -> None:
        """Input the evaluator cannot handle is denied with reason policy_error."""
        decision = _evaluator().decide(
            roles=[["reader"]],  # type: ignore[list-item]
            tenant="a",
            method="GET",
            path="/t/a/items",
        )
        assert (decision.allowed, decision.reason) == (False, "policy_error")

    def test_non_string_path_is_an_invalid_request(self) -> None:
        """A path that is not a string is refused, not crashed on."""
        decision = _evaluator().decide(
            roles={"reader"},
            tenant="a",
            method="GET",
            path=None,  # type: ignore[arg-type]
        )
        assert (decision.allowed, decision.reason) == (False, "invalid_request")


class TestCache:
    def test_is_bounded(self) -> None:
        """The cache never holds more than its size, whatever paths arrive."""
        evaluator = _evaluator(cache_size=8)
        for n in range(50):
            evaluator.decide(roles={"reader"}, tenant="a", method="GET", path=f"/t/a/{n}")
        assert len(evaluator._cache) <= 8

    def test_returns_the_same_decision_twice(self) -> None:
        """A cached answer is the computed answer."""
        evaluator = _evaluator()
        request: dict[str, Any] = {
            "roles": {"reader"},
            "tenant": "a",
            "method": "GET",
            "path": "/t/a/items",
        }
        first = evaluator.decide(**request)
        assert evaluator.decide(**request) is first
        assert FastEvaluator(evaluator.source, cache_size=0).decide(**request) == first

    def test_long_paths_are_not_cached(self) -> None:
        """A flood of long unique paths cannot make the cache large."""
        evaluator = _evaluator()
        evaluator.decide(roles={"reader"}, tenant="a", method="GET", path="/t/" + "a" * 300)
        assert evaluator._cache == {}

    def test_can_be_switched_off(self) -> None:
        """cache_size=0 keeps nothing."""
        evaluator = _evaluator(cache_size=0)
        evaluator.decide(roles={"reader"}, tenant="a", method="GET", path="/t/a/items")
        assert evaluator._cache == {}


class TestRoleClosure:
    def test_follows_links_transitively_and_survives_cycles(self) -> None:
        """a -> b -> c -> a: each reaches all three, and the walk ends."""
        links = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
        assert role_closure(links, "a") == {"a", "b", "c"}
