"""audit/_pipeline.py against the real OpenSearch node: shipping, replay, faults, exactly once.

Each fault test ends with the count that proves it: every ``labels.seq`` stored exactly once,
or accounted for as a counted drop under the ``drop`` policy.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog
from opensearchpy import OpenSearch

from audit import AuditUnavailable, Category, OpenSearchStore, Scope
from audit._spool import Position, _cursor_record
from audit.events import index_name
from tests._opensearch import delete_prefixed, new_prefix
from tests.audit._faults import Cuttable
from tests.audit.conftest import event, fast_pipeline, seqs_in
from tools.opensearch_node import (
    DEFAULT_VERSION,
    Node,
    default_cache_dir,
    free_port,
    started_node,
)

pytestmark = pytest.mark.opensearch


class TestShipping:
    async def test_lifecycle_ships_each_event_once(
        self, os_store: OpenSearchStore, tmp_path: Path
    ) -> None:
        """start(), emit, aclose(): every event is in the index exactly once."""
        # A generous close deadline: this asserts delivery, not the deadline (a loaded machine
        # took longer than the usual 5 s to ship 500 events; what it did not ship stayed spooled).
        pipeline = fast_pipeline(os_store, tmp_path, close_timeout=120.0)
        await pipeline.start()
        for seq in range(500):
            pipeline.emit(event(seq))
        assert await pipeline.ready()
        await pipeline.aclose()
        assert seqs_in(os_store) == dict.fromkeys(range(500), 1)
        metrics = pipeline.metrics()
        assert (metrics.events_shipped, metrics.queue_depth, metrics.spool_bytes) == (500, 0, 0)

    def test_daily_index_by_event_time(self, os_store: OpenSearchStore, tmp_path: Path) -> None:
        """An event is filed under the day of its own @timestamp, not the shipping day."""
        pipeline = fast_pipeline(os_store, tmp_path)
        pipeline.open()
        pipeline.emit(event(1, **{"@timestamp": "2025-01-02T03:04:05.000000Z"}))
        pipeline.close()
        os_store.refresh()
        assert os_store.count(Scope()) == 1
        index = index_name(os_store.index_prefix, "2025-01-02T03:04:05Z")
        assert os_store._client.count(index=index)["count"] == 1

    async def test_context_of_the_emitting_request(
        self, os_store: OpenSearchStore, tmp_path: Path
    ) -> None:
        """Context variables bound when emit ran reach the event, though the chain runs later."""
        pipeline = fast_pipeline(os_store, tmp_path)
        await pipeline.start()

        async def request(n: int) -> None:
            with structlog.contextvars.bound_contextvars(request_id=f"req-{n}"):
                await asyncio.sleep(0)
                pipeline.emit(event(n))

        await asyncio.gather(*(request(n) for n in range(20)))
        await pipeline.aclose()
        os_store.refresh()
        hits = os_store.search(Scope(), size=100)
        assert {h["trace.id"]: int(h["labels"]["seq"]) for h in hits} == {
            f"req-{n}": n for n in range(20)
        }

    def test_ready_false_when_store_unreachable(self, tmp_path: Path) -> None:
        """ready() reports an unreachable store."""
        store = OpenSearchStore(url=f"http://127.0.0.1:{free_port()}", timeout=1)
        pipeline = fast_pipeline(store, tmp_path)
        pipeline.open()
        try:
            assert asyncio.run(pipeline.ready()) is False
        finally:
            pipeline.close()


class TestReplay:
    def test_spooled_while_away_shipped_on_next_start(
        self, os_store: OpenSearchStore, opensearch_node: Node, tmp_path: Path
    ) -> None:
        """Events spooled while the store was unreachable are shipped by the next run."""
        away = OpenSearchStore(
            url=f"http://127.0.0.1:{free_port()}", index_prefix=os_store.index_prefix, timeout=1
        )
        first = fast_pipeline(away, tmp_path, close_timeout=0.2)
        first.open()
        for seq in range(300):
            first.emit(event(seq))
        first.close()
        assert first.metrics().events_shipped == 0
        assert first.metrics().spool_bytes > 0

        second = fast_pipeline(os_store, tmp_path)
        second.open()
        assert second.wait_idle(30)
        second.close()
        assert seqs_in(os_store) == dict.fromkeys(range(300), 1)

    def test_replaying_a_shipped_batch_does_not_duplicate(
        self, os_store: OpenSearchStore, tmp_path: Path
    ) -> None:
        """A batch shipped but not committed (crash before the cursor moved) is sent again:
        409 counts as stored, nothing is duplicated."""
        pipeline = fast_pipeline(os_store, tmp_path)
        pipeline.open()
        for seq in range(100):
            pipeline.emit(event(seq))
        assert pipeline.wait_idle(30)
        pipeline.close()
        # Put the records back behind the cursor, as if the cursor had never moved.
        lines = b"".join(orjson.dumps({}) and line for line in _stored_as_spool_lines(os_store))
        (tmp_path / "00000000000000000099.seg").write_bytes(lines)
        (tmp_path / "cursor").write_bytes(_cursor_record(Position(99, 0)))
        again = fast_pipeline(os_store, tmp_path)
        again.open()
        assert again.wait_idle(30)
        again.close()
        assert again.metrics().events_duplicate == 100
        assert seqs_in(os_store) == dict.fromkeys(range(100), 1)


def _stored_as_spool_lines(store: OpenSearchStore) -> list[bytes]:
    store.refresh()
    return [
        f"{hit['event.id']}\t{hit['@timestamp']}\t".encode() + orjson.dumps(hit) + b"\n"
        for hit in store.search(Scope(), size=10_000)
    ]


class TestOutage:
    def test_node_unreachable_while_events_keep_coming(
        self, os_store: OpenSearchStore, opensearch_node: Node, tmp_path: Path
    ) -> None:
        """The node goes away mid-stream and comes back: every event stored exactly once."""
        link = Cuttable(opensearch_node.url)
        link.restore()
        via = OpenSearchStore(
            url=link.url, index_prefix=os_store.index_prefix, replicas=0, timeout=2
        )
        pipeline = fast_pipeline(via, tmp_path, batch_size=50)
        pipeline.open()
        try:
            for seq in range(400):
                pipeline.emit(event(seq))
            link.cut()
            for seq in range(400, 1200):
                pipeline.emit(event(seq))
                if seq % 100 == 0:
                    asyncio.run(asyncio.sleep(0.05))
            assert not pipeline.wait_idle(0.5)  # nothing can ship now
            assert pipeline.metrics().spool_bytes > 0
            assert pipeline.metrics().oldest_unshipped_age_seconds >= 0.5
            link.restore()
            assert pipeline.wait_idle(60)
        finally:
            pipeline.close()
            link.cut()
        assert pipeline.metrics().retries > 0
        assert seqs_in(os_store) == dict.fromkeys(range(1200), 1)


def _listening_pid(port: int) -> int:
    """The pid of the process listening on 127.0.0.1:port (a node this test started)."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"pid=(\d+)", out)
    assert match, f"nothing listens on {port}: {out!r}"
    return int(match.group(1))


