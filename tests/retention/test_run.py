"""retention/_run.py: the retention job against both stores (SQLite and the real node)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from audit import MemorySink, Scope
from audit.events import Category
from retention import DEFAULT_RULES, parse_rules
from retention._holds import HoldScope, new_hold
from retention._run import RetentionJob
from tests.retention.conftest import NOW, Stores, record, write

DAY = timedelta(days=1)
FRESH, AGED, EXPIRED = 10 * DAY, 40 * DAY, 400 * DAY  # for the 30/365-day categories


def job(stores: Stores, sink: MemorySink, rules: list[str] | None = None) -> RetentionJob:
    return RetentionJob(
        events=stores.events,
        holds=stores.holds,
        rules=parse_rules(rules or []),
        sink=sink,
    )


def ids(stores: Stores) -> set[str]:
    stores.events.refresh()
    return {e["event.id"] for e in stores.events.search(Scope(), size=1000)}


def by_id(stores: Stores, event_id: str) -> dict[str, object]:
    [found] = stores.events.search(Scope(event_ids=(event_id,)))
    return found


def place(stores: Stores, **scope: object) -> str:
    hold = new_hold(
        incident_id="INC-7",
        reason="account takeover",
        scope=HoldScope(**scope),  # type: ignore[arg-type]
        placed_by="iss|responder",
        placed_at=NOW - DAY,
    )
    stores.holds.add(hold)
    return hold.hold_id


AGENT = {"source.ip": "192.0.2.77", "user_agent.original": "Mozilla/5.0"}


class TestUnheld:
    def test_expired_deleted_aged_minimised_fresh_untouched(
        self, stores: Stores, sink: MemorySink
    ) -> None:
        """Past retention goes, past full detail is minimised, younger stays whole."""
        fresh, aged, expired = (
            record(FRESH, **AGENT),
            record(AGED, **AGENT),
            record(EXPIRED, **AGENT),
        )
        write(stores.events, fresh, aged, expired)
        report = job(stores, sink).run(now=NOW)
        assert ids(stores) == {fresh.event_id, aged.event_id}
        minimised = by_id(stores, aged.event_id)
        assert minimised["source.ip"] == "192.0.2.0"
        assert "user_agent.original" not in minimised
        assert minimised["audit.minimised"] is True
        whole = by_id(stores, fresh.event_id)
        assert whole["source.ip"] == "192.0.2.77"
        assert whole["user_agent.original"] == "Mozilla/5.0"
        assert (report.deleted, report.minimised) == (1, 1)

    def test_periods_per_category(self, stores: Stores, sink: MemorySink) -> None:
        """Errors go after 90 days, authentication after 365, the backbone after 730."""
        error = record(100 * DAY, "upstream_error")
        login = record(100 * DAY, "login_failure")
        search = record(700 * DAY, "audit_search", **AGENT)
        old_search = record(731 * DAY, "audit_search")
        write(stores.events, error, login, search, old_search)
        job(stores, sink).run(now=NOW)
        assert ids(stores) == {login.event_id, search.event_id}
        assert by_id(stores, search.event_id)["source.ip"] == "192.0.2.77"  # kept whole

    def test_configured_rules_apply(self, stores: Stores, sink: MemorySink) -> None:
        """A configured period replaces the default."""
        error = record(20 * DAY, "upstream_error")
        write(stores.events, error)
        job(stores, sink, ["errors=5/15"]).run(now=NOW)
        assert ids(stores) == set()

    def test_now_drives_time(self, stores: Stores, sink: MemorySink) -> None:
        """The same events are kept at one run time and deleted at a later one."""
        event = record(300 * DAY)
        write(stores.events, event)
        job(stores, sink).run(now=NOW)
        assert ids(stores) == {event.event_id}
        job(stores, sink).run(now=NOW + 70 * DAY)
        assert ids(stores) == set()


class TestHeld:
    def test_held_event_survives_deletion_and_minimisation(
        self, stores: Stores, sink: MemorySink
    ) -> None:
        """What a hold covers is neither deleted nor minimised; the rest goes as usual."""
        held_old = record(EXPIRED, **{**AGENT, "user.id": "iss|mallory"})
        held_aged = record(AGED, **{**AGENT, "user.id": "iss|mallory"})
        other_old = record(EXPIRED, **{**AGENT, "user.id": "iss|alice"})
        other_aged = record(AGED, **{**AGENT, "user.id": "iss|alice"})
        write(stores.events, held_old, held_aged, other_old, other_aged)
        place(stores, user_ids=("iss|mallory",))
        report = job(stores, sink).run(now=NOW)
        assert ids(stores) == {held_old.event_id, held_aged.event_id, other_aged.event_id}
        for event_id in (held_old.event_id, held_aged.event_id):
            kept = by_id(stores, event_id)
            assert kept["source.ip"] == "192.0.2.77"
            assert kept["user_agent.original"] == "Mozilla/5.0"
        assert by_id(stores, other_aged.event_id)["source.ip"] == "192.0.2.0"
        [counts] = [c for c in report.categories if c.category is Category.ACCESS_DENIED]
        assert (counts.deleted, counts.held_from_deletion) == (1, 1)
        assert (counts.minimised, counts.held_from_minimisation) == (1, 1)

    def test_cidr_hold(self, stores: Stores, sink: MemorySink) -> None:
        """A hold on a network keeps the events from addresses inside it."""
        inside = record(EXPIRED, **{"source.ip": "203.0.113.9"})
        outside = record(EXPIRED, **{"source.ip": "198.51.100.9"})
        write(stores.events, inside, outside)
        place(stores, source_ips=("203.0.113.0/24",))
        job(stores, sink).run(now=NOW)
        assert ids(stores) == {inside.event_id}

    def test_release_lets_retention_apply_next_run(self, stores: Stores, sink: MemorySink) -> None:
        """After release the next run deletes and minimises what the hold kept."""
        old = record(EXPIRED, **{"organization.id": "school-a"})
        aged = record(AGED, **{**AGENT, "organization.id": "school-a"})
        write(stores.events, old, aged)
        hold_id = place(stores, organization_ids=("school-a",))
        job(stores, sink).run(now=NOW)
        assert ids(stores) == {old.event_id, aged.event_id}
        stores.holds.release(hold_id, by="iss|responder", at=NOW, reason="closed")
        job(stores, sink).run(now=NOW)
        assert ids(stores) == {aged.event_id}
        assert by_id(stores, aged.event_id)["source.ip"] == "192.0.2.0"


class TestDryRun:
    def test_counts_without_changing(self, stores: Stores, sink: MemorySink) -> None:
        """A dry run reports what a real run then does, and changes nothing itself."""
        events = [
            record(EXPIRED),
            record(EXPIRED, **{"user.id": "iss|held"}),
            record(AGED, **AGENT),
            record(AGED, **{**AGENT, "user.id": "iss|held"}),
            record(FRESH),
        ]
        write(stores.events, *events)
        place(stores, user_ids=("iss|held",))
        before = stores.events.search(Scope(), size=100)
        dry = job(stores, sink).run(now=NOW, dry_run=True)
        assert stores.events.search(Scope(), size=100) == before
        real = job(stores, sink).run(now=NOW)
        assert dry.categories == real.categories
        assert (dry.deleted, dry.minimised) == (1, 1)


class TestAuditEvent:
    def test_run_emits_counts(self, stores: Stores, sink: MemorySink) -> None:
        """Each run emits retention_run with its counts per category."""
        write(stores.events, record(EXPIRED), record(AGED, **AGENT))
        job(stores, sink).run(now=NOW, dry_run=True)
        job(stores, sink).run(now=NOW)
        assert sink.actions() == ["retention_run", "retention_run"]
        dry, real = (e["labels"] for e in sink.events)
        assert dry["dry_run"] == "true"
        assert real["dry_run"] == "false"
        assert real["deleted_access_denied"] == "1"
        assert real["minimised_access_denied"] == "1"
        assert real["deleted_errors"] == "0"


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


def test_defaults_used_without_overrides() -> None:
    """parse_rules([]) is the default rule set (the job's input in these tests)."""
    assert parse_rules([]) == dict(DEFAULT_RULES)
