"""Benchmark: the digest chain's cost on shipping throughput (with and without, same run).

    python -m bench.audit_chain [--events N] [--batch N] [--rounds N] [--store opensearch|sqlite]

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
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from audit import (
    AuditPipeline,
    AuditStore,
    DigestWriter,
    Keyring,
    OpenSearchStore,
    Scope,
    SQLiteStore,
    digest_store_beside,
)
from audit._chain import _FIXES, event_hash
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", choices=["opensearch", "sqlite"], default="opensearch")
    args = parser.parse_args()
    keys = Keyring(private=[Ed25519PrivateKey.generate()])
    rows: list[tuple[float, float]] = []
    with available_node() as node, tempfile.TemporaryDirectory() as scratch:
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
