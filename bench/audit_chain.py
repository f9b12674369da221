"""Benchmark: the digest chain's cost on shipping throughput (with and without, same run).

    python -m bench.audit_chain [--events N] [--batch N] [--rounds N] [--store opensearch|sqlite]
                                [--verify-events N] [--verify-only]

Each round ships the same events through two :class:`audit.AuditPipeline` instances, one
plain and one with a :class:`audit.DigestWriter` as its ``on_shipped`` hook (hashing every
stored event's canonical serialisation, journaling it, and closing intervals of 1 s, so a
signed digest is written and shipped to the digest store several times per round). Time is
from the first ``emit`` until the last event is stored; the writer is then closed (its last
digest written) outside the timing. A warm-up round is not counted and the order alternates.
Also printed: the per-event hashing cost alone (µs of CPU), the current canonical
serialisation against the plain one (every field visited, as first written), alternating in
the same process; both give the same bytes.

Goal (issue #12): with digests >= 90 % of the plain pipeline's rate.

``--verify-events N`` also measures ``verify`` over a signed log of N events (a day of them,
5-minute digests, written straight to the store): the whole verify against the same verify
without its look for events no digest lists (``unsigned=False``, the baseline), alternating in
the same run, first on the clean log (the look costs one aggregation), then with one event
injected (one hour read id by id). ``--verify-only`` skips the shipping rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from audit import (
    AuditPipeline,
    AuditStore,
    DigestWriter,
    Keyring,
    OpenSearchStore,
    Record,
    Scope,
    SQLiteStore,
    _verify,
    digest_store_beside,
)
from audit._chain import _FIXES, event_hash
from audit._unsigned import UnsignedCheck
from audit._verify import Verifier
from audit.processors import audit_processors, render_json, run_chain
from bench.audit import make_event
from tools.opensearch_node import available_node


def ship(store: AuditStore, events: int, batch: int, keys: Keyring | None) -> float:
    """Seconds to store ``events`` through a pipeline (with a digest writer when ``keys``)."""
    store.ensure_schema()
    with tempfile.TemporaryDirectory() as spool:
        writer = None
        if keys is not None:
            writer = DigestWriter(
                directory=Path(spool) / "chain",
                keyring=keys,
                store=digest_store_beside(store),
                instance=f"bench-{uuid.uuid4().hex[:6]}",
                interval=1.0,
            )
        pipeline = AuditPipeline(
            store=store,
            spool_dir=spool,
            batch_size=batch,
            max_queue=events + 10,
            fsync="interval",
            on_shipped=writer,
        )
        pipeline.open()
        payloads = [make_event(seq) for seq in range(events)]
        began = time.perf_counter()
        for payload in payloads:
            pipeline.emit(payload)
        if not pipeline.wait_idle(600):
            raise SystemExit("pipeline did not finish within 600 s")
        elapsed = time.perf_counter() - began
        pipeline.close()
        if writer is not None:
            writer.close()
            if writer.pending():
                raise SystemExit("digests were left unshipped")
    store.refresh()
    stored = store.count(Scope())
    if stored != events:
        raise SystemExit(f"stored {stored} of {events}")
    return elapsed


def plain_event_hash(doc: bytes) -> str:
    """The canonical hash as first written: every field visited (the baseline)."""
    normal: dict[str, Any] = {}
    for name, value in orjson.loads(doc).items():
        if value is not None:
            fix = _FIXES.get(name)
            normal[name] = value if fix is None else fix(value)
    return hashlib.sha256(orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)).hexdigest()


def hash_costs(events: int, rounds: int = 7) -> tuple[float, float]:
    """CPU microseconds per event (best of ``rounds``): (plain loop, current)."""
    chain = audit_processors(render=False)
    docs = [render_json(None, "", run_chain(chain, make_event(seq))) for seq in range(events)]
    if any(plain_event_hash(doc) != event_hash(doc) for doc in docs):
        raise SystemExit("the two serialisations differ: the comparison is void")
    best = {"plain": float("inf"), "current": float("inf")}
    for round_no in range(rounds):
        pair = [("plain", plain_event_hash), ("current", event_hash)]
        for name, hasher in pair if round_no % 2 else reversed(pair):
            began = time.process_time()
            for doc in docs:
                hasher(doc)
            best[name] = min(best[name], (time.process_time() - began) / events * 1e6)
    return best["plain"], best["current"]


VERIFY_SPAN = 86_400.0  # the log's events are spread over one day, ending two hours ago
VERIFY_INTERVAL = 300.0
WRITE_BATCH = 2000


def signed_log(store: AuditStore, events: int, keys: Keyring, chain_dir: Path) -> None:
    """``events`` events over a day and the digests of their 5-minute intervals, written
    straight to the store (no pipeline: the log is the subject here, not the shipping)."""
    store.ensure_schema()
    processors = audit_processors(render=False)
    first = (time.time() - VERIFY_SPAN - 7200) // VERIFY_INTERVAL * VERIFY_INTERVAL
    clock = [first]
    writer = DigestWriter(
        directory=chain_dir,
        keyring=keys,
        store=digest_store_beside(store),
        instance="bench-verify",
        interval=VERIFY_INTERVAL,
        clock=lambda: clock[0],
    )
    step = VERIFY_SPAN / events
    for at in range(0, events, WRITE_BATCH):
        records = []
        for seq in range(at, min(at + WRITE_BATCH, events)):
            moment = first + seq * step
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
            doc = run_chain(
                processors, {**make_event(seq), "@timestamp": f"{stamp}.{seq % 1_000_000:06d}Z"}
            )
            records.append(
                Record(str(doc["event.id"]), str(doc["@timestamp"]), render_json(None, "", doc))
            )
        if {r.status for r in store.write(records)} != {"stored"}:
            raise SystemExit("the log was not stored whole")
        for start in range(0, len(records), 500):  # the shipper's batches, on its clock
            part = records[start : start + 500]
            clock[0] = first + (at + start + len(part)) * step
            writer(part)
    clock[0] = first + VERIFY_SPAN + VERIFY_INTERVAL
    writer.close()
    store.refresh()


class TimedCheck(UnsignedCheck):
    """The look itself, timed inside the verify it is part of (the machine's noise between
    two whole verify runs is larger than the look on a clean log)."""

    spent: ClassVar[list[float]] = []

    def run(self, **options: Any) -> Any:
        began = time.perf_counter()
        try:
            return super().run(**options)
        finally:
            TimedCheck.spent.append(time.perf_counter() - began)


def verify_seconds(verifier: Verifier, *, look: bool) -> tuple[float, bool]:
    began = time.perf_counter()
    report = verifier.verify(unsigned=look)
    return time.perf_counter() - began, report.ok


def bench_verify(args: argparse.Namespace, keys: Keyring, node_url: str, scratch: str) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-{run}-v-"
    store: AuditStore
    if args.store == "opensearch":  # a loaded shared machine: long requests may take long
        store = OpenSearchStore(url=node_url, index_prefix=prefix, replicas=0, timeout=300)
    else:
        store = SQLiteStore(path=Path(scratch) / f"{prefix}audit.db")
    client = OpenSearch(hosts=[node_url], timeout=120)
    try:
        began = time.perf_counter()
        signed_log(store, args.verify_events, keys, Path(scratch) / f"{run}-chain")
        loaded = time.perf_counter() - began
        verifier = Verifier(events=store, digests=digest_store_beside(store), keyring=keys)
        _verify.UnsignedCheck = TimedCheck  # type: ignore[attr-defined]  # time the look alone
        verifier.verify()  # warm-up (caches, page cache), not counted
        rows: dict[str, list[tuple[float, float, float]]] = {"clean": [], "1 injected": []}
        for case, pairs in rows.items():
            if case == "1 injected":
                mid = (time.time() - VERIFY_SPAN / 2 - 7200) // 1
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(mid))
                doc = run_chain(
                    audit_processors(render=False),
                    {**make_event(0), "event.action": "login_success", "@timestamp": stamp},
                )
                record = Record(str(doc["event.id"]), stamp, render_json(None, "", doc))
                store.write([record])
                store.refresh()
            for round_no in range(args.rounds):
                times: dict[bool, float] = {}
                for look in (False, True) if round_no % 2 else (True, False):
                    times[look], ok = verify_seconds(verifier, look=look)
                    if look and ok != (case == "clean"):
                        raise SystemExit(f"verify's answer is wrong for the {case} log")
                pairs.append((times[False], times[True], TimedCheck.spent[-1]))
    finally:
        store.close()
        client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)
        client.indices.delete_index_template(name=f"{prefix}*", ignore=404)
        client.close()
    print(
        f"verify ({args.store}): {args.verify_events:,} events over one day, 5-minute digests"
        f" (log written in {loaded:.0f} s), {args.rounds} alternating rounds; load"
        f" {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'log':>10}  {'round':>5}  {'without look s':>14}  {'with look s':>11}  {'ratio':>6}"
        f"  {'the look alone s':>16}  {'look / without':>14}"
    )
    for case, pairs in rows.items():
        for i, (without, with_look, alone) in enumerate([*pairs, _median(pairs)], 1):
            name = "median" if i > len(pairs) else str(i)
            print(
                f"{case:>10}  {name:>5}  {without:>14.2f}  {with_look:>11.2f}"
                f"  {with_look / without:>6.2f}  {alone:>16.3f}  {alone / without:>14.1%}"
            )


def _median(rows: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    return (
        statistics.median(r[0] for r in rows),
        statistics.median(r[1] for r in rows),
        statistics.median(r[2] for r in rows),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", choices=["opensearch", "sqlite"], default="opensearch")
    parser.add_argument("--verify-events", type=int, default=0, help="also measure verify")
    parser.add_argument("--verify-only", action="store_true", help="only measure verify")
    args = parser.parse_args()
    keys = Keyring(private=[Ed25519PrivateKey.generate()])
    rows: list[tuple[float, float]] = []
    with available_node() as node, tempfile.TemporaryDirectory() as scratch:
        if args.verify_events > 0:
            bench_verify(args, keys, node.url, scratch)
        if args.verify_only:
            return 0
        client = OpenSearch(hosts=[node.url], timeout=120)
        for round_no in range(args.rounds + 1):
            run = uuid.uuid4().hex[:8]
            times: dict[bool, float] = {}
            order = (False, True) if round_no % 2 else (True, False)
            for chained in order:
                prefix = f"bench-{run}-{'c' if chained else 'p'}-"
                store: AuditStore
                if args.store == "opensearch":
                    store = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
                else:
                    store = SQLiteStore(path=Path(scratch) / f"{prefix}audit.db")
                try:
                    times[chained] = ship(store, args.events, args.batch, keys if chained else None)
                finally:
                    store.close()
                    client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)
                    client.indices.delete_index_template(name=f"{prefix}*", ignore=404)
            if round_no:
                rows.append((args.events / times[False], args.events / times[True]))
        client.close()
    print(
        f"digest chain cost on shipping ({args.store}): {args.events} events/round, "
        f"batch {args.batch}, {args.rounds} rounds, 1 s digest intervals"
    )
    print(f"{'round':>5}  {'plain ev/s':>11}  {'with digests ev/s':>17}  {'ratio':>6}")
    for i, (plain, with_digests) in enumerate(rows, 1):
        print(f"{i:>5}  {plain:>11,.0f}  {with_digests:>17,.0f}  {with_digests / plain:>6.0%}")
    plain_med = statistics.median(r[0] for r in rows)
    chained_med = statistics.median(r[1] for r in rows)
    print(
        f"{'median':>5}  {plain_med:>11,.0f}  {chained_med:>17,.0f}  "
        f"{chained_med / plain_med:>6.0%}   (goal >= 90%)"
    )
    plain_us, current_us = hash_costs(args.events)
    print(
        f"canonical hash alone (CPU): plain loop {plain_us:.2f} us/event, current"
        f" {current_us:.2f} us/event ({current_us / plain_us:.0%} of the plain loop)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
