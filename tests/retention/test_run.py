"""retention/_run.py: the retention job against both stores (SQLite and the real node)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit import MemorySink, OpenSearchStore, Record, Scope
from audit.events import Category
from retention import DEFAULT_RULES, LockLost, RunLocked, parse_rules
from retention._holds import HoldScope, new_hold
from retention._run import DEFAULT_LEASE, Plan, RetentionJob, RunReport, Step
from tests.retention.conftest import NOW, Stores, close, make_stores, record, write

DAY = timedelta(days=1)
FRESH, AGED, EXPIRED = 10 * DAY, 40 * DAY, 400 * DAY  # for the 30/365-day categories


def job(
    stores: Stores, sink: MemorySink, rules: list[str] | None = None, **options: Any
) -> RetentionJob:
    return RetentionJob(
        events=stores.events,
        holds=stores.holds,
        rules=parse_rules(rules or []),
        sink=sink,
        runs=stores.runs,
        **options,
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


def child_store(stores: Stores, request: pytest.FixtureRequest, path: Path) -> tuple[str, str]:
    """How a child process reaches the same stores: ``sqlite PATH`` or ``opensearch URL,PREFIX``."""
    if isinstance(stores.events, OpenSearchStore):
        url = request.getfixturevalue("opensearch_node").url
        return "opensearch", f"{url},{stores.events.index_prefix}"
    return "sqlite", str(path)


def spread(days: int, per_day: int, age: timedelta, **fields: Any) -> list[Record]:
    """``per_day`` events on each of ``days`` consecutive days, the newest ``age`` old."""
    return [
        record(age + d * DAY, **{**fields, "user.id": f"iss|u{n}"})
        for d in range(days)
        for n in range(per_day)
    ]


class TestLock:
    def test_second_run_refused_while_first_runs(self, stores: Stores, sink: MemorySink) -> None:
        """While one run holds the lock another is refused; once it ends the lock is free."""
        write(stores.events, *spread(3, 2, EXPIRED))
        inside, proceed = threading.Event(), threading.Event()
        outcome: list[object] = []

        def pause(_step: Step, _changed: int) -> None:
            inside.set()
            proceed.wait(30)

        first = job(stores, sink, after_step=pause)
        runner = threading.Thread(target=lambda: outcome.append(first.run(now=NOW)))
        runner.start()
        assert inside.wait(30)
        with pytest.raises(RunLocked, match="holds the retention run lock"):
            job(stores, sink, owner="second").run(now=NOW)
        proceed.set()
        runner.join()
        [report] = outcome
        assert isinstance(report, RunReport)
        assert report.deleted == 6
        assert stores.runs.holder() is None
        assert job(stores, sink, owner="second").run(now=NOW).deleted == 0

    def test_lost_lease_stops_before_next_step(self, stores: Stores, sink: MemorySink) -> None:
        """When the lease cannot be renewed in time, the run stops before its next step, and
        the next run finishes the work."""
        write(stores.events, *spread(3, 1, EXPIRED))
        clock = [datetime.now(UTC)]

        def stall(_step: Step, _changed: int) -> None:
            clock[0] += DEFAULT_LEASE  # as if renewals failed for a whole lease

        stalled = job(stores, sink, clock=lambda: clock[0], after_step=stall)
        with pytest.raises(LockLost):
            stalled.run(now=NOW)
        assert len(ids(stores)) == 2
        later = job(stores, sink, clock=lambda: clock[0] + 2 * DEFAULT_LEASE)
        report = later.run(now=NOW)
        assert ids(stores) == set()
        assert len(report.completes) == 1

    def test_stop_between_steps(self, stores: Stores, sink: MemorySink) -> None:
        """A stop request ends the run after the current step; the report says so."""
        write(stores.events, *spread(3, 1, EXPIRED))
        stop = threading.Event()
        report = job(stores, sink, after_step=lambda _s, _c: stop.set()).run(now=NOW, stop=stop)
        assert (report.complete, report.deleted) == (False, 1)
        assert stores.runs.runs()[-1].state == "stopped"
        assert sink.events[-1]["labels"]["complete"] == "false"
        assert job(stores, sink).run(now=NOW).deleted == 2


class TestInterrupted:
    def test_killed_run_is_completed_by_the_next(
        self, stores: Stores, sink: MemorySink, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """A run killed (SIGKILL) after two of its steps leaves its lock and a half-done
        store; once the lease has expired the next run takes over and the end state is what
        one whole run gives."""
        expired = spread(4, 2, EXPIRED)
        aged = spread(2, 2, AGED, **AGENT)
        held = record(EXPIRED, **{"user.id": "iss|mallory"})
        write(stores.events, *expired, *aged, held)
        place(stores, user_ids=("iss|mallory",))
        kind, where = child_store(stores, request, tmp_path / "audit.db")
        child = subprocess.run(
            [sys.executable, "-m", "tests.retention._child", kind, where, NOW.isoformat(), "2"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr
        assert len(child.stdout.splitlines()) == 2
        left = ids(stores)
        assert held.event_id in left
        assert 0 < len(left & {r.event_id for r in expired}) < len(expired)  # half done
        assert stores.runs.holder() is not None  # the dead run's lock is still there
        with pytest.raises(RunLocked):
            job(stores, sink).run(now=NOW)
        later = datetime.now(UTC) + 2 * DEFAULT_LEASE
        report = job(stores, sink, clock=lambda: later).run(now=NOW)
        assert ids(stores) == {held.event_id} | {r.event_id for r in aged}
        for r in aged:
            assert by_id(stores, r.event_id)["source.ip"] == "192.0.2.0"
        assert by_id(stores, held.event_id)["user.id"] == "iss|mallory"
        [dead] = report.completes
        assert {r.run_id: r.state for r in stores.runs.runs()}[dead] == "interrupted"


class TestHoldDuringRun:
    def test_hold_placed_between_plan_and_execution(self, stores: Stores, sink: MemorySink) -> None:
        """A hold stored after the plan was made and before its steps run protects its
        events: the job sees the new hold before the first step and plans again."""
        events = spread(3, 2, EXPIRED)
        write(stores.events, *events)
        placed: list[str] = []

        def hold_now(_plan: Plan) -> None:
            if not placed:
                placed.append(place(stores, user_ids=("iss|u1",)))

        report = job(stores, sink, after_plan=hold_now).run(now=NOW)
        kept = {r.event_id for r in events if b'"iss|u1"' in r.document}
        assert len(kept) == 3
        assert ids(stores) == kept
        assert report.replans == 1
        assert report.active_holds == (placed[0],)
        [counts] = report.holds
        assert (counts.hold_id, counts.held_from_deletion) == (placed[0], 3)

    def test_hold_placed_after_a_step(self, stores: Stores, sink: MemorySink) -> None:
        """A hold stored while the run is between two steps protects its events in every
        later step."""
        events = spread(3, 2, EXPIRED)
        write(stores.events, *events)
        placed: list[str] = []

        def hold_after_first(_step: Step, _changed: int) -> None:
            if not placed:
                placed.append(place(stores, user_ids=("iss|u0",)))

        job(stores, sink, after_step=hold_after_first).run(now=NOW)
        # the first step (the oldest day) went before the hold; the other two days' u0 stay
        assert len(ids(stores)) == 2
        assert all(by_id(stores, i)["user.id"] == "iss|u0" for i in ids(stores))


class TestHoldMidStep:
    def test_hold_placed_as_the_store_call_begins(self, stores: Stores, sink: MemorySink) -> None:
        """A hold stored (from another thread) after the step read the holds, as its store
        call begins: the store's guard sees it before changing anything, the step stops,
        the job plans again, and the hold's events stay."""
        events = spread(1, 4, EXPIRED)
        write(stores.events, *events)
        real = stores.events.delete
        placed: list[str] = []

        def delete(scope: Scope, *, exclude: Any = (), guard: Any = None) -> int:
            if not placed:
                other = threading.Thread(
                    target=lambda: placed.append(place(stores, user_ids=("iss|u1",)))
                )
                other.start()
                other.join()
            return real(scope, exclude=exclude, guard=guard)

        stores.events.delete = delete  # type: ignore[method-assign]
        report = job(stores, sink).run(now=NOW)
        assert ids(stores) == {r.event_id for r in events if b'"iss|u1"' in r.document}
        assert report.replans == 1
        assert report.active_holds == (placed[0],)
        assert report.deleted == 3

    def test_hold_placed_between_two_requests_of_a_step(
        self, request: pytest.FixtureRequest, sink: MemorySink
    ) -> None:
        """OpenSearch, a step of several bulk requests: a hold stored after the first
        request (from another thread) stops the step before the next; its events stay."""
        node = request.getfixturevalue("opensearch_node")
        prefix = request.getfixturevalue("index_prefix")
        stores = make_stores("opensearch", Path("unused"), request)
        events = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0, batch=2)
        stores.events.close()
        stores.events = events
        try:
            # one day: six expired denials a second apart (u0 first), four backbone events
            # not yet due: the rest outnumbers half the selected, so deletes go by id
            expired = [
                record(EXPIRED - n * timedelta(seconds=1), **{"user.id": f"iss|u{n}"})
                for n in range(6)
            ]
            kept = [record(EXPIRED, "audit_search") for _ in range(4)]
            write(events, *expired, *kept)
            real = events._bulk_actions
            placed: list[str] = []

            def bulk(lines: list[bytes]) -> int:
                done = real(lines)
                if not placed:
                    other = threading.Thread(
                        target=lambda: placed.append(place(stores, user_ids=("iss|u3", "iss|u5")))
                    )
                    other.start()
                    other.join()
                return done

            events._bulk_actions = bulk  # type: ignore[method-assign]
            report = job(stores, sink).run(now=NOW)
            left = ids(stores)
            assert left == {r.event_id for r in kept} | {expired[3].event_id, expired[5].event_id}
            assert report.replans == 1
            assert report.deleted == 4  # u0, u1 in the first request; u2, u4 after the replan
        finally:
            close(stores)


