"""Benchmark: one retention run over daily indices, with holds, on the real node.

    python -m bench.retention [--store opensearch|sqlite] [--days N] [--aged-days N]
                              [--per-day N] [--holds N] [--keep] [--record]
                              [--compare-days N]

Issue #8 asks for 30 daily indices of 100,000 events and 5 holds in the local node, with the
run's wall time (goal: under 60 s) and the counts it reports. The data set:

* ``--days`` daily indices past the 365-day retention of ``access_denied``; hold ``k`` keeps one
  user's events on day ``k`` (1 in 500), so ``--holds`` days keep a remainder: the store copies
  it to the day's ``-kept`` index and drops the day whole (before, it deleted the other 99.8%
  by id); the other days' indices are dropped whole at once;
* ``--aged-days`` daily indices past the 30 days of full detail but within retention: their
  events are minimised (each document re-indexed with the address truncated, the user agent
  removed), except what a hold keeps. On OpenSearch the run minimises on the node
  (``_update_by_query`` with a painless script, audit/_minimise.py).

Minimisation paths (OpenSearch, ``--compare-days``, default 1): before the run, the first aged
days are cloned twice (under side prefixes the run does not touch); after it, one copy is
minimised the way it was before (every document read and put back whole from the client) and
the other on the node, alternating which goes first per day. Printed per path: events,
seconds, microseconds per event, and CPU microseconds per event of this process (the client)
and of the node (its process CPU from ``_nodes/stats``), with the ratio of each to the client
path. On a shared machine the CPU figures are the steadier ones: wall time includes waiting
for a core.

Printed, all from the same run: the load time (not part of the run); the dry run (planning
only); the real run; then per kind of step (whole-index deletes, days with held events,
minimisation) the steps, events, seconds and microseconds per event, with the ratio of each
kind's cost per event to the whole-index deletes' (the baseline); then the run's own report.
Afterwards every held event is counted again (and found in a ``-kept`` index) to check that
all survived. Uses the node at OPENSEARCH_URL, or starts one (tools/opensearch_node.py).

Loading writes through the store's own bulk ``create`` into indices created beforehand with
refresh off and an asynchronous translog (both reset before the run). ``--keep`` (OpenSearch
at OPENSEARCH_URL only) keeps the loaded indices under a prefix named after the data set's
shape, write-blocked, and clones them for each run (seconds instead of many minutes): for
tuning; the figures we report come from a run without it, loaded fresh. ``--record`` runs
with tamper evidence (#12): a :class:`RetentionRecorder` signs a record of every event each step
deletes or minimises before the step (what ``python -m retention run`` does when a signing key
is configured).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from audit import (
    AuditStore,
    Keyring,
    MemorySink,
    OpenSearchStore,
    Page,
    Record,
    RetentionRecorder,
    Scope,
    SQLiteStore,
    digest_store_beside,
)
from audit.events import index_name
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
BATCH = 10_000
LOADERS = 2
LOAD_SETTINGS = {"index.refresh_interval": "-1", "index.translog.durability": "async"}
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


def day_indices(prefix: str, days: list[tuple[datetime, int]]) -> list[str]:
    return [index_name(prefix, (first + timedelta(days=d)).isoformat()) for first, d in days]


def load(
    store: AuditStore,
    days: list[tuple[datetime, int]],
    per_day: int,
    client: OpenSearch | None = None,
) -> None:
    """Write every day's events in batches, ``LOADERS`` threads at a time (OpenSearch: into
    indices made beforehand with refresh off, reset afterwards)."""
    names: list[str] = []
    if client is not None and isinstance(store, OpenSearchStore):
        names = day_indices(store.index_prefix, days)
        for name in names:
            client.indices.create(index=name, body={"settings": LOAD_SETTINGS})
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
    if client is not None and names:
        client.indices.put_settings(
            index=",".join(names), body={key: None for key in LOAD_SETTINGS}
        )
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


@dataclass
class Stores:
    events: AuditStore
    holds: HoldStore
    runs: RunStore
    client: OpenSearch | None = None  # OpenSearch: for loading, cloning and checking


@contextmanager
def stores(kind: str) -> Iterator[Stores]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "audit.db"
            made = Stores(
                SQLiteStore(path=path), SQLiteHoldStore(path=path), SQLiteRunStore(path=path)
            )
            try:
                yield made
            finally:
                for store in (made.events, made.holds, made.runs):
                    store.close()
        return
    with available_node() as node:
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        client = OpenSearch(hosts=[node.url], timeout=600)
        made = Stores(
            OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0, timeout=600),
            OpenSearchHoldStore(url=node.url, index_prefix=prefix, replicas=0),
            OpenSearchRunStore(url=node.url, index_prefix=prefix, replicas=0),
            client,
        )
        try:
            yield made
        finally:
            for store in (made.runs, made.holds, made.events):
                store.close()
            client.indices.delete(index=f"{prefix}*", expand_wildcards="all")
            client.indices.delete_index_template(name=f"{prefix}*", ignore=404)
            client.close()


def load_kept(made: Stores, days: list[tuple[datetime, int]], per_day: int) -> str:
    """``--keep``: the data set under a prefix named after its shape, loaded once (write
    blocked afterwards), cloned into this run's indices; returns what it did."""
    client, events = made.client, made.events
    assert client is not None and isinstance(events, OpenSearchStore)
    shape = f"bench-keep-{len(days)}x{per_day}-{days[0][0]:%Y%m%d}-"
    sources = day_indices(shape, days)
    counts = client.count(index=",".join(sources), ignore_unavailable=True)["count"]
    how = "reused"
    if counts != len(days) * per_day or not all(client.indices.exists(index=i) for i in sources):
        client.indices.delete(index=f"{shape}*", ignore_unavailable=True)
        loader = OpenSearchStore(url=_url(client), index_prefix=shape, replicas=0, timeout=600)
        loader.ensure_schema()
        load(loader, days, per_day, client)
        loader.close()
        how = "loaded"
    client.indices.put_settings(index=f"{shape}*", body={"index.blocks.write": True})
    for source, target in zip(sources, day_indices(events.index_prefix, days), strict=True):
        client.indices.clone(
            index=source,
            target=target,
            body={"settings": {"index.blocks.write": None, "index.number_of_replicas": 0}},
        )
    client.cluster.health(index=f"{events.index_prefix}*", wait_for_status="green")
    events.refresh()
    return how


