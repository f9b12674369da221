"""The fast evaluator decides exactly like pycasbin's Enforcer (decision, reason and rule).

Requests per policy: ``POLICY_DIFF_REQUESTS`` (default 50,000; 100,000 over both policies).
pycasbin costs about 0.1 to 1 ms per request here, so this module takes most of a minute.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterable

import pytest

from gateway.types import Decision
from policies._evaluator import FastEvaluator
from policies._reference import ReferenceAuthorizer
from policies._source import PolicySource, source_from_text
from policies._synthetic import Request, synthetic_policy, synthetic_requests
from tests.policies.conftest import MODEL

REQUESTS = int(os.environ.get("POLICY_DIFF_REQUESTS", "50000"))
MODEL_TEXT = MODEL.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def generated() -> PolicySource:
    return source_from_text(MODEL_TEXT, synthetic_policy(lines=10_000, roles=1_000, seed=5))


def _decide(authorizer: FastEvaluator | ReferenceAuthorizer, request: Request) -> Decision:
    roles, tenant, method, path = request
    return authorizer.decide(roles=roles, tenant=tenant, method=method, path=path)


def _differences(
    source: PolicySource, requests: Iterable[Request], reference: ReferenceAuthorizer
) -> tuple[list[str], Counter[str]]:
    fast = FastEvaluator(source)
    differences: list[str] = []
    reasons: Counter[str] = Counter()
    for request in requests:
        ours = _decide(fast, request)
        theirs = _decide(reference, request)
        reasons[ours.reason] += 1
        if ours != theirs and len(differences) < 10:
            differences.append(f"{request}: fast {ours}, pycasbin {theirs}")
    return differences, reasons


def _assert_mix(reasons: Counter[str], total: int) -> None:
    """The generated requests exercise every outcome, or the comparison proves little."""
    assert sum(reasons.values()) == total
    for reason in ("allowed", "explicit_deny", "no_matching_rule"):
        assert reasons[reason] >= total // 50, reasons
    assert reasons["invalid_tenant"] > 0 and reasons["invalid_request"] > 0, reasons


class TestShippedPolicy:
    def test_fast_evaluator_equals_pycasbin(self, shipped: PolicySource) -> None:
        """Over generated requests near the shipped rules, no decision differs."""
        reference = ReferenceAuthorizer(shipped, per_role_enforcers=True)
        requests = synthetic_requests(shipped, count=REQUESTS, seed=11)
        differences, reasons = _differences(shipped, requests, reference)
        assert differences == []
        _assert_mix(reasons, REQUESTS)


class TestGeneratedPolicy:
    def test_has_the_size_asked_for(self, generated: PolicySource) -> None:
        """10,000 lines over 1,000 roles."""
        assert len(generated.rules) + len(generated.links) == 10_000
        assert len({r.role for r in generated.rules} | {lk.role for lk in generated.links}) == 1_000

    def test_fast_evaluator_equals_pycasbin(self, generated: PolicySource) -> None:
        """Over generated requests near the generated rules, no decision differs."""
        reference = ReferenceAuthorizer(generated, per_role_enforcers=True)
        requests = synthetic_requests(generated, count=REQUESTS, seed=12)
        differences, reasons = _differences(generated, requests, reference)
        assert differences == []
        _assert_mix(reasons, REQUESTS)


class TestPerRoleEnforcers:
    def test_equal_the_single_enforcer_on_the_shipped_policy(self, shipped: PolicySource) -> None:
        """Splitting the Enforcer by role (g is a conjunct of the matcher) changes nothing."""
        split = ReferenceAuthorizer(shipped, per_role_enforcers=True)
        whole = ReferenceAuthorizer(shipped)
        for request in synthetic_requests(shipped, count=2_000, seed=13):
            assert _decide(split, request) == _decide(whole, request), request

    def test_equal_the_single_enforcer_on_the_generated_policy(
        self, generated: PolicySource
    ) -> None:
        """The same on a sample of the 10,000-line policy (each whole decision costs ~60 ms)."""
        split = ReferenceAuthorizer(generated, per_role_enforcers=True)
        whole = ReferenceAuthorizer(generated)
        for request in synthetic_requests(generated, count=40, seed=14):
            assert _decide(split, request) == _decide(whole, request), request


class TestInheritanceDepth:
    def test_follows_pycasbins_ten_level_limit(self) -> None:
        """A role nine links below a rule's role gets it; ten links below does not."""
        chain = [f"c{n}" for n in range(12)]
        links = "".join(f"g, {child}, {parent}\n" for parent, child in itertools.pairwise(chain))
        source = source_from_text(MODEL_TEXT, "p, c0, all, /x, GET, allow\n" + links)
        fast, reference = FastEvaluator(source), ReferenceAuthorizer(source)
        allowed = {}
        for role in chain:
            request: Request = (frozenset({role}), None, "GET", "/x")
            assert _decide(fast, request) == _decide(reference, request)
            allowed[role] = _decide(fast, request).allowed
        assert [role for role in chain if allowed[role]] == chain[:10]
