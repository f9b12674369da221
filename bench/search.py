"""Benchmark: typical audit searches (p50/p95 ms) over many events, against a bare search.

    python bench/search.py [--events N] [--repeats N]

Uses the node at OPENSEARCH_URL, or starts one (tools/opensearch_node.py). Loads ``--events``
events (default 1,000,000) spread over 30 days into fresh daily indices with raw ``_bulk``,
then times each typical search through :class:`audit.AuditSearch` (scope, query, total up to
10,000, one page of 100) and, in the same run, a bare ``match_all`` search of 100 hits sorted
by time as the baseline. Each query runs ``--repeats`` times after one warm-up.

Free text is timed three ways: through AuditSearch (the ``audit.free_text`` wildcard field),
and as the bare query against the same indices, new (the wildcard field) and old (leading-
wildcard queries on each keyword field, as before the field existed), printed as a ratio.

Goal (issue #7): p95 of every typical search at most 200 ms at 1,000,000 events.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from opensearchpy import OpenSearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditSearch, Filters, MemorySink, OpenSearchStore, Requester
from audit.events import FREE_TEXT_FIELD, index_name, new_event_id
from tools.opensearch_node import available_node

START = datetime(2026, 2, 1, tzinfo=UTC)
DAYS = 30
OFFICER = Requester("iss|sec", frozenset({"security_officer"}), None)
ADMIN = Requester("iss|adm", frozenset({"school_admin"}), "school-7")


def document(seq: int, total: int) -> dict[str, Any]:
    moment = START + timedelta(seconds=seq * DAYS * 86_400 / total)
    return {
        "@timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event.id": new_event_id(),
        "event.kind": "event",
        "event.action": "access_denied" if seq % 3 else "personal_data_access",
        "event.outcome": "failure" if seq % 3 else "success",
        "user.id": f"https://idp.example|user-{seq % 5000}",
        "user.roles": ["teacher"],
        "organization.id": f"school-{seq % 40}",
        "source.ip": f"10.{seq % 200}.{seq % 250}.{seq % 7}",
        "url.path": f"/api/schools/school-{seq % 40}/students/{seq % 9000}",
        "http.response.status_code": 403 if seq % 3 else 200,
        "trace.id": uuid.UUID(int=seq).hex,
        "rule.name": "no_matching_rule" if seq % 3 else "school_staff_read",
        "audit.schema_version": 1,
        "audit.category": "access_denied" if seq % 3 else "personal_data_access",
    }


def load(client: OpenSearch, store: OpenSearchStore, prefix: str, total: int) -> float:
    store.ensure_schema()
    began = time.perf_counter()
    lines: list[bytes] = []
    for seq in range(total):
        doc = document(seq, total)
        index = index_name(prefix, doc["@timestamp"])
        lines.append(orjson.dumps({"create": {"_index": index, "_id": doc["event.id"]}}))
        lines.append(orjson.dumps(doc))
        if len(lines) >= 10_000 or seq == total - 1:
            answer = client.bulk(body=b"\n".join(lines) + b"\n", filter_path="errors")
            if answer.get("errors"):
                raise SystemExit("bulk load reported errors")
            lines = []
    store.refresh()
    return time.perf_counter() - began


def timed(run: Callable[[], object], repeats: int) -> list[float]:
    run()  # warm-up
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        out.append((time.perf_counter() - began) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    with available_node() as node:
        client = OpenSearch(hosts=[node.url], timeout=300)
        store = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
        try:
            seconds = load(client, store, prefix, args.events)
            search = AuditSearch(store=store, sink=MemorySink())
            week = (START + timedelta(days=10), START + timedelta(days=17))
            deep = search.search(OFFICER, Filters(), size=1000)
            for _ in range(20):  # a cursor 21,000 events deep
                deep = search.search(OFFICER, Filters(), size=1000, cursor=deep.next_cursor)

            def bare() -> object:
                return client.search(
                    index=f"{prefix}audit-events-*",
                    body={"size": 100, "sort": [{"@timestamp": "desc"}]},
                )

            text = "students/4242"
            pattern = "*" + text + "*"
            old_text = {  # the query free text used before the wildcard field (same run)
                "bool": {
                    "should": [
                        *(
                            {"wildcard": {name: {"value": pattern, "case_insensitive": True}}}
                            for name in ("url.path", "event.reason", "error.type")
                        ),
                        {
                            "wildcard": {
                                "user_agent.original": {
                                    "value": pattern,
                                    "case_insensitive": True,
                                }
                            }
                        },
                        {"match": {"error.message": {"query": text, "operator": "and"}}},
                    ],
                    "minimum_should_match": 1,
                }
            }
            new_text = {"wildcard": {FREE_TEXT_FIELD: {"value": pattern, "case_insensitive": True}}}

            def raw(query: dict[str, Any]) -> Callable[[], object]:
                body = {
                    "query": {"bool": {"filter": [query]}},
                    "size": 100,
                    "sort": [{"@timestamp": "asc"}, {"event.id": "asc"}],
                    "track_total_hits": 10_000,
                }

                def run() -> object:
                    return client.search(index=f"{prefix}audit-events-*", body=body)

                return run

            cases: dict[str, Callable[[], object]] = {
                "bare match_all (baseline)": bare,
                "newest 100, no filter": lambda: search.search(
                    OFFICER, Filters(), newest_first=True
                ),
                "subject": lambda: search.search(
                    OFFICER, Filters(subjects=("https://idp.example|user-42",))
                ),
                "school admin, one week": lambda: search.search(
                    ADMIN, Filters(since=week[0], until=week[1])
                ),
                "CIDR + status 403": lambda: search.search(
                    OFFICER, Filters(source_ips=("10.7.0.0/16",), status_codes=(403,))
                ),
                "request id": lambda: search.search(
                    OFFICER, Filters(trace_ids=(uuid.UUID(int=777).hex,))
                ),
                "free text": lambda: search.search(OFFICER, Filters(text=text)),
                "free text, raw: old query": raw(old_text),
                "free text, raw: new query": raw(new_text),
                "page 22 (cursor)": lambda: search.search(
                    OFFICER, Filters(), cursor=deep.next_cursor
                ),
            }
            results = {name: timed(run, args.repeats) for name, run in cases.items()}
        finally:
            client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)
            client.indices.delete_index_template(name=f"{prefix}*", ignore=404)
            store.close()
            client.close()
    base = statistics.median(results["bare match_all (baseline)"])
    print(
        f"audit search: {args.events:,} events over {DAYS} days (loaded in {seconds:.0f} s), "
        f"{args.repeats} repeats, OpenSearch at {node.url}"
    )
    print(f"{'query':<28}  {'p50 ms':>7}  {'p95 ms':>7}  {'p50/baseline':>12}")
    for name, values in results.items():
        p50, p95 = pct(values, 0.50), pct(values, 0.95)
        print(f"{name:<28}  {p50:>7.1f}  {p95:>7.1f}  {p50 / base:>12.1f}x")
    old = statistics.median(results["free text, raw: old query"])
    new = statistics.median(results["free text, raw: new query"])
    print(f"free text: wildcard field vs leading-wildcard queries (p50): {old / new:.1f}x faster")
    print("goal: p95 <= 200 ms for every typical search at 1,000,000 events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
