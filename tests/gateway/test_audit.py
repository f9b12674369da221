"""gateway/_audit.py: the personal-data event's fast path yields request_event's event."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway._audit import personal_data_event, request_event
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
    return request_event(
        scope,
        action="personal_data_access",
        category=["web"],
        event_type=["access"],
        outcome="success",
        **exposed,
    )


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
