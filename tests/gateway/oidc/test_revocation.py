"""gateway/oidc/_revocation.py: the revocation record, in memory and in a shared SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.oidc import MemoryRevocations, RevocationStore, SQLiteRevocations
from tests.gateway.oidc._support import Clock


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    def factory(clock: Clock) -> RevocationStore:
        if request.param == "memory":
            return MemoryRevocations(clock=clock)
        return SQLiteRevocations(path=tmp_path / "revoked.sqlite", clock=clock)

    return factory


class TestRevocationStores:
    def test_session_revoked(self, make) -> None:  # type: ignore[no-untyped-def]
        """A revoked session id is reported revoked; others are not."""
        clock = Clock()
        store = make(clock)
        store.revoke_session("sid-1", until=clock() + 100)
        assert store.is_revoked(session_id="sid-1", user_id="i|s", issued_at=clock())
        assert not store.is_revoked(session_id="sid-2", user_id="i|s", issued_at=clock())

    def test_subject_revoked_before_time(self, make) -> None:  # type: ignore[no-untyped-def]
        """A subject revocation covers sessions issued at or before its time only."""
        clock = Clock()
        store = make(clock)
        store.revoke_subject("i|s", before=clock(), until=clock() + 100)
        assert store.is_revoked(session_id="x", user_id="i|s", issued_at=clock() - 5)
        assert not store.is_revoked(session_id="x", user_id="i|s", issued_at=clock() + 1)
        assert not store.is_revoked(session_id="x", user_id="i|other", issued_at=clock() - 5)

    def test_expired_entries_pruned(self, make) -> None:  # type: ignore[no-untyped-def]
        """Entries past their keep-until time are dropped on the next write."""
        clock = Clock()
        store = make(clock)
        store.revoke_session("old", until=clock() + 10)
        clock.advance(11)
        store.revoke_session("new", until=clock() + 10)
        assert not store.is_revoked(session_id="old", user_id="i|s", issued_at=0)


class TestSQLiteShared:
    def test_second_instance_sees_revocation(self, tmp_path: Path) -> None:
        """Two instances on the same file: a revocation by one is seen by the other at once."""
        clock = Clock()
        first = SQLiteRevocations(path=tmp_path / "r.sqlite", clock=clock)
        second = SQLiteRevocations(path=tmp_path / "r.sqlite", clock=clock)
        assert not second.is_revoked(session_id="sid", user_id="i|s", issued_at=0)
        first.revoke_session("sid", until=clock() + 60)
        assert second.is_revoked(session_id="sid", user_id="i|s", issued_at=0)
        first.close()
        second.close()