def _url(client: OpenSearch) -> str:
    host = client.transport.hosts[0]
    return f"http://{host['host']}:{host['port']}"


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


KINDS = ("whole-index deletes", "days with holds", "minimisation")


def kind_of(step: Step) -> str:
    """Whole-index deletes; days where holds keep a few (moved to ``-kept``, day dropped);
    minimisation."""
    if step.action == "minimise":
        return "minimisation"
    return "days with holds" if step.held else "whole-index deletes"


def kind_table(timer: StepTimer) -> list[str]:
    """Per kind of step: steps, events, seconds, microseconds per event, ratio to the
    whole-index deletes' microseconds per event."""
    lines = [f"{'step kind':<22} {'steps':>6} {'events':>10} {'seconds':>9} {'us/event':>9} ratio"]
    per_event: dict[str, float] = {}
    rows = []
    for kind in KINDS:
        mine = [(s, c, t) for s, c, t in timer.steps if kind_of(s) == kind]
        changed = sum(c for _, c, _ in mine)
        seconds = sum(t for _, _, t in mine)
        per_event[kind] = seconds / changed * 1e6 if changed else 0.0
        rows.append((kind, len(mine), changed, seconds))
    base = per_event["whole-index deletes"]
    for kind, steps, changed, seconds in rows:
        ratio = f"{per_event[kind] / base:.1f}x" if base and changed else "-"
        lines.append(
            f"{kind:<22} {steps:>6} {changed:>10,} {seconds:>9.2f} {per_event[kind]:>9.1f} {ratio}"
        )
    return lines


def kept_count(made: Stores) -> str:
    """Events in this run's ``-kept`` indices (OpenSearch), or ``-``."""
    if made.client is None or not isinstance(made.events, OpenSearchStore):
        return "-"
    indices = made.client.cat.indices(index=f"{made.events.index_prefix}*-kept", format="json")
    return str(sum(int(i["docs.count"]) for i in indices))


