"""gateway/oidc/_shared.py: one contract over the memory, SQLite and OpenSearch stores of
single-use login states and throttle counters, and what two instances see of each other."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from gateway.oidc import Block, MemoryState, OpenSearchState, SharedState, SQLiteState
from gateway.oidc._shared import PRUNE_INTERVAL, STATE_INDEX
from gateway.oidc.errors import StateUnavailable
from tests.gateway.oidc._support import Clock
from tools.opensearch_node import Node

Factory = Callable[[], SharedState]


@pytest.fixture(params=["memory", "sqlite", "opensearch"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Factory, Clock]]:
    """A factory of store instances that share one backend (as gateway instances do)."""
    clock = Clock()
    made: list[SharedState] = []
    if request.param == "memory":
        memory = MemoryState(clock=clock)

        def factory() -> SharedState:
            return memory

    elif request.param == "sqlite":

        def factory() -> SharedState:
            store = SQLiteState(path=tmp_path / "audit.db", clock=clock)
            made.append(store)
            return store

    else:
        node: Node = request.getfixturevalue("opensearch_node")
        prefix: str = request.getfixturevalue("index_prefix")

        def factory() -> SharedState:
            store = OpenSearchState(url=node.url, index_prefix=prefix, replicas=0, clock=clock)
            made.append(store)
            return store

    yield factory, clock
    for store in made:
        await store.aclose()


class TestUseOnce:
    async def test_first_use_only(self, stores: tuple[Factory, Clock]) -> None:
        """A key is accepted once, then refused, also by another instance."""
        make, _ = stores
        one, two = make(), make()
        assert await one.use_once("state:abc", until=Clock().now + 600)
        assert not await one.use_once("state:abc", until=Clock().now + 600)
        assert not await two.use_once("state:abc", until=Clock().now + 600)
        assert await two.use_once("state:other", until=Clock().now + 600)

    async def test_expired_record_may_be_used_again(self, stores: tuple[Factory, Clock]) -> None:
        """After its expiry a record no longer refuses (it is only kept that long)."""
        make, clock = stores
        store = make()
        assert await store.use_once("state:abc", until=clock.now + 10)
        clock.advance(11)
        assert await store.use_once("state:abc", until=clock.now + 10)

    async def test_racing_instances_accept_once(self, stores: tuple[Factory, Clock]) -> None:
        """Eight concurrent uses of one key over several instances: exactly one wins."""
        make, clock = stores
        instances = [make() for _ in range(4)]
        results = await asyncio.gather(
            *(instances[n % 4].use_once("state:race", until=clock.now + 60) for n in range(8))
        )
        assert sorted(results) == [False] * 7 + [True]


class TestCounters:
    async def test_counts_in_window(self, stores: tuple[Factory, Clock]) -> None:
        """Failures add up within the window and start again after it."""
        make, clock = stores
        store = make()
        assert [await store.add_failure("ip:a", window=60) for _ in range(3)] == [1, 2, 3]
        clock.advance(61)
        assert await store.add_failure("ip:a", window=60) == 1
        assert await store.add_failure("ip:b", window=60) == 1

    async def test_concurrent_failures_never_lost(self, stores: tuple[Factory, Clock]) -> None:
        """Two instances counting one key at once lose no failure (atomic counters)."""
        make, _ = stores
        instances = [make(), make()]
        counts = await asyncio.gather(
            *(instances[n % 2].add_failure("ip:race", window=600) for n in range(20))
        )
        assert sorted(counts) == list(range(1, 21))

    async def test_blocks_shared(self, stores: tuple[Factory, Clock]) -> None:
        """A block set by one instance is read by another until it is forgotten."""
        make, clock = stores
        one, two = make(), make()
        assert await two.blocked("ip:a") is None
        await one.set_block(
            "ip:a", Block(until=clock.now + 300, strikes=2), forget_at=clock.now + 900
        )
        assert await two.blocked("ip:a") == Block(until=clock.now + 300, strikes=2)
        clock.advance(901)
        assert await two.blocked("ip:a") is None


class TestMemoryBound:
    async def test_memory_bounded(self) -> None:
        """A flood of distinct keys never keeps more than max_entries of each kind."""
        store = MemoryState(max_entries=100)
        for n in range(5_000):
            await store.add_failure(f"ip:{n}", window=60)
        assert len(store) == 100


class TestOpenSearchRecords:
    async def test_keys_are_stored_hashed(
        self, opensearch_node: Node, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """No subject id or address is written to the cluster, only hashes."""
        store = OpenSearchState(url=opensearch_node.url, index_prefix=index_prefix, replicas=0)
        await store.add_failure("sub:https://idp.example|alice", window=60)
        await store.use_once("state:secret-state-value", until=Clock().now + 60)
        store.refresh()
        hits = opensearch.search(index=f"{index_prefix}{STATE_INDEX}")["hits"]["hits"]
        text = str(hits)
        assert len(hits) == 2
        assert "alice" not in text and "secret-state-value" not in text
        await store.aclose()


def _seed_expired(opensearch: OpenSearch, index: str, count: int, *, expires: float) -> None:
    """``count`` use-once records written straight into the index (as many logins would)."""
    lines: list[dict[str, object]] = []
    for number in range(count):
        lines.append({"index": {"_index": index, "_id": f"used-seed-{number}"}})
        lines.append({"kind": "used", "a": 0.0, "b": 0, "expires": expires})
    opensearch.bulk(body=lines, refresh="true")


def _count(opensearch: OpenSearch, index: str) -> int:
    opensearch.indices.refresh(index=index)
    return int(opensearch.count(index=index)["count"])


class TestOpenSearchPruning:
    """Expired records are deleted in batches until none is left, however many there are."""

    async def test_prune_deletes_every_expired_record(
        self, opensearch_node: Node, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """3,500 expired records (3.5 batches) go in one run; live ones stay."""
        clock = Clock()
        store = OpenSearchState(
            url=opensearch_node.url, index_prefix=index_prefix, replicas=0, clock=clock
        )
        await store.use_once("state:live", until=clock.now + 600)
        store.join_prune()
        _seed_expired(opensearch, store.index, 3500, expires=clock.now - 1)
        result = await asyncio.to_thread(store.prune)
        assert result.done
        assert result.deleted == 3500
        assert _count(opensearch, store.index) == 1
        await store.aclose()

    async def test_run_bounded_by_time_and_continued(
        self, opensearch_node: Node, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """A run out of time stops after its batch and says so; the next write starts another
        run at once (not after PRUNE_INTERVAL), until the backlog is gone."""
        clock = Clock()
        store = OpenSearchState(
            url=opensearch_node.url,
            index_prefix=index_prefix,
            replicas=0,
            clock=clock,
            prune_batch=1000,
            prune_budget=0.0,
        )
        await store.use_once("state:live", until=clock.now + 6000)
        store.join_prune()  # the first write's run: nothing expired yet
        _seed_expired(opensearch, store.index, 2500, expires=clock.now - 1)
        clock.advance(PRUNE_INTERVAL)
        left = []
        for number in range(3):
            await store.use_once(f"state:trigger-{number}", until=clock.now + 6000)
            store.join_prune()
            left.append(_count(opensearch, store.index) - 2 - number)
        assert left == [1500, 500, 0]
        await store.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestUnreachable:
    """An unreachable store raises StateUnavailable: the callers refuse (fail closed)."""

    @pytest.mark.parametrize("operation", ["use_once", "add_failure", "blocked"])
    async def test_opensearch_down(self, operation: str) -> None:
        """CWE-636: nothing is answered as if the store had said yes."""
        store = OpenSearchState(url=f"http://127.0.0.1:{_closed_port()}", timeout=2)
        with pytest.raises(StateUnavailable):
            if operation == "use_once":
                await store.use_once("state:x", until=Clock().now + 60)
            elif operation == "add_failure":
                await store.add_failure("ip:x", window=60)
            else:
                await store.blocked("ip:x")
        await store.aclose()

    async def test_sqlite_unusable(self, tmp_path: Path) -> None:
        """A SQLite store whose connection is unusable raises StateUnavailable."""
        store = SQLiteState(path=tmp_path / "audit.db")
        await store.aclose()  # a closed connection: every operation fails
        with pytest.raises(StateUnavailable):
            await store.use_once("state:x", until=Clock().now + 60)
