"""Benchmark: one retention run over daily indices, with holds, on the real node.

    python -m bench.retention [--store opensearch|sqlite] [--days N] [--aged-days N]
                              [--per-day N] [--holds N]

Issue #8 asks for 30 daily indices of 100,000 events and 5 holds in the local node, with the
run's wall time (goal: under 60 s) and the counts it reports. The data set:

* ``--days`` daily indices past the 365-day retention of ``access_denied``; hold ``k`` keeps one
  user's events on day ``k``, so ``--holds`` days keep a remainder (their other events deleted
  by id: the store's "by query" path, a search then ``_bulk`` deletes) and the other days'
  indices are dropped whole;
* ``--aged-days`` daily indices past the 30 days of full detail but within retention: their
  events are minimised (each document re-indexed with the address truncated, the user agent
  removed), except what a hold keeps.

Printed, all from the same run: the load time (not part of the run); the dry run (planning
only); the real run; then per kind of step (whole-index deletes, deletes by id, minimisation)
the steps, events, seconds and microseconds per event, with the ratio of each kind's cost per
event to the whole-index deletes' (the baseline); then the run's own report. Afterwards every
held event is counted again to check that all survived. Uses the node at OPENSEARCH_URL, or
starts one (tools/opensearch_node.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditStore, MemorySink, OpenSearchStore, Record, Scope, SQLiteStore
from audit.processors import EMITTED_NS, audit_processors, run_chain
from retention import parse_rules
from retention._holds import HoldScope, new_hold
from retention._holdstore import HoldStore, OpenSearchHoldStore, SQLiteHoldStore
from retention._run import Plan, RetentionJob, Step
from retention._runstore import OpenSearchRunStore, RunStore, SQLiteRunStore
from tools.opensearch_node import available_node

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
FIRST_EXPIRED = NOW - timedelta(days=400)
FIRST_AGED = NOW - timedelta(days=60)
USERS = 500
BATCH = 5000
LOADERS = 2
CHAIN = audit_processors(render=False)


def _template() -> dict[str, Any]:
    """One event as the pipeline renders it; the loader varies id, time and subject."""
    doc: dict[str, Any] = run_chain(
        CHAIN,
        {
            "event.action": "access_denied",
            "event.outcome": "failure",
            "user.id": "https://idp.example|user-0",
            "organization.id": "school-0",
            "source.ip": "192.0.2.1",
            "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0)",
            "url.path": "/api/schools/school-b/students/0",
            EMITTED_NS: int(NOW.timestamp() * 1e9),
        },
    )
    return doc


def _records(first: datetime, day: int, per_day: int, base: dict[str, Any]) -> Iterator[Record]:
    start = (first + timedelta(days=day)).replace(hour=0, minute=0, second=0, microsecond=0)
    for seq in range(per_day):
        moment = start + timedelta(microseconds=seq * (86_400_000_000 // per_day))
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        doc = dict(base)
        doc["event.id"] = str(uuid.uuid4())
        doc["@timestamp"] = stamp
        doc["user.id"] = f"https://idp.example|user-{seq % USERS}"
        doc["organization.id"] = f"school-{seq % 40}"
        doc["source.ip"] = f"192.0.2.{seq % 250}"
        doc["url.path"] = f"/api/schools/school-b/students/{seq}"
        yield Record(doc["event.id"], stamp, orjson.dumps(doc))


def load(store: AuditStore, days: list[tuple[datetime, int]], per_day: int) -> None:
    """Write every day's events in batches, ``LOADERS`` threads at a time."""
    base = _template()
    work = list(days)
    lock = threading.Lock()
    failed: list[str] = []

    def loader() -> None:
        while True:
            with lock:
                if not work or failed:
                    return
                first, day = work.pop(0)
            batch: list[Record] = []
            for rec in _records(first, day, per_day, base):
                batch.append(rec)
                if len(batch) == BATCH:
                    _write(store, batch, failed)
                    batch = []
            _write(store, batch, failed)

    threads = [threading.Thread(target=loader) for _ in range(LOADERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise SystemExit(f"loading failed: {failed[0]}")
    store.refresh()


def _write(store: AuditStore, batch: list[Record], failed: list[str]) -> None:
    if batch:
        bad = [r for r in store.write(batch) if r.status != "stored"]
        if bad:
            failed.append(f"{bad[0].status}: {bad[0].reason}")


def place_holds(holds: HoldStore, count: int) -> list[Scope]:
    """Hold ``k``: one user's events on expired day ``k`` (a remainder to delete by id)."""
    scopes = []
    for k in range(count):
        since = (FIRST_EXPIRED + timedelta(days=k)).replace(hour=0, minute=0, second=0)
        hold = new_hold(
            incident_id=f"BENCH-{k}",
            reason="benchmark",
            scope=HoldScope(
                user_ids=(f"https://idp.example|user-{k}",),
                since=since,
                until=since + timedelta(days=1),
            ),
            placed_by="bench",
            placed_at=NOW,
        )
        holds.add(hold)
        scopes.append(hold.audit_scope())
    return scopes


@contextmanager
def stores(kind: str) -> Iterator[tuple[AuditStore, HoldStore, RunStore]]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "audit.db"
            made = (SQLiteStore(path=path), SQLiteHoldStore(path=path), SQLiteRunStore(path=path))
            try:
                yield made
            finally:
                for store in made:
                    store.close()
        return
    with available_node() as node:
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        events = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
        holds = OpenSearchHoldStore(url=node.url, index_prefix=prefix, replicas=0)
        runs = OpenSearchRunStore(url=node.url, index_prefix=prefix, replicas=0)
        try:
            yield events, holds, runs
        finally:
            runs.close()
            holds.close()
            events.close()
            from opensearchpy import OpenSearch  # noqa: PLC0415 - only for clean-up

            client = OpenSearch(hosts=[node.url])
            client.indices.delete(index=f"{prefix}*", expand_wildcards="all")
            client.indices.delete_index_template(name=f"{prefix}*", ignore=404)
            client.close()


class StepTimer:
    """Seconds per executed step (from the end of the plan or the previous step)."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()
        self.steps: list[tuple[Step, int, float]] = []

    def planned(self, _plan: Plan) -> None:
        self.mark = time.perf_counter()

    def stepped(self, step: Step, changed: int) -> None:
        now = time.perf_counter()
        self.steps.append((step, changed, now - self.mark))
        self.mark = now


def kind_of(step: Step) -> str:
    if step.action == "minimise":
        return "minimisation"
    return "deletes by id" if step.held else "whole-index deletes"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["opensearch", "sqlite"], default="opensearch")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--aged-days", type=int, default=3)
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--holds", type=int, default=5)
    args = parser.parse_args()
    if args.holds > args.days:
        parser.error("--holds: at most one hold per expired day")
    with stores(args.store) as (events, holds, runs):
        for store in (events, holds, runs):
            store.ensure_schema()
        days = [(FIRST_EXPIRED, d) for d in range(args.days)]
        days += [(FIRST_AGED, d) for d in range(args.aged_days)]
        began = time.perf_counter()
        load(events, days, args.per_day)
        loaded = time.perf_counter() - began
        scopes = place_holds(holds, args.holds)
        held = sum(events.count(scope) for scope in scopes)
        timer = StepTimer()
        job = RetentionJob(
            events=events,
            holds=holds,
            rules=parse_rules([]),
            sink=MemorySink(),
            runs=runs,
            after_plan=timer.planned,
            after_step=timer.stepped,
        )
        began = time.perf_counter()
        dry = job.run(now=NOW, dry_run=True)
        dry_s = time.perf_counter() - began
        timer.steps.clear()
        began = time.perf_counter()
        report = job.run(now=NOW)
        run_s = time.perf_counter() - began
        survived = sum(events.count(scope) for scope in scopes)
        total = len(days) * args.per_day
        print(
            f"store {args.store}: {args.days} expired + {args.aged_days} aged daily indices"
            f" x {args.per_day:,} events = {total:,}; {args.holds} holds"
        )
        print(f"load {loaded:.1f} s ({total / loaded:,.0f} events/s; not part of the run)")
        print(f"dry run (plan only) {dry_s:.2f} s")
        print(f"run {run_s:.2f} s (goal < 60 s)")
        print()
        print(f"{'step kind':<22} {'steps':>6} {'events':>10} {'seconds':>9} {'us/event':>9} ratio")
        per_event: dict[str, float] = {}
        rows = []
        for kind in ("whole-index deletes", "deletes by id", "minimisation"):
            mine = [(s, c, t) for s, c, t in timer.steps if kind_of(s) == kind]
            changed = sum(c for _, c, _ in mine)
            seconds = sum(t for _, _, t in mine)
            per_event[kind] = seconds / changed * 1e6 if changed else 0.0
            rows.append((kind, len(mine), changed, seconds))
        base = per_event["whole-index deletes"]
        for kind, steps, changed, seconds in rows:
            ratio = f"{per_event[kind] / base:.1f}x" if base and changed else "-"
            print(
                f"{kind:<22} {steps:>6} {changed:>10,} {seconds:>9.2f}"
                f" {per_event[kind]:>9.1f} {ratio}"
            )
        print()
        print(f"held events {held}, after the run {survived}")
        print(f"dry run would delete {dry.deleted:,} and minimise {dry.minimised:,}")
        print(report.text())
        ok = survived == held and dry.deleted == report.deleted
        return 0 if ok and dry.minimised == report.minimised else 1


if __name__ == "__main__":
    raise SystemExit(main())
