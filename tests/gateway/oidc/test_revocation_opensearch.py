"""gateway/oidc/_revocation_opensearch.py: the revocation record in the audit cluster, seen by
instances on other machines through their polled copies (against a real OpenSearch node)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError

from gateway.oidc import OpenSearchRevocations
from gateway.oidc._revocation_journal import RevocationJournal
from gateway.oidc._revocation_opensearch import (
    LOOKUP_HASH_CACHE,
    REVOCATION_INDEX,
    _hash,
    _lookup_hash,
)
from gateway.oidc.errors import RevocationNotDurable, RevocationsUnavailable
from tests.gateway.oidc._support import Clock
from tools.opensearch_node import Node

Factory = Callable[..., OpenSearchRevocations]
MAX_STALENESS = 5.0
LIVENESS_WAIT = 15.0


@pytest.fixture
def clocks() -> tuple[Clock, Clock]:
    """The wall clock and the monotonic clock every instance of a test shares."""
    return Clock(), Clock(1000.0)


@pytest.fixture
def make(
    opensearch_node: Node, index_prefix: str, clocks: tuple[Clock, Clock]
) -> Iterator[Factory]:
    """Instances on one index, as gateway instances on several machines are (no thread:
    each test polls with ``sync()`` itself, unless it asks for ``start=True``)."""
    made: list[OpenSearchRevocations] = []
    wall, mono = clocks

    def factory(**options: Any) -> OpenSearchRevocations:
        values: dict[str, Any] = {
            "url": opensearch_node.url,
            "index_prefix": index_prefix,
            "replicas": 0,
            "max_staleness": MAX_STALENESS,
            "start": False,
            "clock": wall,
            "monotonic": mono,
            **options,
        }
        store = OpenSearchRevocations(**values)
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _seed(opensearch: OpenSearch, index: str, sessions: list[str], until: float) -> None:
    """Revocation documents written straight into the index (as many instances would)."""
    lines: list[dict[str, Any]] = []
    for session_id in sessions:
        key = _hash(session_id)
        lines.append({"index": {"_index": index, "_id": f"session-{key}"}})
        lines.append({"kind": "session", "key": key, "before": 0.0, "until": until})
    opensearch.bulk(body=lines, refresh="true")


class TestAcrossInstances:
    def test_revocation_refused_at_once_on_this_instance(
        self, make: Factory, clocks: tuple[Clock, Clock]
    ) -> None:
        """The instance that records a revocation refuses the session without a poll."""
        wall, _ = clocks
        one = make()
        one.revoke_session("sid-1", until=wall() + 3600)
        assert one.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())

    def test_session_checked_before_is_refused_at_once(
        self, make: Factory, clocks: tuple[Clock, Clock]
    ) -> None:
        """A session whose ids were looked up (and remembered) is refused once revoked."""
        wall, _ = clocks
        one = make()
        one.sync()
        assert not one.is_revoked(session_id="sid-9", user_id="i|s9", issued_at=wall())
        one.revoke_session("sid-9", until=wall() + 3600)
        assert one.is_revoked(session_id="sid-9", user_id="i|s9", issued_at=wall())

    def test_other_instance_refuses_after_its_next_poll(
        self, make: Factory, clocks: tuple[Clock, Clock]
    ) -> None:
        """A session revoked on one instance is refused by another from its next poll on."""
        wall, _ = clocks
        one, two = make(), make()
        two.sync()
        one.revoke_session("sid-1", until=wall() + 3600)
        two.sync()
        assert two.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())
        assert not two.is_revoked(session_id="sid-2", user_id="i|s", issued_at=wall())

    def test_subject_revocation_covers_older_sessions_only(
        self, make: Factory, clocks: tuple[Clock, Clock]
    ) -> None:
        """A subject's revocation reaches the other instance and covers only sessions issued
        at or before it."""
        wall, _ = clocks
        one, two = make(), make()
        one.revoke_subject("i|s", before=wall(), until=wall() + 3600)
        two.sync()
        assert two.is_revoked(session_id="x", user_id="i|s", issued_at=wall() - 5)
        assert not two.is_revoked(session_id="x", user_id="i|s", issued_at=wall() + 1)
        assert not two.is_revoked(session_id="x", user_id="i|other", issued_at=wall() - 5)

    def test_latest_subject_revocation_wins(
        self, make: Factory, clocks: tuple[Clock, Clock]
    ) -> None:
        """Two instances revoking one subject at different times: the later time holds
        everywhere (neither write overwrites the other)."""
        wall, _ = clocks
        one, two, three = make(), make(), make()
        two.revoke_subject("i|s", before=wall() + 100, until=wall() + 3600)
        one.revoke_subject("i|s", before=wall(), until=wall() + 3600)
        three.sync()
        assert three.is_revoked(session_id="x", user_id="i|s", issued_at=wall() + 50)

    def test_many_revocations_read_in_pages(
        self, make: Factory, clocks: tuple[Clock, Clock], opensearch: OpenSearch
    ) -> None:
        """More revocations than one page, written before the first poll and between two
        polls, are all in the copy (the full read and the incremental one both page)."""
        wall, _ = clocks
        two = make()
        two.sync()  # creates the index
        _seed(opensearch, two.index, [f"a-{n}" for n in range(1500)], wall() + 3600)
        fresh = make()
        fresh.sync()
        two.sync()
        _seed(opensearch, two.index, [f"b-{n}" for n in range(1200)], wall() + 3600)
        two.sync()
        for store in (fresh, two):
            assert store.is_revoked(session_id="a-0", user_id="i|s", issued_at=0)
            assert store.is_revoked(session_id="a-1499", user_id="i|s", issued_at=0)
        assert two.is_revoked(session_id="b-0", user_id="i|s", issued_at=0)
        assert two.is_revoked(session_id="b-1199", user_id="i|s", issued_at=0)

    def test_only_hashes_stored(
        self, make: Factory, clocks: tuple[Clock, Clock], opensearch: OpenSearch
    ) -> None:
        """Neither the session id nor the user id is stored in clear."""
        wall, _ = clocks
        one = make()
        one.revoke_session("secret-session-id", until=wall() + 3600)
        one.revoke_subject("https://idp|person-7", before=wall(), until=wall() + 3600)
        hits = opensearch.search(index=one.index, body={"size": 10})["hits"]["hits"]
        text = repr(hits)
        assert len(hits) == 2
        assert "secret-session-id" not in text
        assert "person-7" not in text

    def test_index_named_after_prefix(self, make: Factory, index_prefix: str) -> None:
        """The record lives in ``{prefix}gateway-revocations`` of the audit cluster."""
        assert make().index == f"{index_prefix}{REVOCATION_INDEX}"


class TestBackgroundPolling:
    def test_thread_brings_revocations_in(self, make: Factory, clocks: tuple[Clock, Clock]) -> None:
        """With its thread running, an instance picks up another's revocation by itself."""
        wall, _ = clocks
        one = make()
        two = make(start=True, poll_interval=0.05, monotonic=time.monotonic)
        one.revoke_session("sid-1", until=wall() + 3600)
        deadline = time.monotonic() + LIVENESS_WAIT
        while True:
            try:
                if two.is_revoked(session_id="sid-1", user_id="i|s", issued_at=0):
                    break
            except RevocationsUnavailable:
                pass  # the thread's first poll has not finished yet (a 2 s request, under load)
            assert time.monotonic() < deadline, "the polling thread never saw the revocation"
            time.sleep(0.02)


