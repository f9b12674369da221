"""Compliance review: the matrix, reach, diffs in words, and lint of risky grants."""

from __future__ import annotations

import itertools

import pytest

from policies._evaluator import FastEvaluator
from policies._resources import Resources
from policies._review import (
    claims_findings,
    diff_in_words,
    effective_changes,
    lint,
    matrix,
    roles_of,
)
from policies._source import PolicySource, source_from_text
from tests.policies.conftest import MODEL, POLICY

MODEL_TEXT = MODEL.read_text(encoding="utf-8")
SHIPPED_TEXT = POLICY.read_text(encoding="utf-8")


def _with(extra: str) -> PolicySource:
    return source_from_text(MODEL_TEXT, SHIPPED_TEXT + extra)


def _codes(source: PolicySource, resources: Resources) -> set[tuple[str, str]]:
    return {(f.level, f.code) for f in lint(source, resources)}


class TestMatrix:
    def _cell(self, source: PolicySource, resources: Resources, role: str, route: str) -> str:
        method, pattern = route.split(" ", 1)
        for row in matrix(FastEvaluator(source), resources):
            if (row.route.method, row.route.pattern) == (method, pattern):
                return row.cells[role]
        raise AssertionError(route)

    @pytest.mark.parametrize(
        ("role", "route", "cell"),
        [
            ("teacher", "GET /api/schools/:tenant/students", "own tenant"),
            ("platform_staff", "GET /api/schools/:tenant/students", "any tenant"),
            ("school_admin", "GET /_gateway/audit", "tenant members"),
            ("anonymous", "GET /", "yes"),
            ("supplier", "GET /api/schools/:tenant/students", "—"),
            ("incident_responder", "DELETE /_gateway/audit/:id", "—"),
        ],
    )
    def test_cells_say_how_far_a_role_reaches(
        self, shipped: PolicySource, resources: Resources, role: str, route: str, cell: str
    ) -> None:
        """Each cell is computed from decisions: own tenant, any tenant, members, yes or no."""
        assert self._cell(shipped, resources, role, route) == cell

    def test_covers_every_route_and_producible_role(
        self, shipped: PolicySource, resources: Resources
    ) -> None:
        """One row per known route, one column per role a mapping produces."""
        rows = matrix(FastEvaluator(shipped), resources)
        assert len(rows) == len(resources.routes)
        assert all(set(row.cells) == set(roles_of(resources)) for row in rows)
        assert "everyone" not in roles_of(resources)


class TestLint:
    def test_the_shipped_policy_has_no_errors(
        self, shipped: PolicySource, resources: Resources
    ) -> None:
        """CI gates on lint errors; the policy we ship passes."""
        assert [str(f) for f in lint(shipped, resources) if f.level == "error"] == []

    @pytest.mark.parametrize(
        ("extra", "code"),
        [
            ("p, teacher, all, /api/schools/:tenant/reports, GET, allow\n", "cross_tenant_reach"),
            (
                "p, supplier, own, /api/schools/:tenant/students, GET, allow\n",
                "others_personal_data",
            ),
            ("p, student, all, /api/admin/schools, GET, allow\n", "others_personal_data"),
            ("p, platform_admin, all, /_gateway/*, GET, allow\n", "wildcard_path"),
            ("p, platform_admin, all, /:x/audit, GET, allow\n", "wildcard_grant"),
            ("p, platform_admin, all, /_gateway/console, *, allow\n", "wildcard_grant"),
            ("p, platform_admin, all, /api/nothing-here, GET, allow\n", "unknown_route"),
            ("p, janitor, all, /, GET, allow\n", "unknown_role"),
            ("g, intern, teacher\n", "unknown_role"),
        ],
    )
    def test_flags_each_kind_of_risky_grant(
        self, resources: Resources, extra: str, code: str
    ) -> None:
        """Each risky line added to the shipped policy is reported under its code."""
        found = {c for _, c in _codes(_with(extra), resources)}
        assert code in found

    def test_any_way_to_delete_audit_events_is_an_error(self, resources: Resources) -> None:
        """Removing the deny lines and granting DELETE on the audit tree is caught."""
        text = "\n".join(
            line
            for line in SHIPPED_TEXT.splitlines()
            if not (line.startswith("p, everyone, all, /_gateway/audit") and "deny" in line)
        )
        source = source_from_text(
            MODEL_TEXT, text + "\np, incident_responder, all, /_gateway/audit/*, DELETE, allow\n"
        )
        assert ("error", "audit_deletable") in _codes(source, resources)

    def test_a_blocked_grant_to_delete_audit_events_is_still_an_error(
        self, resources: Resources
    ) -> None:
        """An allow line for DELETE on audit events is reported even while a deny blocks it."""
        source = _with("p, incident_responder, all, /_gateway/audit/*, DELETE, allow\n")
        assert (
            FastEvaluator(source)
            .decide(
                roles={"incident_responder"}, tenant=None, method="DELETE", path="/_gateway/audit/x"
            )
            .reason
            == "explicit_deny"
        )
        assert ("error", "audit_deletable") in _codes(source, resources)

    def test_inheritance_deeper_than_pycasbin_follows_is_an_error(
        self, resources: Resources
    ) -> None:
        """A chain of more than nine links would be silently cut short by pycasbin."""
        chain = ["teacher", *(f"level{n}" for n in range(10))]
        links = "".join(f"g, {a}, {b}\n" for a, b in itertools.pairwise(chain))
        found = _codes(_with(links), resources)
        assert ("error", "inheritance_too_deep") in found


