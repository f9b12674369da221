"""gateway/_audit.py: the personal-data event's fast paths yield request_event's event."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import (
    AuditWorker,
    MemorySink,
    PersonalDataAccess,
    SQLiteStore,
    WorkerSpec,
    personal_data_access_event,
)
from audit import Scope as StoreScope
from gateway._audit import (
    emit_personal_data,
    personal_data_event,
    personal_data_fields,
    request_event,
)
from gateway.types import ANONYMOUS, Decision, Identity, Scope
from tests.gateway._asgi import http_scope, with_state

TEACHER = Identity(
    issuer="https://idp.example",
    subject="t1",
    roles=frozenset({"teacher", "mentor"}),
    tenant="school-a",
    method="session",
    session_id="s1",
)
STAFF = Identity(
    issuer="https://idp.example",
    subject="p9",
    roles=frozenset({"platform_admin"}),
    tenant=None,
    method="bearer",
)
STUDENTS: dict[str, Any] = {
    "audit.data_categories": ["contact", "education"],
    "labels": {"route_family": "students", "data_subjects": "student", "data_tenant": "school-a"},
}
ONE_STUDENT: dict[str, Any] = {
    "audit.data_categories": ["education"],
    "labels": {"route_family": "student", "data_subjects": "student", "data_tenant": "school-b"},
    "user.target.id": "st-42",
}
ALLOWED = Decision(allowed=True, reason="allowed", rule="p, teacher, school-a, ...")


def _old(scope: Scope, exposed: dict[str, Any]) -> dict[str, Any]:
    """The old path: the event the authorize stage emitted whole before the compact form."""
    event = request_event(
        scope,
        action="personal_data_access",
        category=["web"],
        event_type=["access"],
        outcome="success",
    )
    event.update(exposed)
    return event


def _raw_agent(scope: Scope, agent: bytes) -> Scope:
    scope["headers"].append((b"user-agent", agent))
    return scope


def _scopes() -> list[tuple[str, Scope, dict[str, Any]]]:
    browser = http_scope("/api/schools/school-a/students", headers=[("User-Agent", "Firefox")])
    websocket = http_scope("/api/students/st-42/live", scope_type="websocket")
    return [
        (
            "teacher",
            with_state(browser, path=browser["path"], identity=TEACHER, decision=ALLOWED),
            STUDENTS,
        ),
        (
            "staff, no client ip",
            with_state(
                http_scope("/api/students/st-42", method="POST"),
                path="/api/students/st-42",
                identity=STAFF,
                client_ip=None,
                decision=ALLOWED,
            ),
            ONE_STUDENT,
        ),
        (
            "anonymous, no rule",
            with_state(
                http_scope("/x"),
                path="/x",
                identity=ANONYMOUS,
                decision=Decision(allowed=True, reason="public"),
            ),
            STUDENTS,
        ),
        ("websocket", with_state(websocket, path=websocket["path"], identity=TEACHER), ONE_STUDENT),
        ("no gateway state", http_scope("/api/x"), ONE_STUDENT),
        ("no identity, path or decision", with_state(http_scope("/y")), STUDENTS),
        (
            "non-ascii and non-utf-8 user agent",
            with_state(
                _raw_agent(http_scope("/z"), "Mözilla ☃".encode() + b" \xff\x00"),
                path="/z",
                identity=TEACHER,
                decision=ALLOWED,
            ),
            STUDENTS,
        ),
        (
            "user agent cut at 512",
            with_state(_raw_agent(http_scope("/z"), b"A" * 2000), path="/z", identity=STAFF),
            ONE_STUDENT,
        ),
        (
            "exposed fields overriding the event's",
            with_state(http_scope("/z"), path="/z", identity=TEACHER, decision=ALLOWED),
            {"trace.id": "overridden", "user.roles": [], "extra": {"deep": [1, None]}},
        ),
    ]


class TestPersonalDataEvent:
    @pytest.mark.parametrize(
        ("scope", "exposed"), [s[1:] for s in _scopes()], ids=[s[0] for s in _scopes()]
    )
    def test_same_event_as_request_event(self, scope: Scope, exposed: dict[str, Any]) -> None:
        """The same keys in the same order with the same values, so the same JSON bytes."""
        new = personal_data_event(scope, exposed)
        old = _old(scope, exposed)
        assert new == old
        assert list(new) == list(old)
        assert orjson.dumps(new) == orjson.dumps(old)

    def test_long_user_agent_is_cut(self) -> None:
        """The user agent is cut to 512 characters, as request_event cuts it."""
        scope = with_state(_raw_agent(http_scope("/z"), b"A" * 2000), path="/z")
        assert personal_data_event(scope, STUDENTS)["user_agent.original"] == "A" * 512

    def test_same_event_when_the_identity_is_seen_again(self) -> None:
        """The remembered identity fields are those of the identity in the scope."""
        _, scope, exposed = _scopes()[0]
        first = personal_data_event(scope, exposed)
        again = personal_data_event(scope, exposed)
        assert again == first == _old(scope, exposed)

    def test_events_share_no_list(self) -> None:
        """Two events never share a mutable value built here, so one's change is not the other's."""
        _, scope, exposed = _scopes()[0]
        first = personal_data_event(scope, exposed)
        second = personal_data_event(scope, exposed)
        for key in ("event.category", "event.type", "user.roles"):
            assert first[key] is not second[key]
        first["user.roles"].append("intruder")
        first["event.category"].append("changed")
        assert second["user.roles"] == ["mentor", "teacher"]
        assert second["event.category"] == ["web"]

    def test_a_new_identity_with_the_same_id_is_not_confused(self) -> None:
        """An identity object created after another was dropped gets its own fields."""
        for subject in ("a", "b", "c"):
            who = Identity(
                issuer="i",
                subject=subject,
                roles=frozenset({"r"}),
                tenant=subject,
                method="session",
            )
            scope = with_state(http_scope("/p"), path="/p", identity=who)
            event = personal_data_event(scope, STUDENTS)
            assert event["user.id"] == f"i|{subject}"
            assert event["organization.id"] == subject


class _FastSink(MemorySink):
    """A sink with the compact method: keeps the fields it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.accesses: list[PersonalDataAccess] = []

    def emit_personal_data(self, fields: PersonalDataAccess) -> None:
        self.accesses.append(fields)


