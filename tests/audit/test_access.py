"""audit/_access.py: the personal-data access event expanded from its compact form."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import PersonalDataAccess, personal_data_access_event

STUDENTS: dict[str, Any] = {
    "audit.data_categories": ["contact", "education"],
    "labels": {"route_family": "students", "data_subjects": "student", "data_tenant": "school-a"},
}
FULL: PersonalDataAccess = (
    "GET",
    "Firefox",
    "req-1",
    "192.0.2.10",
    "/api/schools/school-a/students",
    "https://idp.example|t1",
    ("mentor", "teacher"),
    "school-a",
    "p, teacher, school-a, /api/schools/:tenant/students, GET",
    STUDENTS,
)
BARE: PersonalDataAccess = (None, None, "req-2", None, None, None, None, None, None, {})


class TestExpansion:
    def test_every_field_under_its_key_in_order(self) -> None:
        """A full compact access expands to every key, in the order the gateway built them."""
        event = personal_data_access_event(FULL)
        assert list(event.items()) == [
            ("event.kind", "event"),
            ("event.action", "personal_data_access"),
            ("event.category", ["web"]),
            ("event.type", ["access"]),
            ("event.outcome", "success"),
            ("http.request.method", "GET"),
            ("user_agent.original", "Firefox"),
            ("trace.id", "req-1"),
            ("source.ip", "192.0.2.10"),
            ("url.path", "/api/schools/school-a/students"),
            ("user.id", "https://idp.example|t1"),
            ("user.roles", ["mentor", "teacher"]),
            ("organization.id", "school-a"),
            ("rule.name", "p, teacher, school-a, /api/schools/:tenant/students, GET"),
            ("audit.data_categories", ["contact", "education"]),
            ("labels", STUDENTS["labels"]),
        ]

    def test_absent_fields_leave_no_key(self) -> None:
        """None leaves out the agent, address, path, identity and rule; method and trace stay."""
        assert personal_data_access_event(BARE) == {
            "event.kind": "event",
            "event.action": "personal_data_access",
            "event.category": ["web"],
            "event.type": ["access"],
            "event.outcome": "success",
            "http.request.method": None,
            "trace.id": "req-2",
        }

    def test_an_identity_without_user_id_or_tenant(self) -> None:
        """With roles, user.id is there even when None; organization.id only with a tenant."""
        fields: PersonalDataAccess = (*BARE[:6], ("platform_admin",), None, None, {})
        event = personal_data_access_event(fields)
        assert event["user.id"] is None
        assert event["user.roles"] == ["platform_admin"]
        assert "organization.id" not in event

    def test_a_tenant_without_roles_is_not_written(self) -> None:
        """No roles means no identity (anonymous): the tenant is not recorded either."""
        fields: PersonalDataAccess = (*BARE[:5], "someone", None, "school-a", None, {})
        event = personal_data_access_event(fields)
        assert "user.id" not in event and "organization.id" not in event

    def test_exposed_fields_win_in_place(self) -> None:
        """An exposed key that the event already has replaces the value where it stands."""
        event = personal_data_access_event((*FULL[:9], {"trace.id": "other", "extra": 1}))
        keys = list(event)
        assert event["trace.id"] == "other"
        assert keys.index("trace.id") == 7
        assert keys[-1] == "extra"

    def test_non_ascii_and_long_values_pass_unchanged(self) -> None:
        """The expansion neither cuts nor re-encodes: that was done when the fields were taken."""
        agent = "Mözilla/5.0 ☃ " + "x" * 600
        event = personal_data_access_event((FULL[0], agent, *FULL[2:]))
        assert event["user_agent.original"] == agent

    def test_events_share_no_list_with_the_fields(self) -> None:
        """The roles list is new per event, so changing one event changes no other."""
        first = personal_data_access_event(FULL)
        second = personal_data_access_event(FULL)
        first["user.roles"].append("intruder")
        first["event.category"].append("changed")
        assert second["user.roles"] == ["mentor", "teacher"]
        assert second["event.category"] == ["web"]

    def test_the_written_array_expands_to_the_same_event(self) -> None:
        """The JSON array the flusher writes expands to what the tuple expands to."""
        wire = orjson.loads(orjson.dumps(FULL))
        assert personal_data_access_event(wire) == personal_data_access_event(FULL)


class TestBadInput:
    @pytest.mark.parametrize(
        "fields",
        [
            [],
            list(FULL[:9]),
            [*FULL, "one too many"],
            [*FULL[:9], "not a mapping"],
            [*FULL[:9], None],
            [*FULL[:6], "teacher", *FULL[7:]],
            [*FULL[:6], {"teacher": 1}, *FULL[7:]],
        ],
        ids=["empty", "short", "long", "exposed str", "exposed none", "roles str", "roles dict"],
    )
    def test_refused_with_value_error(self, fields: list[Any]) -> None:
        """Anything but ten fields with a mapping last and a list of roles is refused."""
        with pytest.raises(ValueError, match="personal-data access"):
            personal_data_access_event(fields)


_text = st.one_of(st.none(), st.text(max_size=40))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_fields = st.tuples(
    _text,
    _text,
    st.text(max_size=40),
    _text,
    _text,
    _text,
    st.one_of(st.none(), st.lists(st.text(max_size=12), max_size=4).map(tuple)),
    _text,
    _text,
    st.dictionaries(st.text(max_size=24), _json, max_size=5),
)


class TestRoundTrip:
    @settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fields=_fields)
    def test_expanding_the_wire_form_equals_writing_the_event(
        self, fields: PersonalDataAccess
    ) -> None:
        """Expanded after the pipe (worker) or before it (old path): the same JSON bytes."""
        after = personal_data_access_event(orjson.loads(orjson.dumps(fields)))
        before = orjson.loads(orjson.dumps(personal_data_access_event(fields)))
        assert orjson.dumps(after) == orjson.dumps(before)
