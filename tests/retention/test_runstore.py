"""retention/_runstore.py: the run lock and run records, one contract for both stores."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from retention import LockLost
from retention._runstore import Lease, RunRecord, RunStore
from tests.retention.conftest import Stores, make_stores

T0 = datetime(2027, 1, 10, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def take(runs: RunStore, owner: str = "a", at: datetime = T0) -> Lease | None:
    return runs.acquire(owner=owner, now=at, duration=LEASE)


class TestLock:
    def test_free_lock_is_taken(self, stores: Stores) -> None:
        """A free lock is taken, and the store names its holder."""
        lease = take(stores.runs)
        assert lease is not None
        assert lease.expires_at == T0 + LEASE
        assert stores.runs.holder() == lease

    def test_held_lock_is_refused(self, stores: Stores) -> None:
        """While a lease lasts, nobody else takes the lock."""
        assert take(stores.runs, "a") is not None
        assert take(stores.runs, "b", T0 + LEASE - timedelta(seconds=1)) is None
        assert stores.runs.holder() is not None
        assert stores.runs.holder().owner == "a"  # type: ignore[union-attr]

    def test_expired_lease_is_taken_over(self, stores: Stores) -> None:
        """A holder that died loses the lock when its lease runs out."""
        first = take(stores.runs, "a")
        second = take(stores.runs, "b", T0 + LEASE)
        assert first is not None
        assert second is not None
        assert second.token != first.token

    def test_taken_over_holder_cannot_renew(self, stores: Stores) -> None:
        """After a take-over the old holder's renewal fails: it must stop."""
        first = take(stores.runs, "a")
        assert first is not None
        assert take(stores.runs, "b", T0 + 2 * LEASE) is not None
        with pytest.raises(LockLost):
            stores.runs.renew(first, now=T0 + 2 * LEASE, duration=LEASE)

    def test_renewal_extends_the_lease(self, stores: Stores) -> None:
        """A renewed lease keeps others out past its first expiry."""
        lease = take(stores.runs)
        assert lease is not None
        renewed = stores.runs.renew(lease, now=T0 + LEASE / 2, duration=LEASE)
        assert renewed.expires_at == T0 + LEASE / 2 + LEASE
        assert take(stores.runs, "b", T0 + LEASE) is None

    def test_release_frees_only_our_own_lock(self, stores: Stores) -> None:
        """Releasing a lease lost to another leaves the other's lock alone."""
        first = take(stores.runs, "a")
        assert first is not None
        second = take(stores.runs, "b", T0 + 2 * LEASE)
        stores.runs.release(first)
        assert stores.runs.holder() == second
        assert second is not None
        stores.runs.release(second)
        assert stores.runs.holder() is None
        assert take(stores.runs, "c", T0 + 2 * LEASE) is not None

    def test_racing_takers_one_wins(
        self, stores: Stores, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        """Of several processes' connections taking the lock at once, exactly one gets it."""
        kind = "sqlite" if "sqlite" in request.node.callspec.id else "opensearch"
        others = [make_stores(kind, tmp_path / "audit.db", request) for _ in range(6)]
        won: list[Lease] = []
        barrier = threading.Barrier(len(others))

        def race(runs: RunStore, owner: str) -> None:
            barrier.wait()
            lease = take(runs, owner)
            if lease is not None:
                won.append(lease)

        threads = [
            threading.Thread(target=race, args=(s.runs, f"m{i}")) for i, s in enumerate(others)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for other in others:
            other.runs.close()
        assert len(won) == 1
        assert stores.runs.holder() == won[0]


class TestRuns:
    def test_run_recorded_then_ended_with_report(self, stores: Stores) -> None:
        """A run is stored when it starts and again, with its report, when it ends."""
        stores.runs.start_run(RunRecord("r1", "a", T0, "started"))
        assert [r.state for r in stores.runs.runs(state="started")] == ["started"]
        stores.runs.end_run("r1", state="finished", report={"deleted": 3})
        [run] = stores.runs.runs()
        assert (run.run_id, run.state, run.report) == ("r1", "finished", {"deleted": 3})
        assert stores.runs.runs(state="started") == []

    def test_schema_is_idempotent(self, stores: Stores) -> None:
        """Ensuring the schema again keeps lock and runs."""
        lease = take(stores.runs)
        stores.runs.start_run(RunRecord("r1", "a", T0, "started"))
        stores.runs.ensure_schema()
        assert stores.runs.holder() == lease
        assert [r.run_id for r in stores.runs.runs()] == ["r1"]


class TestStaleBlocks:
    def test_opensearch_write_block_is_lifted(
        self, opensearch: OpenSearch, index_prefix: str, request: pytest.FixtureRequest
    ) -> None:
        """A write block left on an event index by a killed run is lifted (and only there)."""
        stores = make_stores("opensearch", Path("unused"), request)
        try:
            blocked = f"{index_prefix}audit-events-2026.01.02"
            fine = f"{index_prefix}audit-events-2026.01.03"
            for index in (blocked, fine):
                opensearch.indices.create(index=index, body={"settings": {"number_of_replicas": 0}})
            opensearch.indices.put_settings(index=blocked, body={"index.blocks.write": True})
            assert stores.runs.clear_stale_blocks() == [blocked]
            opensearch.index(index=blocked, body={"event.id": "x"}, refresh=True)
            assert stores.runs.clear_stale_blocks() == []
        finally:
            stores.runs.close()
            stores.holds.close()
            stores.events.close()

    def test_opensearch_refresh_switched_off_is_restored(
        self, opensearch: OpenSearch, index_prefix: str, request: pytest.FixtureRequest
    ) -> None:
        """Refresh left off on an event index by a run killed while minimising is restored."""
        stores = make_stores("opensearch", Path("unused"), request)
        try:
            stale = f"{index_prefix}audit-events-2026.01.02"
            opensearch.indices.create(
                index=stale,
                body={"settings": {"number_of_replicas": 0, "refresh_interval": "-1"}},
            )
            assert stores.runs.clear_stale_blocks() == [stale]
            found = opensearch.indices.get_settings(index=stale)[stale]["settings"]["index"]
            assert "refresh_interval" not in found
            assert stores.runs.clear_stale_blocks() == []
        finally:
            stores.runs.close()
            stores.holds.close()
            stores.events.close()