class TestReport:
    def test_report_per_index_and_hold_is_stored(self, stores: Stores, sink: MemorySink) -> None:
        """The report counts per daily index, category and action, and per hold; it is
        stored in the run store and summed up in the retention_run event."""
        write(stores.events, *spread(2, 2, EXPIRED), *spread(1, 3, AGED, **AGENT))
        hold_id = place(stores, user_ids=("iss|u0",))
        report = job(stores, sink).run(now=NOW)
        day = (NOW - EXPIRED).strftime("%Y.%m.%d")
        older = (NOW - EXPIRED - DAY).strftime("%Y.%m.%d")
        aged_day = (NOW - AGED).strftime("%Y.%m.%d")
        assert [(i.index, i.category, i.action, i.changed, i.held) for i in report.indices] == [
            (f"audit-events-{older}", Category.ACCESS_DENIED, "delete", 1, 1),
            (f"audit-events-{day}", Category.ACCESS_DENIED, "delete", 1, 1),
            (f"audit-events-{aged_day}", Category.ACCESS_DENIED, "minimise", 2, 1),
        ]
        [held] = report.holds
        assert (held.hold_id, held.held_from_deletion, held.held_from_minimisation) == (
            hold_id,
            2,
            1,
        )
        stored = stores.runs.runs()[-1]
        assert (stored.run_id, stored.state) == (report.run_id, "finished")
        assert stored.report == report.to_json()
        labels = sink.events[-1]["labels"]
        assert labels["run_id"] == report.run_id
        assert labels[f"held_by_{hold_id}"] == "3"
        text = report.text()
        assert f"audit-events-{older}" in text
        assert hold_id in text

    def test_hold_counts_follow_category_and_window(self, stores: Stores, sink: MemorySink) -> None:
        """A hold's count takes only the events its categories and time window cover."""
        inside = record(100 * DAY, "upstream_error")
        before = record(120 * DAY, "upstream_error")
        other = record(EXPIRED, "access_denied")
        write(stores.events, inside, before, other)
        hold_id = place(
            stores,
            categories=("errors",),
            since=NOW - 110 * DAY,
            until=NOW - 90 * DAY,
        )
        report = job(stores, sink).run(now=NOW)
        [held] = report.holds
        assert (held.hold_id, held.held_from_deletion, held.held_from_minimisation) == (
            hold_id,
            1,
            0,
        )
        assert ids(stores) == {inside.event_id}