def clone_aged(made: Stores, aged: list[tuple[datetime, int]], side: str) -> OpenSearchStore:
    """A store under ``{prefix}{side}`` holding clones of the ``aged`` days as loaded."""
    client, events = made.client, made.events
    assert client is not None and isinstance(events, OpenSearchStore)
    store = OpenSearchStore(
        url=_url(client),
        index_prefix=f"{events.index_prefix}{side}",
        replicas=0,
        timeout=600,
        minimise_on_node=side.startswith("node"),
    )
    store.ensure_schema()
    for source, target in zip(
        day_indices(events.index_prefix, aged), day_indices(store.index_prefix, aged), strict=True
    ):
        client.indices.put_settings(index=source, body={"index.blocks.write": True})
        client.indices.clone(
            index=source,
            target=target,
            body={"settings": {"index.blocks.write": None, "index.number_of_replicas": 0}},
        )
        client.indices.put_settings(index=source, body={"index.blocks.write": None})
    client.cluster.health(index=f"{store.index_prefix}*", wait_for_status="green")
    return store


def node_cpu(client: OpenSearch) -> float:
    """The node processes' CPU seconds so far."""
    found = client.nodes.stats(metric="process")["nodes"].values()
    return float(sum(n["process"]["cpu"]["total_in_millis"] for n in found)) / 1000


def compare_minimise(
    client: OpenSearch, paths: dict[str, OpenSearchStore], aged: list[tuple[datetime, int]]
) -> list[str]:
    """Minimise each cloned day with each path, alternating the order per day; the table."""
    totals = {name: [0, 0.0, 0.0, 0.0] for name in paths}  # events, wall, client, node CPU
    for turn, (first, day) in enumerate(aged):
        start = (first + timedelta(days=day)).replace(hour=0, minute=0, second=0)
        scope = Scope(since=start, until=start + timedelta(days=1))
        names = list(paths) if turn % 2 == 0 else list(reversed(paths))
        for name in names:
            wall, cpu, node = time.perf_counter(), time.process_time(), node_cpu(client)
            changed = paths[name].minimise(scope)
            total = totals[name]
            total[0] += changed
            total[1] += time.perf_counter() - wall
            total[2] += time.process_time() - cpu
            total[3] += node_cpu(client) - node
    lines = [
        f"{'minimisation path':<34} {'events':>9} {'seconds':>8} {'us/event':>9}"
        f" {'client CPU us':>13} {'node CPU us':>11} {'ratio wall/CPU':>15}"
    ]
    base = totals["client-"]
    for name, (events, wall, cpu, node) in totals.items():
        per = [x / max(events, 1) * 1e6 for x in (wall, cpu, node)]
        base_per = [x / max(base[0], 1) * 1e6 for x in base[1:]]
        ratio = f"{per[0] / base_per[0]:.2f}x / {(per[1] + per[2]) / sum(base_per[1:]):.2f}x"
        label = {"client-": "client (read, put back whole)", "node-": "node (_update_by_query)"}
        lines.append(
            f"{label[name]:<34} {events:>9,} {wall:>8.2f} {per[0]:>9.1f}"
            f" {per[1]:>13.1f} {per[2]:>11.1f} {ratio:>15}"
        )
    return lines


def print_comparison(
    made: Stores, paths: dict[str, OpenSearchStore], compared: list[tuple[datetime, int]]
) -> None:
    if not paths or made.client is None:
        return
    print()
    lines = compare_minimise(made.client, paths, compared)
    print("\n".join(lines))
    print("(load average after the comparison {:.2f} {:.2f} {:.2f})".format(*os.getloadavg()))
    for store in paths.values():
        store.close()


def recorder(events: AuditStore) -> RetentionRecorder:
    """Tamper evidence for the run: records signed with a fresh key into the digest store."""
    return RetentionRecorder(
        events=events,
        digests=digest_store_beside(events),
        keyring=Keyring(private=[Ed25519PrivateKey.generate()]),
        rules={"access_denied": "30 days full detail, deleted after 365 days"},
    )


