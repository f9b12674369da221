"""PolicyWatcher: reloads after the files change and settle."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from audit import MemorySink
from policies._store import PolicyStore
from policies._watch import PolicyWatcher
from tests.policies.conftest import MODEL, RESOURCES
from tests.policies.test_store import GRANT, POLICY, TABLE


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    (tmp_path / "policy.csv").write_text(POLICY, encoding="utf-8")
    (tmp_path / "policy_tests.csv").write_text(TABLE, encoding="utf-8")
    return PolicyStore.from_files(
        MODEL,
        tmp_path / "policy.csv",
        resources_path=RESOURCES,
        table_path=tmp_path / "policy_tests.csv",
        sink=MemorySink(),
    )


def _touch(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


class TestPoll:
    def test_does_nothing_while_files_are_unchanged(self, store: PolicyStore) -> None:
        """No change, no reload."""
        watcher = PolicyWatcher(store)
        assert watcher.poll() is None
        assert store.reloads_succeeded == 0

    def test_reloads_once_a_change_has_settled(self, store: PolicyStore) -> None:
        """The first poll after a write waits; the second reloads; the third has nothing to do."""
        watcher = PolicyWatcher(store)
        _touch(store.paths["policy"], POLICY + GRANT)
        assert watcher.poll() is None
        assert watcher.poll() is True
        assert watcher.poll() is None
        assert store.reloads_succeeded == 1
        assert GRANT.strip() in store.state.source.policy_text

    def test_a_bad_change_is_reported_and_not_retried(self, store: PolicyStore) -> None:
        """A broken file fails once (old policy kept) and is not reloaded again until it changes."""
        watcher = PolicyWatcher(store)
        _touch(store.paths["policy"], "p, broken\n")
        watcher.poll()
        assert watcher.poll() is False
        assert watcher.poll() is None
        assert store.reloads_failed == 1

    def test_refuses_a_non_positive_interval(self, store: PolicyStore) -> None:
        """An interval of zero would spin."""
        with pytest.raises(ValueError, match="interval"):
            PolicyWatcher(store, interval=0)


class TestRun:
    async def test_reloads_in_the_background_until_stopped(self, store: PolicyStore) -> None:
        """run() picks up a change within a few intervals and ends when told to."""
        watcher = PolicyWatcher(store, interval=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        _touch(store.paths["policy"], POLICY + GRANT)
        for _ in range(500):
            if store.reloads_succeeded:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        assert store.reloads_succeeded == 1
