"""retention/_holds.py: the hold model, request validation, and which events a hold covers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit import Scope
from retention import HoldAlreadyReleased, InvalidHold
from retention._holds import Hold, HoldScope, covers, hold_from_request, new_hold

T0 = datetime(2027, 1, 10, tzinfo=UTC)


def hold(**scope: Any) -> Hold:
    return new_hold(
        incident_id="INC-1",
        reason="phishing wave",
        scope=HoldScope(**scope),
        placed_by="iss|responder",
        placed_at=T0,
    )


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "@timestamp": "2027-01-05T10:00:00.000000Z",
        "user.id": "iss|alice",
        "organization.id": "school-a",
        "audit.category": "authentication",
        "source.ip": "192.0.2.77",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


class TestCovers:
    @pytest.mark.parametrize(
        ("scope", "fields", "expected"),
        [
            ({"user_ids": ("iss|alice",)}, {}, True),
            ({"user_ids": ("iss|bob",)}, {}, False),
            ({"user_ids": ("iss|bob", "iss|alice")}, {}, True),
            ({"user_ids": ("iss|alice",)}, {"user.id": None}, False),
            ({"source_ips": ("192.0.2.0/24",)}, {}, True),
            ({"source_ips": ("192.0.2.77",)}, {}, True),
            ({"source_ips": ("198.51.100.0/24",)}, {}, False),
            ({"source_ips": ("2001:db8::/48",)}, {"source.ip": "2001:db8::5"}, True),
            ({"source_ips": ("2001:db8::/48",)}, {"source.ip": "2001:db9::5"}, False),
            ({"source_ips": ("192.0.2.0/24",)}, {"source.ip": None}, False),
            ({"organization_ids": ("school-a",)}, {}, True),
            ({"organization_ids": ("school-b",)}, {}, False),
            ({"categories": ("authentication",)}, {}, True),
            ({"categories": ("errors",)}, {}, False),
            ({"since": T0 - timedelta(days=6)}, {}, True),
            ({"since": T0 - timedelta(days=4)}, {}, False),
            ({"until": T0 - timedelta(days=4)}, {}, True),
            ({"until": T0 - timedelta(days=5, hours=14)}, {}, False),  # until is exclusive
            ({"since": T0 - timedelta(days=5, hours=14)}, {}, True),  # since is inclusive
            ({"user_ids": ("iss|alice",), "organization_ids": ("school-b",)}, {}, False),
            ({"user_ids": ("iss|alice",), "categories": ("authentication",)}, {}, True),
        ],
    )
    def test_table(self, scope: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
        """Every condition must hold; within a condition any value may match."""
        assert covers(hold(**scope), event(**fields)) is expected

    def test_released_hold_covers_nothing(self) -> None:
        """A released hold no longer protects anything."""
        placed = hold(user_ids=("iss|alice",))
        released = placed.released(by="iss|responder", at=T0, reason="closed")
        assert covers(placed, event())
        assert not covers(released, event())


class TestScope:
    def test_empty_scope_refused(self) -> None:
        """A hold must name at least one condition."""
        with pytest.raises(InvalidHold, match="at least one"):
            HoldScope()

    def test_bad_cidr_refused(self) -> None:
        """A source that is not an address or CIDR is refused, naming it."""
        with pytest.raises(InvalidHold, match=r"scope\.source_ips"):
            HoldScope(source_ips=("192.0.2.300/24",))

    def test_address_normalised_to_network(self) -> None:
        """Addresses become canonical networks (an address is a /32)."""
        assert HoldScope(source_ips=("192.0.2.7", "2001:DB8::/48")).source_ips == (
            "192.0.2.7/32",
            "2001:db8::/48",
        )

    def test_unknown_category_refused(self) -> None:
        """Only retention categories may be held."""
        with pytest.raises(InvalidHold, match="unknown category"):
            HoldScope(categories=("logins",))

    def test_window_must_be_ordered(self) -> None:
        """since must come before until."""
        with pytest.raises(InvalidHold, match="since must be before until"):
            HoldScope(since=T0, until=T0)

    def test_audit_scope_carries_every_condition(self) -> None:
        """The store scope of a hold selects exactly what the hold names."""
        h = hold(
            user_ids=("u",),
            source_ips=("192.0.2.0/24",),
            organization_ids=("o",),
            categories=("errors",),
            since=T0,
            until=T0 + timedelta(days=1),
        )
        assert h.audit_scope() == Scope(
            user_ids=("u",),
            source_ips=("192.0.2.0/24",),
            organization_ids=("o",),
            categories=("errors",),
            since=T0,
            until=T0 + timedelta(days=1),
        )


class TestRequest:
    def test_valid_request(self) -> None:
        """A complete request becomes an active hold placed by the caller."""
        made = hold_from_request(
            {
                "incident_id": "INC-2027-01",
                "reason": "credential stuffing",
                "scope": {"source_ips": ["203.0.113.0/24"], "since": "2027-01-01T00:00:00Z"},
                "review_at": "2027-02-01T00:00:00+01:00",
            },
            placed_by="iss|responder",
            placed_at=T0,
        )
        assert made.active
        assert made.placed_by == "iss|responder"
        assert made.scope.since == datetime(2027, 1, 1, tzinfo=UTC)
        assert made.review_at == datetime(2027, 1, 31, 23, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ([], "expected a JSON object"),
            ({"reason": "r", "scope": {"user_ids": ["u"]}}, "incident_id"),
            ({"incident_id": "INC 1", "reason": "r", "scope": {"user_ids": ["u"]}}, "incident_id"),
            ({"incident_id": "I", "scope": {"user_ids": ["u"]}}, "reason"),
            ({"incident_id": "I", "reason": "  ", "scope": {"user_ids": ["u"]}}, "reason"),
            ({"incident_id": "I", "reason": "r"}, "scope: required"),
            ({"incident_id": "I", "reason": "r", "scope": {}}, "at least one"),
            ({"incident_id": "I", "reason": "r", "scope": {"user_ids": "u"}}, "list of strings"),
            ({"incident_id": "I", "reason": "r", "scope": {"users": ["u"]}}, "unknown keys"),
            ({"incident_id": "I", "reason": "r", "scope": {"since": "yesterday"}}, "scope.since"),
            (
                {"incident_id": "I", "reason": "r", "scope": {"since": "2027-01-01T00:00:00"}},
                "scope.since",
            ),
            (
                {
                    "incident_id": "I",
                    "reason": "r",
                    "scope": {"user_ids": ["u"]},
                    "review_at": "2026-01-01T00:00:00Z",
                },
                "review_at",
            ),
            ({"incident_id": "I", "reason": "r", "scope": {"user_ids": ["u"]}, "x": 1}, "unknown"),
            ({"incident_id": "I", "reason": "a\x1bb", "scope": {"user_ids": ["u"]}}, "control"),
        ],
    )
    def test_invalid_request_names_the_problem(self, body: Any, message: str) -> None:
        """A malformed request is refused with a message naming what is wrong."""
        with pytest.raises(InvalidHold, match=message):
            hold_from_request(body, placed_by="iss|responder", placed_at=T0)


class TestRelease:
    def test_release_records_who_when_why(self) -> None:
        """Releasing keeps the hold and adds who released it, when, and why."""
        released = hold(user_ids=("u",)).released(by="iss|r2", at=T0, reason="incident closed")
        assert not released.active
        assert (released.released_by, released.released_at, released.release_reason) == (
            "iss|r2",
            T0,
            "incident closed",
        )

    def test_second_release_refused(self) -> None:
        """A hold is released once."""
        released = hold(user_ids=("u",)).released(by="a", at=T0, reason="done")
        with pytest.raises(HoldAlreadyReleased):
            released.released(by="b", at=T0, reason="again")

    def test_json_round_trip(self) -> None:
        """A hold survives its stored form unchanged."""
        h = hold(user_ids=("u",), since=T0).released(by="a", at=T0, reason="done")
        assert Hold.from_json(h.to_json()) == h
