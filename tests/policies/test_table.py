"""The policy test table: every row holds for pycasbin's Enforcer and for the fast evaluator."""

from __future__ import annotations

import pytest

from policies._evaluator import FastEvaluator
from policies._reference import ReferenceAuthorizer
from policies._resources import Resources
from policies._table import Case, load_table, parse_table, run_table
from policies.errors import PolicySyntaxError
from tests.policies import intent
from tests.policies.conftest import TABLE

CASES = load_table(TABLE)
GENERATED_MARKER = "# --- generated: tests/policies/intent.py"


def _id(case: Case) -> str:
    return f"L{case.line}"


class TestShippedTable:
    @pytest.mark.parametrize("case", CASES, ids=_id)
    def test_reference_enforcer_agrees(self, reference: ReferenceAuthorizer, case: Case) -> None:
        """pycasbin's Enforcer gives the decision and reason the row expects."""
        assert run_table(reference, (case,)) == []

    @pytest.mark.parametrize("case", CASES, ids=_id)
    def test_fast_evaluator_agrees(self, fast: FastEvaluator, case: Case) -> None:
        """The fast evaluator gives the decision and reason the row expects."""
        assert run_table(fast, (case,)) == []


class TestTableCoverage:
    def test_at_least_150_cases(self) -> None:
        """The table is large enough to mean something."""
        assert len(CASES) >= 150

    def test_every_role_meets_every_route(self, resources: Resources) -> None:
        """Each produced role is tried on every known route (method and pattern)."""
        tried = {
            (role, case.method, route.pattern)
            for case in CASES
            for role in case.roles
            if len(case.roles) == 1
            and (info := resources.classify(case.method, case.path)) is not None
            for route in resources.routes
            if route.method == info.method and route.pattern == info.pattern
        }
        missing = [
            (role, route.method, route.pattern)
            for role, info in resources.roles.items()
            if not info.abstract
            for route in resources.routes
            if (role, route.method, route.pattern) not in tried
        ]
        assert missing == []

    def test_cross_tenant_attempts_are_denied_for_tenant_roles(self, resources: Resources) -> None:
        """Every tenant-bound role is tried on another tenant's route, and denied each time."""
        crossing = [
            case
            for case in CASES
            if case.tenant
            and (info := resources.classify(case.method, case.path)) is not None
            and info.tenant not in (None, case.tenant)
            and all(
                not resources.roles[role].cross_tenant
                for role in case.roles
                if role in resources.roles
            )
        ]
        tenant_roles = {n for n, r in resources.roles.items() if r.tenant != "none"}
        assert tenant_roles <= {role for case in crossing for role in case.roles}
        assert [case.describe() for case in crossing if case.allowed] == []

    def test_nobody_deletes_audit_events(self, resources: Resources) -> None:
        """Every role is refused DELETE on the audit collection and on an audit event."""
        for role, info in resources.roles.items():
            if info.abstract:
                continue
            for path in ("/_gateway/audit", "/_gateway/audit/x1"):
                rows = [
                    c
                    for c in CASES
                    if c.roles == {role} and c.method == "DELETE" and c.path == path
                ]
                assert rows, (role, path)
                assert all(not row.allowed and row.reason == "explicit_deny" for row in rows)


class TestIntent:
    def test_generated_rows_follow_the_written_intent(self, resources: Resources) -> None:
        """The table's generated section is tests/policies/intent.py applied to every route."""
        text = TABLE.read_text(encoding="utf-8")
        section = text.split(GENERATED_MARKER, 1)[1].split("\n", 1)[1]
        assert [line for line in section.splitlines() if line] == intent.rows(resources)


class TestParseTable:
    def test_rejects_a_missing_header(self) -> None:
        """A table must start with the header row."""
        with pytest.raises(PolicySyntaxError, match="header"):
            parse_table("teacher,,GET,/,allow,allowed\n")

    def test_rejects_an_unknown_expectation(self) -> None:
        """expect is allow or deny, nothing else."""
        text = "roles,tenant,method,path,expect,reason\nteacher,,GET,/,maybe,allowed\n"
        with pytest.raises(PolicySyntaxError, match=":2:"):
            parse_table(text)

    def test_rejects_an_empty_table(self) -> None:
        """A table without rows would make every policy pass."""
        with pytest.raises(PolicySyntaxError, match="no test cases"):
            parse_table("roles,tenant,method,path,expect,reason\n# nothing\n")

    def test_decodes_control_character_escapes(self) -> None:
        """\\xNN in a path is the control character it names."""
        text = "roles,tenant,method,path,expect,reason\na+b,,GET,/x\\x0a,deny,invalid_request\n"
        (case,) = parse_table(text)
        assert case.path == "/x\n"
        assert case.roles == {"a", "b"}
        assert case.tenant is None

    def test_reports_a_failing_row_in_words(self, fast: FastEvaluator) -> None:
        """run_table names the line, the expectation and what the policy did instead."""
        text = "roles,tenant,method,path,expect,reason\nanonymous,,GET,/api/me,allow,allowed\n"
        (failure,) = run_table(fast, parse_table(text))
        assert failure.startswith("line 2: anonymous (no tenant) GET '/api/me'")
        assert "expected allow (allowed), got deny (no_matching_rule" in failure