@pytest.fixture(scope="module")
def second_node() -> Iterator[Node]:
    """A node of our own, to freeze and resume without disturbing the shared one."""
    with started_node(
        version=os.environ.get("OPENSEARCH_VERSION", DEFAULT_VERSION),
        cache_dir=default_cache_dir(),
        heap="512m",
        timeout=180,
    ) as node:
        yield node


class TestFrozenNode:
    def test_node_frozen_mid_stream_then_resumed(self, second_node: Node, tmp_path: Path) -> None:
        """The node stops answering (SIGSTOP) while events keep coming, requests time out,
        and it resumes (SIGCONT): batches it may have half-taken are replayed, and every event
        is stored exactly once."""
        prefix = new_prefix()
        store = OpenSearchStore(url=second_node.url, index_prefix=prefix, replicas=0, timeout=2)
        pid = _listening_pid(int(second_node.url.rsplit(":", 1)[1]))
        pipeline = fast_pipeline(store, tmp_path, batch_size=100)
        pipeline.open()
        frozen = False
        try:
            for seq in range(500):
                pipeline.emit(event(seq))
            os.kill(pid, signal.SIGSTOP)
            frozen = True
            for seq in range(500, 1500):
                pipeline.emit(event(seq))
                if seq % 100 == 0:
                    asyncio.run(asyncio.sleep(0.05))
            for _ in range(600):  # wait for at least one timed-out request
                if pipeline.metrics().retries > 0:
                    break
                asyncio.run(asyncio.sleep(0.05))
            assert pipeline.metrics().retries > 0
            os.kill(pid, signal.SIGCONT)
            frozen = False
            assert pipeline.wait_idle(120)
        finally:
            if frozen:
                os.kill(pid, signal.SIGCONT)
            pipeline.close()
        # Read back with a patient client: the 2 s timeout above is for the pipeline's requests.
        reader = OpenSearchStore(url=second_node.url, index_prefix=prefix, replicas=0, timeout=60)
        try:
            assert seqs_in(reader) == dict.fromkeys(range(1500), 1)
        finally:
            delete_prefixed(reader._client, prefix)
            reader.close()
            store.close()


