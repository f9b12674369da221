"""PolicyStore: the policy in force, and reloads that swap whole or not at all."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from audit import MemorySink
from gateway.authz import AuthorizeStage
from gateway.types import Identity
from policies._reference import ReferenceAuthorizer
from policies._store import PolicyStore
from policies._table import load_table
from policies.errors import PolicyError
from tests.gateway._asgi import Recorder, call, http_scope, with_state
from tests.policies.conftest import MODEL, RESOURCES
from tests.policies.conftest import TABLE as SHIPPED_TABLE

POLICY = """\
p, everyone, all, /, GET, allow
p, everyone, all, /_gateway/audit/*, DELETE, deny
p, teacher, own, /api/schools/:tenant/students, GET, allow
g, teacher, everyone
g, anonymous, everyone
g, student, everyone
"""
TABLE = """\
roles,tenant,method,path,expect,reason
anonymous,,GET,/,allow,allowed
teacher,school-a,GET,/api/schools/school-a/students,allow,allowed
teacher,school-a,GET,/api/schools/school-b/students,deny,no_matching_rule
teacher,school-a,DELETE,/_gateway/audit/x,deny,explicit_deny
"""
GRANT = "p, teacher, own, /api/schools/:tenant/reports, GET, allow\n"
REPORTS: dict[str, Any] = {"roles": {"teacher"}, "tenant": "school-a", "method": "GET"}
REPORTS_PATH = "/api/schools/school-a/reports"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "model": tmp_path / "model.conf",
        "policy": tmp_path / "policy.csv",
        "resources": tmp_path / "resources.toml",
        "table": tmp_path / "policy_tests.csv",
    }
    paths["model"].write_text(MODEL.read_text(encoding="utf-8"), encoding="utf-8")
    paths["resources"].write_text(RESOURCES.read_text(encoding="utf-8"), encoding="utf-8")
    paths["policy"].write_text(POLICY, encoding="utf-8")
    paths["table"].write_text(TABLE, encoding="utf-8")
    return paths


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def store(files: dict[str, Path], sink: MemorySink) -> PolicyStore:
    return PolicyStore.from_files(
        files["model"],
        files["policy"],
        resources_path=files["resources"],
        table_path=files["table"],
        sink=sink,
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestMemoisedDecisions:
    def test_every_table_row_equals_pycasbin(self, reference: ReferenceAuthorizer) -> None:
        """For every row of the shipped policy table, the store's remembered decision (asked
        a second time) is pycasbin's: allowed, reason and deciding rule."""
        store = PolicyStore.from_files()
        cases = load_table(SHIPPED_TABLE)
        for case in cases:
            request: dict[str, Any] = {
                "roles": case.roles,
                "tenant": case.tenant,
                "method": case.method,
                "path": case.path,
            }
            first = store.decide(**request)
            remembered = store.decide(**request)
            assert remembered == reference.decide(**request), case.describe()
            assert remembered == first, case.describe()
        assert len(store.state.evaluator._cache) > len(cases) // 2

    def test_reload_replaces_remembered_decisions(
        self, store: PolicyStore, files: dict[str, Path]
    ) -> None:
        """A decision remembered before a reload that changes it is not answered after."""
        before = store.decide(**REPORTS, path=REPORTS_PATH)
        assert store.decide(**REPORTS, path=REPORTS_PATH) is before
        assert not before.allowed
        files["policy"].write_text(POLICY + GRANT, encoding="utf-8")
        assert store.reload() is True
        after = store.decide(**REPORTS, path=REPORTS_PATH)
        assert after.allowed
        assert after.rule == GRANT.strip()


class TestStart:
    def test_the_shipped_files_load_and_decide(self) -> None:
        """Without arguments the store serves the shipped policy."""
        store = PolicyStore.from_files()
        assert store.decide(roles={"anonymous"}, tenant=None, method="GET", path="/").allowed
        info = store.classify("GET", "/api/schools/school-a/students")
        assert info is not None and info.others_personal_data

    def test_a_broken_policy_at_start_up_raises(self, files: dict[str, Path]) -> None:
        """There is no old policy to keep at start-up, so the gateway must not start."""
        files["policy"].write_text("p, teacher\n", encoding="utf-8")
        with pytest.raises(PolicyError):
            PolicyStore.from_files(
                files["model"],
                files["policy"],
                resources_path=files["resources"],
                table_path=files["table"],
            )


class TestPersonalData:
    def test_names_categories_family_tenant_and_subject(self, store: PolicyStore) -> None:
        """A pupil's record gives the audit fields of a personal-data access event."""
        fields = store.personal_data("GET", "/api/schools/school-b/students/42")
        assert fields == {
            "audit.data_categories": ["a", "b"],
            "labels": {
                "route_family": "school_students",
                "data_subjects": "pupils",
                "data_tenant": "school-b",
            },
            "user.target.id": "42",
        }

    @pytest.mark.parametrize(
        ("method", "path"), [("GET", "/api/me"), ("GET", "/activities/3"), ("GET", "/nothing")]
    )
    def test_own_public_and_unknown_routes_give_nothing(
        self, store: PolicyStore, method: str, path: str
    ) -> None:
        """Only routes exposing someone else's personal data are recorded."""
        assert store.personal_data(method, path) is None


class TestReviewReport:
    def test_describes_the_policy_in_force(
        self, store: PolicyStore, files: dict[str, Path]
    ) -> None:
        """The report follows reloads: a new grant shows up in the matrix."""

        def teacher_on_reports() -> str:
            rows = list(csv.DictReader(io.StringIO(store.review_report()["matrix.csv"])))
            (row,) = [r for r in rows if r["route"] == "/api/schools/:tenant/reports"]
            return row["teacher"]

        assert teacher_on_reports() == "—"
        files["policy"].write_text(POLICY + GRANT, encoding="utf-8")
        store.reload()
        assert teacher_on_reports() == "own tenant"
        assert set(store.review_report()) == {
            "matrix.md",
            "matrix.csv",
            "matrix.html",
            "reach.md",
            "lint.txt",
        }


class TestGoodReload:
    def test_swaps_in_the_new_policy(self, store: PolicyStore, files: dict[str, Path]) -> None:
        """A grant added to the file is in force after reload, and its cache is fresh."""
        assert not store.decide(**REPORTS, path=REPORTS_PATH).allowed
        files["policy"].write_text(POLICY + GRANT, encoding="utf-8")
        assert store.reload() is True
        assert store.decide(**REPORTS, path=REPORTS_PATH).allowed

    def test_emits_reloaded_with_hashes_and_changes(
        self, store: PolicyStore, files: dict[str, Path], sink: MemorySink
    ) -> None:
        """policy_reloaded carries old and new hashes and the change in words."""
        old_sha = _sha(files["policy"])
        files["policy"].write_text(POLICY.replace("g, student, everyone\n", "") + GRANT, "utf-8")
        store.reload()
        (event,) = sink.events
        assert event["event.action"] == "policy_reloaded"
        assert event["event.outcome"] == "success"
        assert event["event.reason"] == "policy_changed"
        assert event["labels"]["policy_sha256"] == _sha(files["policy"])
        assert event["labels"]["previous_policy_sha256"] == old_sha
        assert (event["labels"]["rules_added"], event["labels"]["role_links_removed"]) == (1, 1)
        changes = event["labels"]["policy_changes"]
        assert "granted: teacher may GET /api/schools/:tenant/reports (own tenant only)" in changes
        assert "student no longer inherits the permissions of everyone" in changes
        assert event["event.type"] == ["change"]

    def test_a_changed_route_map_alone_takes_effect(
        self, store: PolicyStore, files: dict[str, Path], sink: MemorySink
    ) -> None:
        """A reload after only resources.toml changed swaps in the new route map."""
        path = "/api/schools/school-b/students/42"
        before = store.personal_data("GET", path)
        assert before is not None
        assert before["audit.data_categories"] == ["a", "b"]
        text = files["resources"].read_text(encoding="utf-8")
        old = 'description = "a school\'s pupils"\ncategories = ["a", "b"]'
        assert old in text
        files["resources"].write_text(
            text.replace(old, 'description = "a school\'s pupils"\ncategories = ["a", "b", "c"]'),
            encoding="utf-8",
        )
        assert store.reload() is True
        fields = store.personal_data("GET", path)
        assert fields is not None
        assert fields["audit.data_categories"] == ["a", "b", "c"]
        assert sink.events[-1]["event.reason"] == "policy_changed"

    def test_unchanged_files_keep_the_state(self, store: PolicyStore, sink: MemorySink) -> None:
        """Reloading the same bytes keeps the compiled state (and its cache) and says so."""
        before = store.state
        assert store.reload() is True
        assert store.state is before
        assert sink.events[0]["event.reason"] == "policy_unchanged"
        assert store.reloads_succeeded == 1


class TestFailedReload:
    @pytest.mark.parametrize(
        "case",
        [
            ("policy", POLICY + "p, teacher, all, /x\n", "policy_syntax_error"),
            ("policy", POLICY + "p, teacher, all, /x/*/y, GET, allow\n", "policy_invalid"),
            (
                "policy",
                POLICY + "p, teacher, all, /api/schools/:tenant/students, GET, allow\n",
                "policy_tests_failed",
            ),
            ("table", TABLE + "anonymous,,GET,/,deny,no_matching_rule\n", "policy_tests_failed"),
            ("model", "[matchers]\nm = true\n", "model_unsupported"),
            ("resources", "[families\n", "resources_invalid"),
        ],
    )
    def test_keeps_the_old_policy_and_emits_reload_failed(
        self,
        store: PolicyStore,
        files: dict[str, Path],
        sink: MemorySink,
        case: tuple[str, str, str],
    ) -> None:
        """Any broken file leaves the policy in force untouched and says why."""
        name, text, reason = case
        before = store.state
        files[name].write_text(text, encoding="utf-8")
        assert store.reload() is False
        assert store.state is before
        assert store.decide(roles={"anonymous"}, tenant=None, method="GET", path="/").allowed
        (event,) = sink.events
        assert event["event.action"] == "policy_reload_failed"
        assert event["event.outcome"] == "failure"
        assert event["event.type"] == ["error"]
        assert event["event.reason"] == reason
        assert event["labels"]["policy_sha256"] == before.source.policy_sha256
        assert store.reloads_failed == 1

    def test_a_risky_grant_the_table_misses_is_refused_by_lint(
        self, store: PolicyStore, files: dict[str, Path], sink: MemorySink
    ) -> None:
        """A cross-tenant grant no table row covers is still kept out: lint errors block."""
        risky = "p, teacher, all, /api/schools/:tenant/reports, GET, allow\n"
        files["policy"].write_text(POLICY + risky, encoding="utf-8")
        assert store.reload() is False
        assert sink.events[0]["event.reason"] == "policy_lint_failed"
        assert "cross_tenant_reach" in sink.events[0]["error.message"]

    def test_lint_blocking_can_be_switched_off(
        self, files: dict[str, Path], sink: MemorySink
    ) -> None:
        """lint_errors_block=False loads what the table accepts (for migrations; not default)."""
        files["policy"].write_text(
            POLICY + "p, teacher, all, /api/schools/:tenant/reports, GET, allow\n",
            encoding="utf-8",
        )
        store = PolicyStore.from_files(
            files["model"],
            files["policy"],
            resources_path=files["resources"],
            table_path=files["table"],
            sink=sink,
            lint_errors_block=False,
        )
        assert store.decide(**REPORTS, path="/api/schools/school-b/reports").allowed

    def test_a_missing_file_is_a_failed_reload(
        self, store: PolicyStore, files: dict[str, Path], sink: MemorySink
    ) -> None:
        """A policy file that disappears mid-deploy keeps the old policy."""
        files["policy"].unlink()
        assert store.reload() is False
        assert sink.events[0]["event.reason"] == "policy_syntax_error"
        assert "policy.csv: cannot be read" in sink.events[0]["error.message"]

    def test_failing_tests_are_named_in_the_event(
        self, store: PolicyStore, files: dict[str, Path], sink: MemorySink
    ) -> None:
        """The error message names the table line that failed."""
        files["policy"].write_text(POLICY.replace("p, everyone, all, /, GET, allow\n", ""), "utf-8")
        store.reload()
        assert "line 2: anonymous (no tenant) GET '/'" in sink.events[0]["error.message"]