class TestFailClosed:
    def test_unknown_session_refused_once_copy_too_old(
        self, make: Factory, clocks: tuple[Clock, Clock]
    ) -> None:
        """After ``max_staleness`` without a successful poll, a session the copy does not know
        revoked cannot be vouched for: RevocationsUnavailable."""
        wall, mono = clocks
        two = make()
        two.sync()
        mono.advance(MAX_STALENESS)
        assert not two.is_revoked(session_id="sid", user_id="i|s", issued_at=wall())
        mono.advance(0.01)
        with pytest.raises(RevocationsUnavailable):
            two.is_revoked(session_id="sid", user_id="i|s", issued_at=wall())
        two.sync()
        assert not two.is_revoked(session_id="sid", user_id="i|s", issued_at=wall())

    def test_known_revocation_refused_even_when_stale(
        self, make: Factory, clocks: tuple[Clock, Clock]
    ) -> None:
        """A session the copy knows revoked is refused (False never comes from an old copy)."""
        wall, mono = clocks
        two = make()
        two.revoke_session("sid", until=wall() + 3600)
        two.sync()
        mono.advance(MAX_STALENESS * 10)
        assert two.is_revoked(session_id="sid", user_id="i|s", issued_at=wall())

    def test_never_synchronised_is_unavailable(self, clocks: tuple[Clock, Clock]) -> None:
        """An instance whose store is unreachable from the start vouches for no session, and
        its poll says why."""
        wall, mono = clocks
        store = OpenSearchRevocations(
            url=_dead_url(), start=False, clock=wall, monotonic=mono, timeout=1.0
        )
        try:
            with pytest.raises(RevocationsUnavailable):
                store.sync()
            with pytest.raises(RevocationsUnavailable):
                store.is_revoked(session_id="sid", user_id="i|s", issued_at=wall())
        finally:
            store.close()

    def test_failed_write_kept_locally_and_retried(
        self, make: Factory, clocks: tuple[Clock, Clock], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A revocation the cluster does not take is refused here at once, reported to the
        caller, queued, and lands at the next poll, where the other instance finds it."""
        wall, _ = clocks
        one, two = make(), make()
        one.sync()
        real_index = one._client.index

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise OpenSearchConnectionError("N/A", "refused", OSError("refused"))

        monkeypatch.setattr(one._client, "index", refuse)
        with pytest.raises(RevocationsUnavailable):
            one.revoke_session("sid-1", until=wall() + 3600)
        assert one.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())
        assert one.pending == 1
        two.sync()
        assert not two.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())
        monkeypatch.setattr(one._client, "index", real_index)
        one.sync()
        assert one.pending == 0
        two.sync()
        assert two.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())


class TestPruning:
    def test_expired_records_leave_copy_and_index(
        self, make: Factory, clocks: tuple[Clock, Clock], opensearch: OpenSearch
    ) -> None:
        """Past its keep-until time a record is dropped from the copy and from the index;
        live ones stay."""
        wall, _ = clocks
        one = make()
        one.revoke_session("old", until=wall() + 10)
        one.revoke_session("live", until=wall() + 3600)
        wall.advance(11)
        one.sync()
        opensearch.indices.refresh(index=one.index)
        assert opensearch.count(index=one.index)["count"] == 1
        assert not one.is_revoked(session_id="old", user_id="i|s", issued_at=0)
        assert one.is_revoked(session_id="live", user_id="i|s", issued_at=0)


def _full_disk(store: OpenSearchRevocations) -> None:
    """From now on the store's journal file answers writes as a full disk does (ENOSPC: its
    descriptor now points at /dev/full)."""
    journal = store._journal
    assert journal is not None
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, journal._fd)
    os.close(full)


class TestJournal:
    def test_revocation_survives_restart_while_cluster_away(
        self, make: Factory, clocks: tuple[Clock, Clock], tmp_path: Path
    ) -> None:
        """A logout the cluster never took, then the instance ends: the next instance on the
        same journal refuses the session before any poll, writes it at its first poll (where
        another instance finds it) and empties the journal."""
        wall, _ = clocks
        down = make(url=_dead_url(), timeout=1.0, journal=RevocationJournal(directory=tmp_path))
        with pytest.raises(RevocationsUnavailable):
            down.revoke_session("sid-1", until=wall() + 3600)
        down.close()
        other = make()
        other.sync()
        restarted = make(journal=RevocationJournal(directory=tmp_path))
        assert restarted.replayed == 1
        assert restarted.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())
        assert not other.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())
        restarted.sync()
        other.sync()
        assert other.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())
        assert (tmp_path / "journal").stat().st_size == 0

    def test_refused_before_cluster_reachable(
        self, make: Factory, clocks: tuple[Clock, Clock], tmp_path: Path
    ) -> None:
        """Restarted with the cluster still away: the replayed session is refused (not 503:
        refused), while a session it cannot vouch for is unavailable."""
        wall, _ = clocks
        down = make(url=_dead_url(), timeout=1.0, journal=RevocationJournal(directory=tmp_path))
        with pytest.raises(RevocationsUnavailable):
            down.revoke_subject("i|s", before=wall(), until=wall() + 3600)
        down.close()
        again = make(url=_dead_url(), timeout=1.0, journal=RevocationJournal(directory=tmp_path))
        assert again.is_revoked(session_id="x", user_id="i|s", issued_at=wall() - 1)
        with pytest.raises(RevocationsUnavailable):
            again.is_revoked(session_id="x", user_id="i|other", issued_at=wall() - 1)

    def test_replay_idempotent(
        self, make: Factory, clocks: tuple[Clock, Clock], tmp_path: Path, opensearch: OpenSearch
    ) -> None:
        """The same journal replayed twice (a crash during replay) leaves one document per
        revocation in the index and the same answers."""
        wall, _ = clocks
        down = make(url=_dead_url(), timeout=1.0, journal=RevocationJournal(directory=tmp_path))
        for name in ("sid-1", "sid-2"):
            with pytest.raises(RevocationsUnavailable):
                down.revoke_session(name, until=wall() + 3600)
        with pytest.raises(RevocationsUnavailable):
            down.revoke_subject("i|s", before=wall(), until=wall() + 3600)
        down.close()
        saved = (tmp_path / "journal").read_bytes()
        for _ in range(2):
            (tmp_path / "journal").write_bytes(saved)
            store = make(journal=RevocationJournal(directory=tmp_path))
            assert store.replayed == 3
            store.sync()
            store.close()
        opensearch.indices.refresh(index=store.index)
        assert opensearch.count(index=store.index)["count"] == 3
        fresh = make()
        fresh.sync()
        assert fresh.is_revoked(session_id="sid-2", user_id="i|t", issued_at=wall())
        assert fresh.is_revoked(session_id="y", user_id="i|s", issued_at=wall())

    def test_expired_entries_not_replayed(
        self, make: Factory, clocks: tuple[Clock, Clock], tmp_path: Path
    ) -> None:
        """An entry past its keep-until time is dropped at replay (its session has expired)."""
        wall, _ = clocks
        down = make(url=_dead_url(), timeout=1.0, journal=RevocationJournal(directory=tmp_path))
        with pytest.raises(RevocationsUnavailable):
            down.revoke_session("short", until=wall() + 10)
        down.close()
        wall.advance(11)
        assert make(journal=RevocationJournal(directory=tmp_path)).replayed == 0

    def test_only_hashes_on_disk(
        self, make: Factory, clocks: tuple[Clock, Clock], tmp_path: Path
    ) -> None:
        """The journal holds the SHA-256 hashes the index holds, never a session or user id."""
        wall, _ = clocks
        down = make(url=_dead_url(), timeout=1.0, journal=RevocationJournal(directory=tmp_path))
        with pytest.raises(RevocationsUnavailable):
            down.revoke_session("secret-session-id", until=wall() + 3600)
        with pytest.raises(RevocationsUnavailable):
            down.revoke_subject("https://idp|person-7", before=wall(), until=wall() + 3600)
        data = (tmp_path / "journal").read_bytes()
        assert b"secret-session-id" not in data
        assert b"person-7" not in data
        assert _hash("secret-session-id").encode() in data
        assert _hash("https://idp|person-7").encode() in data

    def test_compacted_once_cluster_has_it(
        self, make: Factory, clocks: tuple[Clock, Clock], tmp_path: Path
    ) -> None:
        """With the cluster up, each revocation is journaled and dropped at the next poll."""
        wall, _ = clocks
        store = make(journal=RevocationJournal(directory=tmp_path))
        store.revoke_session("sid-1", until=wall() + 3600)
        assert (tmp_path / "journal").stat().st_size > 0
        store.sync()
        assert (tmp_path / "journal").stat().st_size == 0


class TestJournalUnwritable:
    def test_not_durable_when_cluster_away_too(
        self, make: Factory, clocks: tuple[Clock, Clock], tmp_path: Path
    ) -> None:
        """Full disk and no cluster: refused here at once, queued, but the caller is told it
        is in memory only (RevocationNotDurable), and the failure is counted."""
        wall, _ = clocks
        store = make(url=_dead_url(), timeout=1.0, journal=RevocationJournal(directory=tmp_path))
        _full_disk(store)
        with pytest.raises(RevocationNotDurable):
            store.revoke_session("sid-1", until=wall() + 3600)
        assert store.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())
        assert store.pending == 1
        assert ("gateway_revocation_journal_failures_total", {}, 1.0) in store.samples()

    def test_durable_in_cluster_succeeds_and_counts(
        self, make: Factory, clocks: tuple[Clock, Clock], tmp_path: Path
    ) -> None:
        """Full disk but the cluster takes the write: the revocation is durable there, the
        caller sees success, and the journal failure is counted."""
        wall, _ = clocks
        store = make(journal=RevocationJournal(directory=tmp_path))
        _full_disk(store)
        store.revoke_session("sid-1", until=wall() + 3600)
        other = make()
        other.sync()
        assert other.is_revoked(session_id="sid-1", user_id="i|s", issued_at=wall())
        assert ("gateway_revocation_journal_failures_total", {}, 1.0) in store.samples()


class TestLookupHash:
    """The request path's remembered hashes of session and user ids (no node needed)."""

    def test_same_digest_as_the_record(self) -> None:
        """A remembered hash is the one the record is keyed on."""
        for value in ("sid-1", "https://idp.example|s1", "é|ß"):
            assert _lookup_hash(value) == _hash(value)

    def test_second_lookup_is_remembered(self) -> None:
        """The same id looked up again is not hashed again."""
        _lookup_hash("remembered-sid")
        hits = _lookup_hash.cache_info().hits
        _lookup_hash("remembered-sid")
        assert _lookup_hash.cache_info().hits == hits + 1

    def test_bounded(self) -> None:
        """The remembered hashes never exceed LOOKUP_HASH_CACHE."""
        for n in range(LOOKUP_HASH_CACHE + 10):
            _lookup_hash(f"flood-{n}")
        info = _lookup_hash.cache_info()
        assert info.maxsize == LOOKUP_HASH_CACHE
        assert info.currsize <= LOOKUP_HASH_CACHE
