"""Retention's signed records: verify explains retention's deletions and minimisations."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import (
    MemorySink,
    OpenSearchStore,
    Record,
    RetentionRecorder,
    Scope,
    SQLiteStore,
    digest_store_beside,
)
from audit._chain import Keyring
from audit._verify import VerifyReport
from audit.events import new_event_id, parse_timestamp
from audit.processors import EMITTED_NS, audit_processors, render_json, run_chain
from retention import parse_rules
from retention._holds import HoldScope, new_hold
from retention._holdstore import HoldStore, OpenSearchHoldStore, SQLiteHoldStore
from retention._run import RetentionJob
from retention._runstore import SQLiteRunStore
from tests.audit.test_verify import Log, OpenSearchAdmin, SQLiteAdmin, write_log
from tools.opensearch_node import Node

RULES = {"access_denied": "30 days full detail, deleted after 365 days"}


@pytest.fixture(params=["opensearch", "sqlite"])
def log_and_holds(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Log, HoldStore]]:
    keys = Keyring(private=[Ed25519PrivateKey.generate()])
    if request.param == "opensearch":
        node: Node = request.getfixturevalue("opensearch_node")
        prefix: str = request.getfixturevalue("index_prefix")
        store = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
        holds: HoldStore = OpenSearchHoldStore(url=node.url, index_prefix=prefix, replicas=0)
        admin = OpenSearchAdmin(request.getfixturevalue("opensearch"), prefix)
        log = write_log(store, tmp_path / "spool", keys, admin)
    else:
        store = SQLiteStore(path=tmp_path / "audit.db")  # type: ignore[assignment]
        holds = SQLiteHoldStore(path=tmp_path / "audit.db")
        log = write_log(store, tmp_path / "spool", keys, SQLiteAdmin(tmp_path / "audit.db"))
    holds.ensure_schema()
    yield log, holds
    holds.close()
    store.close()


def run(log: Log, holds: HoldStore, days: int) -> str:
    """One retention run ``days`` from now; returns its run id (the report's and the records')."""
    recorder = RetentionRecorder(
        events=log.events, digests=log.digests, keyring=log.keys, rules=RULES
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = SQLiteRunStore(path=Path(tmp) / "runs.db")
        runs.ensure_schema()
        try:
            job = RetentionJob(
                events=log.events,
                holds=holds,
                rules=parse_rules([]),
                sink=MemorySink(),
                runs=runs,
                recorder=recorder,
            )
            report = job.run(now=datetime.now(UTC) + timedelta(days=days))
        finally:
            runs.close()
    assert recorder.run_id == report.run_id  # one run id in the records and the report
    return report.run_id


def statuses(report: VerifyReport) -> list[str]:
    return [interval.status for interval in report.intervals]


def hold_a_few(log: Log, holds: HoldStore) -> Sequence[str]:
    """Hold the second interval's two events (a window in ms) among six more unsigned
    events of the same day (no digest lists them): the held are a small share of the day,
    so OpenSearch moves them to ``-kept`` and drops the day whole. Returns the held ids."""
    held = log.ids[1]
    stamps = [
        parse_timestamp(str(d["@timestamp"])) for d in log.events.search(Scope(event_ids=held))
    ]
    since = min(stamps).replace(microsecond=min(stamps).microsecond // 1000 * 1000)
    until = max(stamps).replace(microsecond=max(stamps).microsecond // 1000 * 1000)
    # unsigned events of the same day (no digest lists them): the held are a small share
    [template] = log.events.search(Scope(event_ids=log.ids[0][:1]))
    extra = [{**template, "event.id": new_event_id()} for _ in range(6)]
    log.events.write([Record(e["event.id"], e["@timestamp"], orjson.dumps(e)) for e in extra])
    log.events.refresh()
    holds.add(
        new_hold(
            incident_id="INC-2",
            reason="investigation",
            scope=HoldScope(since=since, until=until + timedelta(milliseconds=1)),
            placed_by="iss|responder",
            placed_at=datetime.now(UTC) - timedelta(days=1),
        )
    )
    return held


KILLED = 37  # the exit status of a run killed at the crash point


class TestRetentionExplained:
    def test_minimisation_is_no_finding(self, log_and_holds: tuple[Log, HoldStore]) -> None:
        """After retention minimised every event, verify names the run and finds nothing."""
        log, holds = log_and_holds
        run(log, holds, days=40)
        report = log.verify()
        assert report.ok
        assert statuses(report) == ["removed_by_retention", "removed_by_retention", "intact"]
        [line] = report.intervals[0].retention
        assert "0 deleted, 3 minimised" in line and "rule access_denied (30 days" in line

    def test_deletion_is_no_finding(self, log_and_holds: tuple[Log, HoldStore]) -> None:
        """After retention minimised and later deleted everything, verify finds nothing."""
        log, holds = log_and_holds
        run(log, holds, days=40)
        run(log, holds, days=400)
        report = log.verify()
        assert report.ok, [i.text() for i in report.intervals]
        assert "2 deleted, 0 minimised" in report.intervals[1].retention[0]
        assert log.events.count(Scope()) == 0

    def test_held_events_are_not_recorded(self, log_and_holds: tuple[Log, HoldStore]) -> None:
        """A held event is neither deleted nor recorded; deleting it by hand is a finding."""
        log, holds = log_and_holds
        held = log.ids[0][0]
        hold = new_hold(
            incident_id="INC-1",
            reason="investigation",
            scope=HoldScope(user_ids=(), categories=("access_denied",)),
            placed_by="iss|responder",
            placed_at=datetime.now(UTC) - timedelta(days=1),
        )
        holds.add(hold)
        run(log, holds, days=400)
        assert log.verify().ok
        log.admin.delete_event(held)
        report = log.verify()
        assert statuses(report)[0] == "events_missing"
        assert report.intervals[0].findings[0].event_ids == (held,)

    def test_held_events_moved_to_kept_index_verify_clean(
        self, log_and_holds: tuple[Log, HoldStore]
    ) -> None:
        """Held events among many expired ones: OpenSearch moves them to the day's ``-kept``
        index and drops the day whole; verify finds them intact there and nothing missing,
        and deleting one there by hand is still a finding."""
        log, holds = log_and_holds
        held = hold_a_few(log, holds)
        run(log, holds, days=400)
        report = log.verify()
        assert report.ok, [i.text() for i in report.intervals]
        assert statuses(report)[:2] == ["removed_by_retention", "intact"]
        assert sorted(d["event.id"] for d in log.events.search(Scope())) == sorted(held)
        if isinstance(log.admin, OpenSearchAdmin):
            for event_id in held:
                index, _id = log.admin._where(
                    f"{log.admin.prefix}audit-events-*", "event.id", event_id
                )
                assert index.endswith("-kept")
        log.admin.delete_event(held[0])
        assert statuses(log.verify())[1] == "events_missing"

    @pytest.mark.parametrize("log_and_holds", ["opensearch"], indirect=True)
    def test_run_killed_mid_move_completed_by_the_next(
        self, log_and_holds: tuple[Log, HoldStore]
    ) -> None:
        """A run killed (no clean-up) between copying the held events to ``-kept`` and
        dropping their day leaves them twice; the next run undoes the move, does it again,
        and verify finds each event once and nothing missing."""
        log, holds = log_and_holds
        held = hold_a_few(log, holds)
        before = log.events.count(Scope())
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; it always leaves through os._exit
            try:
                copy = OpenSearchStore._copy

                def crash(
                    store: OpenSearchStore, index: str, query: Mapping[str, Any], target: str
                ) -> list[str]:
                    copy(store, index, query, target)
                    os._exit(KILLED)

                setattr(OpenSearchStore, "_copy", crash)  # noqa: B010 - in the child only
                run(log, holds, days=400)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == KILLED
        log.events.refresh()
        assert log.events.count(Scope()) == before + len(held)  # the crash point was reached
        run(log, holds, days=400)
        report = log.verify()
        assert report.ok, [i.text() for i in report.intervals]
        assert sorted(d["event.id"] for d in log.events.search(Scope())) == sorted(held)

    def test_edit_after_minimisation_is_a_finding(
        self, log_and_holds: tuple[Log, HoldStore]
    ) -> None:
        """A minimised event edited afterwards is altered, not explained by retention."""
        log, holds = log_and_holds
        run(log, holds, days=40)
        log.admin.edit_event(log.ids[1][1], "url.path", "/edited")
        report = log.verify()
        assert statuses(report)[1] == "events_altered"
        assert report.intervals[1].findings[0].event_ids == (log.ids[1][1],)

    def test_forged_retention_record_explains_nothing(
        self, log_and_holds: tuple[Log, HoldStore]
    ) -> None:
        """A deletion 'record' signed with another key is reported and excuses nothing."""
        log, _holds = log_and_holds
        gone = log.ids[0][2]
        foreign = Keyring(private=[Ed25519PrivateKey.generate()])
        forger = RetentionRecorder(
            events=log.events, digests=log.digests, keyring=foreign, rules=RULES
        )
        forger.begin(datetime.now(UTC))
        forger.apply(
            log.events.delete,
            Scope(event_ids=(gone,), until=datetime.now(UTC) + timedelta(days=1)),
            (),
        )
        report = log.verify()
        assert statuses(report)[0] == "events_missing"
        assert [f.kind for f in report.other] == ["signature_invalid"]


def late_event(log: Log) -> Record:
    """An event shipped late (a replayed old spool): as old as the log's own events."""
    oldest = min(str(doc["@timestamp"]) for doc in log.events.search(Scope(), size=100))
    emitted = parse_timestamp(oldest) - timedelta(milliseconds=1)
    event = {"event.action": "access_denied", EMITTED_NS: int(emitted.timestamp() * 1e9)}
    doc = run_chain(audit_processors(render=False), {**event, "source.ip": "192.0.2.200"})
    return Record(str(doc["event.id"]), str(doc["@timestamp"]), render_json(None, "", doc))


