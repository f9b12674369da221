"""What the shared state costs per request: the throttle's block check (every bearer request
and every login asks it) and a login state's use-once record, per store.

Run: ``.venv/bin/python -m bench.shared_state [--opensearch URL]`` (``OPENSEARCH_URL`` is
used when set; ``make opensearch`` starts a node). Each case runs N calls one after another
and prints µs per call and the ratio to the baseline measured in the same run: the in-memory
store (what one instance without sharing would do).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.oidc import MemoryState, OpenSearchState, SharedState, SQLiteState, Throttle

N = 2000


def _throttle(store: SharedState, check_interval: float) -> Throttle:
    return Throttle(
        store=store,
        max_failures=10,
        window=300,
        block=900,
        max_block=14400,
        check_interval=check_interval,
    )


def _cases(store: SharedState) -> dict[str, Callable[[int], Awaitable[Any]]]:
    every_time, reused = _throttle(store, 0.0), _throttle(store, 1.0)

    def block_check(i: int) -> Awaitable[Any]:
        return every_time.retry_after(f"ip:198.51.{i % 250}.{i % 200}")

    def block_check_reused(i: int) -> Awaitable[Any]:
        # One busy API client: the same address, as the bearer stage asks per request.
        return reused.retry_after("ip:198.51.100.7")

    def use_once(_i: int) -> Awaitable[Any]:
        return store.use_once(f"state:{secrets.token_urlsafe(16)}", until=time.time() + 600)

    def count_failure(i: int) -> Awaitable[Any]:
        return store.add_failure(f"ip:203.0.113.{i % 250}", window=300)

    return {
        "block check": block_check,
        "block check, 1 s reuse": block_check_reused,
        "use once": use_once,
        "count a failure": count_failure,
    }


async def _time(call: Callable[[int], Awaitable[Any]], n: int) -> float:
    for i in range(min(n, 100)):  # warm up (index creation, connections)
        await call(i)
    started = time.perf_counter()
    for i in range(n):
        await call(i)
    return (time.perf_counter() - started) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--opensearch", default=os.environ.get("OPENSEARCH_URL"))
    parser.add_argument("-n", type=int, default=N)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        stores: dict[str, SharedState] = {
            "memory (baseline)": MemoryState(),
            "SQLite": SQLiteState(path=Path(name) / "audit.db"),
        }
        if args.opensearch:
            prefix = f"bench-{secrets.token_hex(4)}-"
            stores["OpenSearch"] = OpenSearchState(
                url=args.opensearch, index_prefix=prefix, replicas=0
            )
        else:
            print("no --opensearch URL (or OPENSEARCH_URL): OpenSearch not measured")
        results: dict[str, float] = {}
        for label, store in stores.items():
            for kind, call in _cases(store).items():
                results[f"{kind}, {label}"] = await _time(call, args.n)
        for store in stores.values():
            if isinstance(store, OpenSearchState):
                store._client.indices.delete(index=store.index, ignore_unavailable=True)
            await store.aclose()
    print(f"{'case':48} {'µs/call':>10} {'x baseline':>11}")
    for kind in ("block check", "block check, 1 s reuse", "use once", "count a failure"):
        base = results[f"{kind}, memory (baseline)"]
        for label, micros in results.items():
            if label.rsplit(", ", 1)[0] == kind:
                print(f"{label:48} {micros:10.1f} {micros / base:11.1f}")


if __name__ == "__main__":
    asyncio.run(main())
