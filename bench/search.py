"""Benchmark: typical audit searches (p50/p95 ms) over many events, against a bare search.

    python -m bench.search [--events N] [--repeats N] [--rounds N] [--no-merge]

Uses the node at OPENSEARCH_URL, or starts one (tools/opensearch_node.py). Loads ``--events``
events (default 1,000,000) spread over 30 days into fresh daily indices with raw ``_bulk``,
then times each typical search through :class:`audit.AuditSearch` (scope, query, total up to
10,000, one page of 100) and, in the same run, a bare ``match_all`` search of 100 hits sorted
by time as the baseline. Rounds alternate over the queries; each query runs ``--repeats``
times in all after one warm-up.

Free text is also timed as the bare query, before and after in the same run: before, a
``case_insensitive`` wildcard query on a wildcard field without a normalizer (the field as it
was, ``audit.free_text``: every n-gram becomes a disjunction of its case variants); after, a
plain wildcard query on the field with the ``lowercase`` normalizer (``audit.search_text``).
The bench indices carry both fields (the template copies into both) so the two queries read
the same documents.

Then, unless ``--no-merge``, every daily index but the newest is force-merged to one segment
and the searches are timed again. That second table is fair only for a deployment that does the
same for the days it no longer writes to (an ISM policy with a ``force_merge`` action on indices
older than a day, for example); this project does not ship such a job, so the first table is
the one the goal is judged on.

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
from audit.events import (
    FREE_TEXT_FIELD,
    LEGACY_FREE_TEXT_FIELD,
    index_name,
    index_template,
    new_event_id,
)
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


def bench_template(prefix: str) -> dict[str, Any]:
    """The index template, copying the text fields also into the legacy (unnormalised)
    free-text field, so the before and after free-text queries read the same documents."""
    template = index_template(prefix, replicas=0)
    properties = template["template"]["mappings"]["properties"]

    def both(node: dict[str, Any]) -> None:
        if "copy_to" in node:
            node["copy_to"] = [FREE_TEXT_FIELD, LEGACY_FREE_TEXT_FIELD]
        for child in (node.get("properties") or {}).values():
            both(child)

    for child in properties.values():
        both(child)
    legacy = LEGACY_FREE_TEXT_FIELD.split(".")[1]
    properties["audit"]["properties"][legacy] = {"type": "wildcard", "doc_values": True}
    return template


def load(client: OpenSearch, store: OpenSearchStore, prefix: str, total: int) -> float:
    store.ensure_schema()
    client.indices.put_index_template(name=f"{prefix}audit-events", body=bench_template(prefix))
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
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        out.append((time.perf_counter() - began) * 1000)
    return out


def measure(
    cases: dict[str, Callable[[], object]], repeats: int, rounds: int
) -> dict[str, list[float]]:
    """Each case once to warm up, then ``rounds`` rounds over all cases (alternating, so a
    busy moment of the shared machine hits every case alike), ``repeats`` runs in all."""
    for run in cases.values():
        run()
    results: dict[str, list[float]] = {name: [] for name in cases}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for name, run in cases.items():
            results[name] += timed(run, per_round)
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(title: str, results: dict[str, list[float]]) -> None:
    base = statistics.median(results["bare match_all (baseline)"])
    print(title)
    print(f"{'query':<38}  {'p50 ms':>7}  {'p95 ms':>7}  {'p50/baseline':>12}")
    for name, values in results.items():
        p50, p95 = pct(values, 0.50), pct(values, 0.95)
        print(f"{name:<38}  {p50:>7.1f}  {p95:>7.1f}  {p50 / base:>12.1f}x")
    before = statistics.median(results[BEFORE])
    after = statistics.median(results[AFTER])
    print(
        f"free text, raw: normalised field vs case_insensitive (p50): {before / after:.1f}x faster"
    )


BEFORE = "free text, raw: before (case_insensitive)"
AFTER = "free text, raw: after (normalised field)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-merge", action="store_true", help="skip the force-merged table")
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    indices = f"{prefix}audit-events-*"
    merged: dict[str, list[float]] | None = None
    with available_node() as node:
        client = OpenSearch(hosts=[node.url], timeout=600)
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
                    index=indices, body={"size": 100, "sort": [{"@timestamp": "desc"}]}
                )

            text = "students/4242"
            pattern = "*" + text + "*"

            def raw(query: dict[str, Any]) -> Callable[[], object]:
                body = {
                    "query": {"bool": {"filter": [query]}},
                    "size": 100,
                    "sort": [{"@timestamp": "asc"}, {"event.id": "asc"}],
                    "track_total_hits": 10_000,
                }

                def run() -> object:
                    return client.search(index=indices, body=body)

                return run

            legacy = {"value": pattern, "case_insensitive": True}
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
                "free text, one week": lambda: search.search(
                    OFFICER, Filters(text=text, since=week[0], until=week[1])
                ),
                BEFORE: raw({"wildcard": {LEGACY_FREE_TEXT_FIELD: legacy}}),
                AFTER: raw({"wildcard": {FREE_TEXT_FIELD: {"value": pattern}}}),
                "page 22 (cursor)": lambda: search.search(
                    OFFICER, Filters(), cursor=deep.next_cursor
                ),
            }
            segments = len(client.cat.segments(index=indices, format="json"))
            results = measure(cases, args.repeats, args.rounds)
            if not args.no_merge:
                days = sorted(client.indices.get(index=indices))
                began = time.perf_counter()
                client.indices.forcemerge(
                    index=",".join(days[:-1]), params={"max_num_segments": "1"}
                )
                merge_seconds = time.perf_counter() - began
                merged_segments = len(client.cat.segments(index=indices, format="json"))
                merged = measure(cases, args.repeats, args.rounds)
        finally:
            client.indices.delete(index=f"{prefix}*", ignore_unavailable=True)
            client.indices.delete_index_template(name=f"{prefix}*", ignore=404)
            store.close()
            client.close()
    print(
        f"audit search: {args.events:,} events over {DAYS} daily indices (1 shard each, loaded in "
        f"{seconds:.0f} s), {args.repeats} repeats in {args.rounds} alternating rounds, "
        f"OpenSearch at {node.url}"
    )
    table(f"as loaded ({segments} segments):", results)
    if merged is not None:
        print()
        table(
            f"after force-merging all days but the newest ({merged_segments} segments, "
            f"{merge_seconds:.0f} s; fair only where a deployment does the same):",
            merged,
        )
    print("goal: p95 <= 200 ms for every typical search at 1,000,000 events (first table)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