class TestEmitPersonalData:
    @pytest.mark.parametrize(
        ("scope", "exposed"), [s[1:] for s in _scopes()], ids=[s[0] for s in _scopes()]
    )
    def test_a_plain_sink_gets_the_old_event(self, scope: Scope, exposed: dict[str, Any]) -> None:
        """A sink without emit_personal_data gets the event through emit, as before."""
        sink = MemorySink()
        emit_personal_data(sink, scope, exposed)
        assert sink.events == [_old(scope, exposed)]
        assert list(sink.events[0]) == list(_old(scope, exposed))

    @pytest.mark.parametrize(
        ("scope", "exposed"), [s[1:] for s in _scopes()[:-5]], ids=[s[0] for s in _scopes()[:-5]]
    )
    def test_a_fast_sink_gets_fields_that_expand_to_the_old_event(
        self, scope: Scope, exposed: dict[str, Any]
    ) -> None:
        """The compact fields, expanded after the pipe, are the old event byte for byte."""
        sink = _FastSink()
        emit_personal_data(sink, scope, exposed)
        (fields,) = sink.accesses
        assert sink.events == []
        wire = orjson.loads(orjson.dumps(fields))
        assert orjson.dumps(personal_data_access_event(wire)) == orjson.dumps(_old(scope, exposed))

    def test_a_fast_sink_without_gateway_state_gets_emit(self) -> None:
        """No gateway state (no request id): the event goes whole through emit."""
        sink = _FastSink()
        scope = http_scope("/api/x")
        emit_personal_data(sink, scope, ONE_STUDENT)
        assert sink.accesses == []
        assert sink.events == [_old(scope, ONE_STUDENT)]

    def test_fields_hold_what_the_request_holds(self) -> None:
        """The compact form's fields, one by one."""
        _, scope, exposed = _scopes()[0]
        assert personal_data_fields(scope, exposed) == (
            "GET",
            "Firefox",
            "test-request-id",
            "203.0.113.7",
            "/api/schools/school-a/students",
            "https://idp.example|t1",
            ("mentor", "teacher"),
            "school-a",
            "p, teacher, school-a, ...",
            STUDENTS,
        )

    def test_anonymous_fields_name_no_user(self) -> None:
        """An anonymous identity leaves user id, roles and tenant out."""
        _, scope, exposed = _scopes()[2]
        fields = personal_data_fields(scope, exposed)
        assert fields is not None
        assert fields[5:8] == (None, None, None)