def listing_line(events: AuditStore, rounds: int = 2) -> str:
    """What the recorder reads to record one expired day's deletion: every document in full
    (``search``, pages of 1,000, as it did before ``ids``) against ids and timestamps only
    (``ids``); alternating rounds, the best of each."""
    start = FIRST_EXPIRED.replace(hour=0, minute=0, second=0, microsecond=0)
    day = Scope(since=start, until=start + timedelta(days=1))
    best = {"full": float("inf"), "ids": float("inf")}
    count = 0
    for _ in range(rounds):
        began = time.perf_counter()
        after: Page | None = None
        count = 0
        while page := events.search(day, size=1000, after=after):
            count += len(page)
            after = Page.of(page[-1])
        best["full"] = min(best["full"], time.perf_counter() - began)
        began = time.perf_counter()
        listed = sum(1 for _ in events.ids(day))
        best["ids"] = min(best["ids"], time.perf_counter() - began)
        if listed != count:
            raise SystemExit(f"ids listed {listed} events, search {count}")
    return (
        f"listing one day for records ({count:,} events): full documents {best['full']:.2f} s,"
        f" ids only {best['ids']:.2f} s ({best['full'] / max(best['ids'], 1e-9):.1f}x)"
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["opensearch", "sqlite"], default="opensearch")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--aged-days", type=int, default=3)
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--holds", type=int, default=5)
    parser.add_argument(
        "--keep", action="store_true", help="reuse the loaded data set (OPENSEARCH_URL node)"
    )
    parser.add_argument("--record", action="store_true", help="sign retention records (#12)")
    parser.add_argument(
        "--compare-days",
        type=int,
        default=1,
        help="aged days minimised by both paths after the run (OpenSearch)",
    )
    args = parser.parse_args()
    if args.holds > args.days:
        parser.error("--holds: at most one hold per expired day")
    if args.keep and (args.store != "opensearch" or not os.environ.get("OPENSEARCH_URL")):
        parser.error("--keep: OpenSearch at OPENSEARCH_URL only (a node that outlives the run)")
    return args


def main() -> int:
    args = arguments()
    with stores(args.store) as made:
        events, holds, runs = made.events, made.holds, made.runs
        for store in (events, holds, runs):
            store.ensure_schema()
        days = [(FIRST_EXPIRED, d) for d in range(args.days)]
        days += [(FIRST_AGED, d) for d in range(args.aged_days)]
        began = time.perf_counter()
        how = "loaded fresh"
        if args.keep:
            how = load_kept(made, days, args.per_day) + " (--keep) and cloned"
        else:
            load(events, days, args.per_day, made.client)
        loaded = time.perf_counter() - began
        compared = [(FIRST_AGED, d) for d in range(min(args.compare_days, args.aged_days))]
        paths: dict[str, OpenSearchStore] = {}
        if compared and made.client is not None:
            paths = {side: clone_aged(made, compared, side) for side in ("client-", "node-")}
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
            recorder=recorder(events) if args.record else None,
        )
        began = time.perf_counter()
        dry = job.run(now=NOW, dry_run=True)
        dry_s = time.perf_counter() - began
        timer.steps.clear()
        listing = listing_line(events) if args.record else ""
        before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        began = time.perf_counter()
        report = job.run(now=NOW)
        run_s = time.perf_counter() - began
        events.refresh()
        survived = sum(events.count(scope) for scope in scopes)
        kept = kept_count(made)
        total = len(days) * args.per_day
        print(
            f"store {args.store}: {args.days} expired + {args.aged_days} aged daily indices"
            f" x {args.per_day:,} events = {total:,}; {args.holds} holds"
            + ("; signed retention records" if args.record else "")
        )
        print(f"{how} in {loaded:.1f} s ({total / loaded:,.0f} events/s; not part of the run)")
        print(f"dry run (plan only) {dry_s:.2f} s")
        if listing:
            print(listing)
        print(f"run {run_s:.2f} s (goal < 60 s)")
        after = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        print(f"load average (1, 5, 15 min) before the run {before}, after {after}")
        print()
        print("\n".join(kind_table(timer)))
        print()
        print(f"held events {held}, after the run {survived}; in -kept indices {kept}")
        print(f"dry run would delete {dry.deleted:,} and minimise {dry.minimised:,}")
        print(report.text())
        print_comparison(made, paths, compared)
        ok = survived == held and kept in ("-", str(held)) and dry.deleted == report.deleted
        return 0 if ok and dry.minimised == report.minimised else 1


if __name__ == "__main__":
    raise SystemExit(main())
