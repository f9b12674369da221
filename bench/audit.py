"""Benchmark: audit events shipped per second through the pipeline, against raw bulk.

    python bench/audit.py [--events N] [--batch N] [--rounds N]

Uses the node at OPENSEARCH_URL, or starts one (tools/opensearch_node.py). In the same run:

* ``helpers.bulk`` (opensearch-py) with the documents the pipeline's chain makes of the same
  events, ``create`` with their ids, into fresh indices: the ceiling;
* ``AuditPipeline`` with the spool on (fsync ``interval``): from the first ``emit`` until the
  last event is stored, processor chain included;
* the cost of ``emit`` on the request path (p50/p99 in µs), measured while the pipeline's
  threads run.

A warm-up round is not counted, and the two sides alternate who goes first. The machine is
shared, so rates vary between rounds; each round's ratio uses that round's ceiling.

Goals (issue #6): pipeline >= 80 % of the raw bulk rate; emit p99 <= 20 µs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from opensearchpy import OpenSearch, helpers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditPipeline, OpenSearchStore, Scope
from audit.events import index_name
from audit.processors import audit_processors, run_chain
from tools.opensearch_node import available_node


def make_event(seq: int) -> dict[str, Any]:
    """A realistic access-denied event, as the gateway emits it."""
    return {
        "event.action": "access_denied",
        "event.outcome": "failure",
        "event.reason": "no_matching_rule",
        "user.id": f"https://idp.example|user-{seq % 5000}",
        "user.roles": ["teacher"],
        "organization.id": f"school-{seq % 40}",
        "source.ip": f"192.0.2.{seq % 250}",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101",
        "http.request.method": "GET",
        "url.path": f"/api/schools/school-b/students/{seq}",
        "http.response.status_code": 403,
        "trace.id": uuid.UUID(int=seq).hex,
        "rule.name": "no_matching_rule",
        "labels": {"seq": seq},
    }


def run_pipeline(url: str, prefix: str, events: int, batch: int) -> tuple[float, list[float]]:
    store = OpenSearchStore(url=url, index_prefix=prefix, replicas=0)
    store.ensure_schema()
    with tempfile.TemporaryDirectory() as spool:
        pipeline = AuditPipeline(
            store=store, spool_dir=spool, batch_size=batch, max_queue=events + 10, fsync="interval"
        )
        pipeline.open()
        payloads = [make_event(seq) for seq in range(events)]
        costs: list[float] = []
        began = time.perf_counter()
        for payload in payloads:
            t0 = time.perf_counter_ns()
            pipeline.emit(payload)
            costs.append((time.perf_counter_ns() - t0) / 1000)
        if not pipeline.wait_idle(600):
            raise SystemExit("pipeline did not finish within 600 s")
        elapsed = time.perf_counter() - began
        pipeline.close()
    store.refresh()
    stored = store.count(Scope())
    if stored != events:
        raise SystemExit(f"pipeline stored {stored} of {events}")
    store.close()
    return elapsed, costs


def chain_documents(events: int) -> list[dict[str, Any]]:
    """The documents the pipeline makes of the same events (its processor chain, its ids)."""
    chain = audit_processors(render=False)
    return [run_chain(chain, make_event(seq)) for seq in range(events)]


def run_bulk(
    client: OpenSearch, url: str, prefix: str, docs: list[dict[str, Any]], batch: int
) -> float:
    store = OpenSearchStore(url=url, index_prefix=prefix, replicas=0)
    store.ensure_schema()  # the same template, so the same indexing work
    actions = [
        {
            "_op_type": "create",
            "_index": index_name(prefix, doc["@timestamp"]),
            "_id": doc["event.id"],
            "_source": doc,
        }
        for doc in docs
    ]
    began = time.perf_counter()
    ok, errors = helpers.bulk(client, actions, chunk_size=batch, max_chunk_bytes=4 << 20)
    elapsed = time.perf_counter() - began
    if ok != len(docs) or errors:
        raise SystemExit(f"helpers.bulk stored {ok} of {len(docs)}: {errors!r:.300}")
    store.close()
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with available_node() as node:
        client = OpenSearch(hosts=[node.url], timeout=120)
        rows: list[tuple[float, float]] = []
        costs_all: list[float] = []
        # Round 0 warms the JVM up and is not counted; then the order alternates, so neither
        # side profits from running second on a node that just got faster.
        for round_no in range(args.rounds + 1):
            run = uuid.uuid4().hex[:8]
            p_prefix, b_prefix = f"bench-{run}-p-", f"bench-{run}-b-"
            docs = chain_documents(args.events)
            try:
                if round_no % 2:
                    p_time, costs = run_pipeline(node.url, p_prefix, args.events, args.batch)
                    b_time = run_bulk(client, node.url, b_prefix, docs, args.batch)
                else:
                    b_time = run_bulk(client, node.url, b_prefix, docs, args.batch)
                    p_time, costs = run_pipeline(node.url, p_prefix, args.events, args.batch)
            finally:
                for prefix in (p_prefix, b_prefix):
                    client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)
                    client.indices.delete_index_template(name=f"{prefix}*", ignore=404)
            if round_no == 0:
                continue
            rows.append((args.events / b_time, args.events / p_time))
            costs_all += costs
        client.close()
    size = len(orjson.dumps(docs[0]))
    print(
        f"audit shipping: {args.events} events/round (~{size} B each), batch {args.batch}, "
        f"{args.rounds} rounds, OpenSearch at {node.url}"
    )
    print(f"{'round':>5}  {'helpers.bulk ev/s':>17}  {'pipeline ev/s':>13}  {'ratio':>6}")
    for i, (bulk, pipe) in enumerate(rows, 1):
        print(f"{i:>5}  {bulk:>17,.0f}  {pipe:>13,.0f}  {pipe / bulk:>6.0%}")
    bulk_med = statistics.median(r[0] for r in rows)
    pipe_med = statistics.median(r[1] for r in rows)
    print(
        f"{'median':>5}  {bulk_med:>17,.0f}  {pipe_med:>13,.0f}  {pipe_med / bulk_med:>6.0%}"
        "   (goal >= 80%)"
    )
    p50, p99 = percentile(costs_all, 0.50), percentile(costs_all, 0.99)
    print(
        f"emit (request path), {len(costs_all)} calls: p50 {p50:.2f} us, p99 {p99:.2f} us"
        "   (goal p99 <= 20 us)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
