"""Benchmark: one retention run over daily indices past retention, with holds.

    python bench/retention.py [--store opensearch|sqlite] [--days N] [--per-day N] [--holds N]

Issue #8 asks for 30 daily indices of 100,000 events and 5 holds in the local node, goal under
60 s. The events are all past the 365-day retention of ``access_denied``; hold ``k`` covers one
user on day ``k``, so ``holds`` days keep a remainder (deleted by id) and the other days' indices
are dropped whole (OpenSearch). Uses the node at OPENSEARCH_URL, or starts one
(tools/opensearch_node.py).

Printed: the load time (not part of the run), the dry run (counts only: the baseline), the real
run, the ratio run/dry run, and the run's report. Afterwards the held events are counted to
check that every one survived.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditStore, MemorySink, OpenSearchStore, Record, Scope, SQLiteStore
from audit.processors import EMITTED_NS, audit_processors, render_json, run_chain
from retention import parse_rules
from retention._holds import HoldScope, new_hold
from retention._holdstore import HoldStore, OpenSearchHoldStore, SQLiteHoldStore
from retention._run import RetentionJob
from tools.opensearch_node import available_node

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
FIRST_DAY = NOW - timedelta(days=400)
USERS = 500
BATCH = 5000
CHAIN = audit_processors(render=False)


def _record(day: int, seq: int) -> Record:
    moment = FIRST_DAY + timedelta(days=day, seconds=(seq * 7) % 86_000)
    doc = run_chain(
        CHAIN,
        {
            "event.action": "access_denied",
            "event.outcome": "failure",
            "user.id": f"https://idp.example|user-{seq % USERS}",
            "organization.id": f"school-{seq % 40}",
            "source.ip": f"192.0.2.{seq % 250}",
            "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0)",
            "url.path": f"/api/schools/school-b/students/{seq}",
            EMITTED_NS: int(moment.timestamp() * 1e9),
        },
    )
    return Record(doc["event.id"], doc["@timestamp"], render_json(None, "", doc))


def load(store: AuditStore, days: int, per_day: int) -> None:
    for day in range(days):
        batch: list[Record] = []
        for seq in range(per_day):
            batch.append(_record(day, seq))
            if len(batch) == BATCH:
                _write(store, batch)
                batch = []
        _write(store, batch)
    store.refresh()


def _write(store: AuditStore, batch: list[Record]) -> None:
    if batch and any(r.status != "stored" for r in store.write(batch)):
        raise SystemExit("loading failed: an event was not stored")


def place_holds(holds: HoldStore, count: int) -> list[Scope]:
    scopes = []
    for k in range(count):
        since = (FIRST_DAY + timedelta(days=k)).replace(hour=0, minute=0, second=0)
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
def stores(kind: str) -> Iterator[tuple[AuditStore, HoldStore]]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "audit.db"
            yield SQLiteStore(path=path), SQLiteHoldStore(path=path)
        return
    with available_node() as node:
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        events = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
        holds = OpenSearchHoldStore(url=node.url, index_prefix=prefix, replicas=0)
        try:
            yield events, holds
        finally:
            from opensearchpy import OpenSearch  # noqa: PLC0415 - only for clean-up

            client = OpenSearch(hosts=[node.url])
            client.indices.delete(index=f"{prefix}*", expand_wildcards="all")
            client.indices.delete_index_template(name=f"{prefix}*", ignore=404)
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["opensearch", "sqlite"], default="opensearch")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--holds", type=int, default=5)
    args = parser.parse_args()
    with stores(args.store) as (events, holds):
        events.ensure_schema()
        holds.ensure_schema()
        began = time.perf_counter()
        load(events, args.days, args.per_day)
        loaded = time.perf_counter() - began
        scopes = place_holds(holds, args.holds)
        held = sum(events.count(scope) for scope in scopes)
        job = RetentionJob(events=events, holds=holds, rules=parse_rules([]), sink=MemorySink())
        began = time.perf_counter()
        dry = job.run(now=NOW, dry_run=True)
        dry_s = time.perf_counter() - began
        began = time.perf_counter()
        report = job.run(now=NOW)
        run_s = time.perf_counter() - began
        survived = sum(events.count(scope) for scope in scopes)
        print(f"store {args.store}: {args.days} days x {args.per_day} events, {args.holds} holds")
        print(f"load {loaded:.1f} s (not part of the run)")
        print(f"dry run (baseline) {dry_s:.2f} s; run {run_s:.2f} s; run/dry {run_s / dry_s:.1f}x")
        print(f"held events {held}, after the run {survived}; dry run deleted {dry.deleted}")
        print(report.text())
        events.close()
        holds.close()
        return 0 if survived == held and dry.deleted == report.deleted else 1


if __name__ == "__main__":
    raise SystemExit(main())