def recorded_ids(log: Log) -> set[str]:
    log.digests.refresh()
    return {e[0] for r in log.digests.records(kind="retention") for e in r["events.entries"]}


class LateArrival:
    """A recorder whose first listing is followed by a late event's arrival (a replayed old
    spool): exactly the moment between listing and changing."""

    def __init__(self, log: Log, **options: Any) -> None:
        self.log = log
        self.late = late_event(log)
        self.answers: list[str] = []
        self.recorder = RetentionRecorder(
            events=log.events, digests=log.digests, keyring=log.keys, rules=RULES, **options
        )
        listing = self.recorder._selected

        def selected(
            scope: Scope, exclude: Sequence[Scope], *, ids_only: bool = False
        ) -> list[dict[str, Any]]:
            found = listing(scope, exclude, ids_only=ids_only)
            if not self.answers:
                self.answers.append(log.events.write([self.late])[0].status)
                log.events.refresh()
            return found

        self.recorder._selected = selected  # type: ignore[method-assign]
        if isinstance(log.events, OpenSearchStore):  # a deletion first asks which days
            days = log.events.days

            def which_days(scope: Scope, *, exclude: Sequence[Scope] = ()) -> list[datetime]:
                found = days(scope, exclude=exclude)
                if not self.answers:
                    self.answers.append(log.events.write([self.late])[0].status)
                    log.events.refresh()
                return found

            setattr(log.events, "days", which_days)  # noqa: B010 - this store only
        self.recorder.begin(datetime.now(UTC))

    def apply(self, action: str, exclude: Sequence[Scope] = ()) -> int:
        until = datetime.now(UTC) + timedelta(days=1)
        change = getattr(self.log.events, action)
        return self.recorder.apply(
            change, Scope(categories=("access_denied",), until=until), exclude
        )

    def unrecorded_changes(self, before: set[str]) -> set[str]:
        """Events deleted or minimised that no retention record names."""
        self.log.events.refresh()
        now = {str(e["event.id"]): e for e in self.log.events.search(Scope(), size=100)}
        changed = {i for i in before | {self.late.event_id} if i not in now}
        changed |= {i for i, e in now.items() if e.get("audit.minimised")}
        return changed - recorded_ids(self.log)