class TestConcurrency:
    def test_decisions_during_reloads_are_old_or_new(
        self, store: PolicyStore, files: dict[str, Path]
    ) -> None:
        """Deciding while another thread reloads never fails and sees one policy or the other."""
        seen: set[bool] = set()
        errors: list[BaseException] = []
        stop = threading.Event()

        def decide() -> None:
            try:
                while not stop.is_set():
                    seen.add(store.decide(**REPORTS, path=REPORTS_PATH).allowed)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        worker = threading.Thread(target=decide)
        worker.start()
        for n in range(10):
            text = POLICY + (GRANT if n % 2 == 0 else "")
            files["policy"].write_text(text, encoding="utf-8")
            assert store.reload()
        stop.set()
        worker.join(timeout=10)
        assert errors == []
        assert seen <= {True, False}
        assert store.reloads_succeeded == 10


TEACHER = Identity(
    issuer="https://idp.example",
    subject="t1",
    roles=frozenset({"teacher"}),
    tenant="school-a",
    method="session",
)
OFFICER = Identity(
    issuer="https://idp.example",
    subject="s1",
    roles=frozenset({"security_officer"}),
    tenant=None,
    method="session",
)


class TestInTheAuthorizeStage:
    """The shipped policy behind the gateway's authorize stage (gateway/authz.py)."""

    @pytest.fixture
    def shipped_store(self) -> PolicyStore:
        return PolicyStore.from_files()

    async def test_an_allowed_read_of_pupils_is_a_personal_data_event(
        self, shipped_store: PolicyStore
    ) -> None:
        """A teacher reading a pupil of their own school passes, and the read is recorded."""
        inner, sink = Recorder(), MemorySink()
        stage = AuthorizeStage(
            inner, authorizer=shipped_store, sink=sink, personal_data=shipped_store.personal_data
        )
        path = "/api/schools/school-a/students/42"
        result = await call(stage, with_state(http_scope(path), path=path, identity=TEACHER))
        assert result.status == 200 and inner.called
        (event,) = sink.events
        assert event["event.action"] == "personal_data_access"
        assert event["audit.data_categories"] == ["a", "b"]
        assert event["user.target.id"] == "42"
        assert (
            event["rule.name"] == "p, teacher, own, /api/schools/:tenant/students/:id, GET, allow"
        )

    async def test_another_schools_pupils_are_refused(self, shipped_store: PolicyStore) -> None:
        """Cross-tenant: 403 and an access_denied event, no rule named."""
        inner, sink = Recorder(), MemorySink()
        stage = AuthorizeStage(inner, authorizer=shipped_store, sink=sink)
        path = "/api/schools/school-b/students"
        result = await call(stage, with_state(http_scope(path), path=path, identity=TEACHER))
        assert result.status == 403 and not inner.called
        assert sink.events[0]["event.reason"] == "no_matching_rule"

    async def test_deleting_audit_events_is_an_explicit_deny(
        self, shipped_store: PolicyStore
    ) -> None:
        """Even the security officer is refused, and the event names the deny line."""
        sink = MemorySink()
        stage = AuthorizeStage(Recorder(), authorizer=shipped_store, sink=sink)
        path = "/_gateway/audit/abc"
        scope = with_state(http_scope(path, method="DELETE"), path=path, identity=OFFICER)
        result = await call(stage, scope)
        assert result.status == 403
        assert sink.events[0]["event.reason"] == "explicit_deny"
        assert sink.events[0]["rule.name"] == "p, everyone, all, /_gateway/audit/*, DELETE, deny"


class TestLogging:
    def test_a_refused_reload_is_logged_as_a_warning(
        self, store: PolicyStore, files: dict[str, Path], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Operators see the refusal and its reason in the log too."""
        files["policy"].write_text("p, broken\n", encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="policies._store"):
            store.reload()
        (record,) = caplog.records
        assert "policy reload refused (policy_syntax_error)" in record.getMessage()