class TestPartialFailures:
    def test_mapping_rejections_dead_lettered_rest_stored(
        self, os_store: OpenSearchStore, tmp_path: Path
    ) -> None:
        """In one bulk, rejected items go to the dead-letter index and file; the rest is stored."""
        pipeline = fast_pipeline(os_store, tmp_path)
        pipeline.open()
        bad = {7, 21, 22}
        for seq in range(50):
            extra = {"http.response.status_code": "not-a-number"} if seq in bad else {}
            pipeline.emit(event(seq, **extra))
        assert pipeline.wait_idle(30)
        pipeline.close()
        assert seqs_in(os_store) == {seq: 1 for seq in range(50) if seq not in bad}
        assert pipeline.metrics().dead_letters == 3
        os_store.refresh()
        letters = os_store.deadletters()
        assert {int(orjson.loads(d["document"])["labels"]["seq"]) for d in letters} == bad
        assert all("mapper_parsing_exception" in d["reason"] for d in letters)
        filed = list(_spool_deadletters(tmp_path))
        assert {int(orjson.loads(d["document"])["labels"]["seq"]) for d in filed} == bad

    def test_blocked_index_items_retried_individually(
        self, os_store: OpenSearchStore, opensearch: OpenSearch, tmp_path: Path
    ) -> None:
        """Items refused with 429 (a read-only day) are retried alone until stored once."""
        day = "2025-03-01T10:00:00.000000Z"
        index = index_name(os_store.index_prefix, day)
        os_store.ensure_schema()
        opensearch.indices.create(index=index)
        opensearch.indices.put_settings(
            index=index, body={"index.blocks.read_only_allow_delete": True}
        )
        pipeline = fast_pipeline(os_store, tmp_path)
        pipeline.open()
        try:
            for seq in range(60):
                pipeline.emit(event(seq, **({"@timestamp": day} if seq % 3 == 0 else {})))
            for _ in range(1500):  # up to 30 s on a loaded machine
                if pipeline.metrics().retries >= 20 and pipeline.metrics().events_shipped == 40:
                    break
                asyncio.run(asyncio.sleep(0.02))
            assert pipeline.metrics().events_shipped == 40
            opensearch.indices.put_settings(
                index=index, body={"index.blocks.read_only_allow_delete": None}
            )
            assert pipeline.wait_idle(30)
        finally:
            pipeline.close()
        assert pipeline.metrics().dead_letters == 0
        assert seqs_in(os_store) == dict.fromkeys(range(60), 1)


def _spool_deadletters(spool_dir: Path) -> list[dict[str, str]]:
    path = spool_dir / "deadletter.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