class TestLateArrival:
    """An event arriving between the recorder's listing and the store's change is changed
    only with a record, or left for the next run."""

    def test_deletion_of_whole_days(self, log_and_holds: tuple[Log, HoldStore]) -> None:
        """Every event of the day selected: nothing is deleted without a record."""
        log, _holds = log_and_holds
        before = {event_id for ids in log.ids for event_id in ids}
        late = LateArrival(log)
        late.apply("delete")
        assert late.answers == ["stored"]
        assert late.unrecorded_changes(before) == set()
        assert before <= recorded_ids(log)
        assert log.verify().ok

    def test_deletion_of_part_of_a_day(self, log_and_holds: tuple[Log, HoldStore]) -> None:
        """One event held (the day is deleted by id): still nothing without a record, and
        the held event stays."""
        log, _holds = log_and_holds
        before = {event_id for ids in log.ids for event_id in ids}
        held = log.ids[0][0]
        late = LateArrival(log)
        late.apply("delete", exclude=[Scope(event_ids=(held,))])
        assert late.unrecorded_changes(before) == set()
        assert log.events.search(Scope(event_ids=(held,)))
        assert log.verify().ok

    def test_minimisation(self, log_and_holds: tuple[Log, HoldStore]) -> None:
        """Minimisation in chunks of two ids: the late event keeps its data."""
        log, _holds = log_and_holds
        before = {event_id for ids in log.ids for event_id in ids}
        late = LateArrival(log, max_ids=2)
        assert late.apply("minimise") == len(before)
        assert late.unrecorded_changes(before) == set()
        [kept] = log.events.search(Scope(event_ids=(late.late.event_id,)))
        assert kept["source.ip"] == "192.0.2.200"
        assert log.verify().ok