class TestClaimsFindings:
    CLAIMS = """
[mappings.surfconext.roles]
employee = "teacher"
student = "student"
[mappings.devidp.roles]
x = "platform_admin"
"""

    def test_the_shipped_claims_mapping_passes(self, resources: Resources) -> None:
        """policies/claims.toml asserts only federation roles, and all of them."""
        text = (POLICY.parent / "claims.toml").read_text(encoding="utf-8")
        assert claims_findings(text, resources) == []

    def test_a_local_role_from_a_federation_is_an_error(self, resources: Resources) -> None:
        """Local roles (lob_coordinator, the security roles...) are never federated."""
        text = self.CLAIMS + '[mappings.entree.roles]\nstaff = "security_officer"\n'
        codes = {f.code for f in claims_findings(text, resources)}
        assert codes == {"federated_local_role"}

    def test_test_mappings_may_assert_anything(self, resources: Resources) -> None:
        """devidp (a test mapping) asserting platform_admin is fine."""
        assert claims_findings(self.CLAIMS, resources) == []

    def test_a_federation_role_no_mapping_produces_is_an_error(self, resources: Resources) -> None:
        """If no production mapping asserts student, pupils cannot log in as students."""
        text = self.CLAIMS.replace('student = "student"\n', "")
        findings = claims_findings(text, resources)
        assert [f.code for f in findings] == ["unproducible_role"]
        assert findings[0].message.startswith("student is granted by federation")

    def test_an_unknown_role_is_an_error(self, resources: Resources) -> None:
        """A mapping to a role resources.toml does not know is refused."""
        text = self.CLAIMS + '[mappings.entree.roles]\nstaff = "janitor"\n'
        assert {f.code for f in claims_findings(text, resources)} == {"unknown_role"}


class TestDiff:
    def test_says_what_was_granted_and_what_it_reaches(
        self, shipped: PolicySource, resources: Resources
    ) -> None:
        """A new grant appears as a line change and as an effective change with categories."""
        new = _with("p, teacher, own, /api/schools/:tenant/reports, GET, allow\n")
        words = diff_in_words(shipped, new, resources)
        assert "  granted: teacher may GET /api/schools/:tenant/reports (own tenant only)" in words
        assert (
            "  teacher: GET /api/schools/:tenant/reports (school_reports; b): — -> own tenant"
            in words
        )

    def test_inheritance_changes_show_their_effect(
        self, shipped: PolicySource, resources: Resources
    ) -> None:
        """Dropping lob_coordinator's link to teacher revokes the reads it inherited."""
        new = source_from_text(
            MODEL_TEXT, SHIPPED_TEXT.replace("g, lob_coordinator, teacher\n", "")
        )
        words = diff_in_words(shipped, new, resources)
        assert "  lob_coordinator no longer inherits the permissions of teacher" in words
        assert any(
            w.startswith("  lob_coordinator: GET /api/schools/:tenant/students ")
            and w.endswith("own tenant -> —")
            for w in words
        )

    def test_identical_policies_have_no_changes(
        self, shipped: PolicySource, resources: Resources
    ) -> None:
        """No difference is said as (none), twice."""
        rows = matrix(FastEvaluator(shipped), resources)
        assert effective_changes(rows, rows, roles_of(resources)) == []
        assert diff_in_words(shipped, shipped, resources).count("  (none)") == 2