_header_text = st.binary(max_size=700)
_maybe = st.one_of(st.none(), st.text(max_size=30))


@st.composite
def _requests(draw: st.DrawFn) -> tuple[Scope, dict[str, Any]]:
    scope = http_scope(
        draw(st.text(min_size=1, max_size=20).map(lambda p: "/" + p)),
        method=draw(st.sampled_from(["GET", "POST", "DELETE", "PATCH"])),
        scope_type=draw(st.sampled_from(["http", "websocket"])),
    )
    agent = draw(st.one_of(st.none(), _header_text))
    if agent is not None:
        scope["headers"].append((b"user-agent", agent))
    who = draw(
        st.one_of(
            st.none(),
            st.just(ANONYMOUS),
            st.builds(
                Identity,
                issuer=_maybe,
                subject=_maybe,
                roles=st.frozensets(st.text(max_size=10), max_size=4),
                tenant=_maybe,
                method=st.sampled_from(["session", "bearer"]),
            ),
        )
    )
    rule = draw(st.one_of(st.none(), st.text(max_size=40)))
    decision = draw(st.one_of(st.none(), st.just(Decision(True, "allowed", rule))))
    scope = with_state(
        scope,
        request_id=draw(st.text(max_size=36)),
        client_ip=draw(_maybe),
        path=draw(_maybe),
        identity=who,
        decision=decision,
    )
    exposed = draw(
        st.dictionaries(
            st.text(max_size=24),
            st.one_of(st.text(max_size=20), st.lists(st.text(max_size=8), max_size=3)),
            max_size=4,
        )
    )
    return scope, exposed


class TestProperties:
    @settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=_requests())
    def test_every_path_yields_the_old_event(self, request: tuple[Scope, dict[str, Any]]) -> None:
        """Whole, or compact and expanded after the pipe: the old event, byte for byte."""
        scope, exposed = request
        old = orjson.dumps(_old(scope, exposed))
        assert orjson.dumps(personal_data_event(scope, exposed)) == old
        sink = _FastSink()
        emit_personal_data(sink, scope, exposed)
        (fields,) = sink.accesses
        expanded = personal_data_access_event(orjson.loads(orjson.dumps(fields)))
        assert orjson.dumps(expanded) == orjson.dumps(orjson.loads(old))


def _stored(db: Path) -> list[dict[str, Any]]:
    store = SQLiteStore(path=db)
    store.ensure_schema()
    return store.search(StoreScope(), size=100)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[AuditWorker]:
    spec = WorkerSpec(
        "tests.audit._worker_factory:sqlite_pipeline",
        (str(tmp_path / "audit.db"), str(tmp_path / "spool")),
    )
    made = AuditWorker(spec=spec, close_timeout=30)
    made.open()
    try:
        yield made
    finally:
        made.close()


class TestStoredEvent:
    def test_stored_event_is_the_old_paths(
        self, worker: AuditWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Through a real worker to SQLite: the compact path stores what the old path stored
        (emitted at the same instant: same time stamp; only the random event id differs)."""
        scope = with_state(
            _raw_agent(http_scope("/api/schools/school-a/students"), "Mözilla ☃".encode()),
            path="/api/schools/school-a/students",
            identity=TEACHER,
            decision=ALLOWED,
        )
        instant = time.time_ns()
        with monkeypatch.context() as patched:
            patched.setattr(time, "time_ns", lambda: instant)
            worker.emit(_old(scope, {**STUDENTS, "labels": {**STUDENTS["labels"], "n": "old"}}))
            emit_personal_data(
                worker, scope, {**STUDENTS, "labels": {**STUDENTS["labels"], "n": "new"}}
            )
            emit_personal_data(worker, scope, MappingProxyType(ONE_STUDENT))
        assert worker.wait_idle(30)
        docs = {doc["labels"].get("n", "proxy"): doc for doc in _stored(tmp_path / "audit.db")}
        old, new = docs["old"], docs["new"]
        assert old.pop("event.id") != new.pop("event.id")
        assert old.pop("labels") == {**STUDENTS["labels"], "n": "old"}
        assert new.pop("labels") == {**STUDENTS["labels"], "n": "new"}
        assert list(new.items()) == list(old.items())
        assert "user_agent.original" in new  # latin-1 text, control characters escaped: as old
        assert docs["proxy"]["user.target.id"] == "st-42"