class CountingDigests:
    """A digest store that counts its writes (records in each) and refreshes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[int] = []
        self.refreshes = 0

    def ensure_schema(self) -> None:
        self.inner.ensure_schema()

    def write(self, records: Sequence[Record]) -> Any:
        self.writes.append(len(records))
        return self.inner.write(records)

    def refresh(self) -> None:
        self.refreshes += 1
        self.inner.refresh()


class TestRecordWrites:
    def test_records_of_one_change_written_and_refreshed_once(self, tmp_path: Path) -> None:
        """A change listed in several records (chunks) costs one digest write and one refresh."""
        store = SQLiteStore(path=tmp_path / "audit.db")
        counted = CountingDigests(digest_store_beside(store))
        recorder = RetentionRecorder(
            events=store,
            digests=counted,  # type: ignore[arg-type]
            keyring=Keyring(private=[Ed25519PrivateKey.generate()]),
            rules=RULES,
            chunk=2,
        )
        recorder.begin(datetime(2026, 1, 1, tzinfo=UTC))
        scope = Scope(categories=["access_denied"], until=datetime(2026, 1, 1, tzinfo=UTC))
        docs = [{"event.id": new_event_id()} for _ in range(5)]
        entries = recorder._record("delete", scope, docs)
        assert [e[0] for e in entries] == [d["event.id"] for d in docs]
        assert (counted.writes, counted.refreshes) == ([3], 1)
        store.close()