class TestSpoolFull:
    @pytest.mark.parametrize("limit", ["byte_bound", "full_disk"])
    def test_drop_and_block(
        self,
        os_store: OpenSearchStore,
        opensearch_node: Node,
        tmp_path: Path,
        request: pytest.FixtureRequest,
        limit: str,
    ) -> None:
        """With the node away and the spool full (a 64 KiB byte bound, or a 64 KiB tmpfs that
        really runs out of space): access_denied events are dropped and counted, login events
        are refused (AuditUnavailable); after recovery every accepted event is stored once, and
        an audit_events_dropped alert says how many were dropped."""
        link = Cuttable(opensearch_node.url)
        link.restore()
        via = OpenSearchStore(
            url=link.url, index_prefix=os_store.index_prefix, replicas=0, timeout=2
        )
        if limit == "byte_bound":
            spool_dir, max_bytes = tmp_path, 64 * 1024
        else:
            spool_dir, max_bytes = request.getfixturevalue("tiny_fs"), 1 << 30
        pipeline = fast_pipeline(via, spool_dir, spool_max_bytes=max_bytes, max_queue=100)
        pipeline.open()
        link.cut()
        accepted: list[int] = []
        refused: list[int] = []
        try:
            for seq in range(1000):
                action = "login_failure" if seq % 2 else "access_denied"
                try:
                    pipeline.emit(event(seq, action=action))
                    accepted.append(seq)
                except AuditUnavailable:
                    refused.append(seq)
                if seq % 50 == 0:
                    asyncio.run(asyncio.sleep(0.02))  # let the writer fill the spool
            metrics = pipeline.metrics()
            assert metrics.spool_full
            assert refused and all(seq % 2 for seq in refused)  # only logins are refused
            assert metrics.refused == {Category.AUTHENTICATION.value: len(refused)}
            dropped = metrics.drops[Category.ACCESS_DENIED.value]
            assert dropped > 0
            link.restore()
            assert pipeline.wait_idle(60)
            for _ in range(100):  # the alert is recorded once space has returned
                if pipeline.metrics().events_shipped > len(accepted) - dropped:
                    break
                asyncio.run(asyncio.sleep(0.05))
            assert pipeline.wait_idle(30)
        finally:
            pipeline.close()
            link.cut()
        stored = seqs_in(os_store)
        assert set(stored.values()) == {1}
        assert not set(stored) & set(refused)
        # Every accepted event is stored, or was an access_denied event counted as dropped.
        lost = [seq for seq in accepted if seq not in stored]
        assert all(seq % 2 == 0 for seq in lost)
        assert len(lost) == dropped
        os_store.refresh()
        alerts = os_store.search(Scope(actions=["audit_events_dropped"]))
        assert alerts  # one, or more when drops came in separate spells
        assert sum(int(a["labels"]["dropped_access_denied"]) for a in alerts) == dropped


class TestKilled:
    def _child(self, node: Node, prefix: str, spool: Path, count: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.audit._child", node.url, prefix, str(spool), str(count)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )

    def test_sigkill_mid_batch_then_restart(
        self, os_store: OpenSearchStore, opensearch_node: Node, tmp_path: Path
    ) -> None:
        """The shipper process is killed with SIGKILL while shipping; the restarted one replays
        the spool and every event ends up stored exactly once."""
        total = 4000
        child = self._child(opensearch_node, os_store.index_prefix, tmp_path, total)
        assert child.stdout is not None
        killed_at = None
        for line in child.stdout:
            metrics = orjson.loads(line)
            if metrics["events_spooled"] == total and metrics["events_shipped"] >= 10:
                child.send_signal(signal.SIGKILL)
                killed_at = metrics["events_shipped"]
                break
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        assert killed_at is not None and killed_at < total
        os_store.refresh()
        assert os_store.count(Scope()) < total  # really killed mid-way

        restarted = self._child(opensearch_node, os_store.index_prefix, tmp_path, 0)
        out, _ = restarted.communicate(timeout=120)
        assert restarted.returncode == 0
        final = orjson.loads(out.splitlines()[-1])
        assert final["spool_bytes"] == 0
        assert seqs_in(os_store) == dict.fromkeys(range(total), 1)
