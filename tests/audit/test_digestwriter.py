"""The digest writer: one signed digest per interval, chained, surviving restarts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Record, SQLiteStore
from audit._chain import Keyring, event_hash, events_hash, record_hash, verify_record
from audit._digests import SQLiteDigestStore, digest_store_beside
from audit._digestwriter import DigestWriter
from audit.errors import StoreUnavailable
from tests.audit.conftest import fast_pipeline

START = 1_800_000_000.0  # a multiple of 300


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(n: int) -> Record:
    doc: dict[str, str | int] = {
        "@timestamp": "2027-01-15T08:00:00.000000Z",
        "event.id": f"id-{n:04d}",
        "event.action": "access_denied",
        "audit.schema_version": 1,
        "audit.category": "access_denied",
    }
    return Record(str(doc["event.id"]), str(doc["@timestamp"]), orjson.dumps(doc))


@pytest.fixture
def keys() -> Keyring:
    return Keyring(private=[Ed25519PrivateKey.generate()])


@pytest.fixture
def store(tmp_path: Path) -> SQLiteDigestStore:
    digests = SQLiteDigestStore(path=str(tmp_path / "audit.db"))
    digests.ensure_schema()
    return digests


_OPEN: list[DigestWriter] = []


@pytest.fixture(autouse=True)
def _close_writers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def writer(
    tmp_path: Path, keys: Keyring, store: object, clock: Clock, **kw: object
) -> DigestWriter:
    made = DigestWriter(
        directory=tmp_path / "chain",
        keyring=keys,
        store=store,  # type: ignore[arg-type]
        instance="gw-1",
        interval=300,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )
    _OPEN.append(made)
    return made


class TestIntervals:
    def test_one_digest_per_interval_with_its_events(
        self, tmp_path: Path, keys: Keyring, store: SQLiteDigestStore
    ) -> None:
        """Events of an interval are counted and hashed into its digest when it ends."""
        clock = Clock()
        w = writer(tmp_path, keys, store, clock)
        w([record(2), record(1)])
        clock.now += 300
        w(())
        [digest] = store.records(kind="digest")
        assert digest["events.count"] == 2
        assert [e[0] for e in digest["events.entries"]] == ["id-0001", "id-0002"]
        expected = {r.event_id: event_hash(r.document) for r in (record(1), record(2))}
        assert digest["events.hash"] == events_hash(expected)
        assert digest["interval.start"] == "2027-01-15T08:00:00.000000Z"
        assert verify_record(digest, keys)

    def test_empty_interval_still_gets_a_digest(
        self, tmp_path: Path, keys: Keyring, store: SQLiteDigestStore
    ) -> None:
        """Nothing shipped: the idle calls still close each interval with a zero count."""
        clock = Clock()
        w = writer(tmp_path, keys, store, clock)
        for _ in range(3):
            w(())
            clock.now += 300
        w(())
        digests = store.records(kind="digest")
        assert [d["events.count"] for d in digests] == [0, 0, 0]
        assert [d["record.seq"] for d in digests] == [0, 1, 2]

    def test_each_digest_names_the_previous(
        self, tmp_path: Path, keys: Keyring, store: SQLiteDigestStore
    ) -> None:
        """chain.previous is the hash of the digest before."""
        clock = Clock()
        w = writer(tmp_path, keys, store, clock)
        for n in range(3):
            w([record(n)])
            clock.now += 300
        w(())
        first, second, third = store.records(kind="digest")
        assert first["chain.previous"] == ""
        assert second["chain.previous"] == record_hash(first)
        assert third["chain.previous"] == record_hash(second)

    def test_full_interval_closes_early(
        self, tmp_path: Path, keys: Keyring, store: SQLiteDigestStore
    ) -> None:
        """Past max_events the digest is written at once, keeping it bounded."""
        w = writer(tmp_path, keys, store, Clock(), max_events=3)
        w([record(n) for n in range(4)])
        [digest] = store.records(kind="digest")
        assert digest["events.count"] == 4

    def test_a_batch_shipped_twice_counts_once(
        self, tmp_path: Path, keys: Keyring, store: SQLiteDigestStore
    ) -> None:
        """A replayed batch (after a crash) does not count its events twice."""
        clock = Clock()
        w = writer(tmp_path, keys, store, clock)
        w([record(1)])
        w([record(1)])
        clock.now += 300
        w(())
        assert store.records(kind="digest")[0]["events.count"] == 1


class TestRestart:
    def test_the_chain_continues_after_a_restart(
        self, tmp_path: Path, keys: Keyring, store: SQLiteDigestStore
    ) -> None:
        """A new writer on the same directory continues the open interval and the chain."""
        clock = Clock()
        first = writer(tmp_path, keys, store, clock)
        first([record(1)])
        clock.now += 300
        first([record(2)])  # closes seq 0, opens seq 1 with record 2
        first._journal.close()  # a crash: no close(), the spool lock goes with the process
        assert first._spool is not None
        first._spool.close()
        first._spool = None
        second = writer(tmp_path, keys, store, clock)
        second([record(3)])
        clock.now += 300
        second(())
        zero, one = store.records(kind="digest")
        assert one["record.seq"] == 1 and one["chain.previous"] == record_hash(zero)
        assert [e[0] for e in one["events.entries"]] == ["id-0002", "id-0003"]

    def test_close_writes_the_open_interval(
        self, tmp_path: Path, keys: Keyring, store: SQLiteDigestStore
    ) -> None:
        """Shutdown closes the open interval early instead of leaving its events undigested."""
        w = writer(tmp_path, keys, store, Clock())
        w([record(1)])
        _OPEN.remove(w)
        w.close()
        assert store.records(kind="digest")[0]["events.count"] == 1

    def test_another_instance_id_is_refused(
        self, tmp_path: Path, keys: Keyring, store: SQLiteDigestStore
    ) -> None:
        """A chain directory belongs to one instance."""
        w = writer(tmp_path, keys, store, Clock())
        w(())
        _OPEN.remove(w)
        w.close()
        other = DigestWriter(
            directory=tmp_path / "chain", keyring=keys, store=store, instance="gw-2"
        )
        with pytest.raises(ValueError, match="gw-1"):
            other(())


class FlakyStore(SQLiteDigestStore):
    def __init__(self, path: str) -> None:
        super().__init__(path=path)
        self.down = True

    def write(self, records: object) -> list:  # type: ignore[type-arg]
        if self.down:
            raise StoreUnavailable("down")
        return super().write(records)  # type: ignore[arg-type]


class TestStoreAway:
    def test_digests_wait_in_the_spool(self, tmp_path: Path, keys: Keyring) -> None:
        """With the store away digests stay spooled and are shipped once it answers."""
        store = FlakyStore(str(tmp_path / "audit.db"))
        store.ensure_schema()
        clock = Clock()
        w = writer(tmp_path, keys, store, clock)
        w([record(1)])
        clock.now += 300
        w(())
        assert w.pending() and store.records(kind="digest") == []
        store.down = False
        clock.now += 120  # past the retry delay
        w(())
        assert not w.pending()
        assert len(store.records(kind="digest")) == 1


class TestPipelineHook:
    def test_shipped_events_land_in_a_digest(self, tmp_path: Path, keys: Keyring) -> None:
        """Through the real pipeline, each stored event is in the digest written at close."""
        events = SQLiteStore(path=tmp_path / "audit.db")
        digests = digest_store_beside(events)
        w = DigestWriter(
            directory=tmp_path / "spool" / "chain", keyring=keys, store=digests, instance="gw-1"
        )
        pipeline = fast_pipeline(events, tmp_path / "spool", on_shipped=w)
        pipeline.open()
        for n in range(5):
            pipeline.emit({"event.action": "access_denied", "labels": {"seq": str(n)}})
        assert pipeline.wait_idle(10)
        pipeline.close()
        w.close()
        [digest] = digests.records(kind="digest")
        assert digest["events.count"] == 5
        from audit import Scope  # noqa: PLC0415

        stored = {e["event.id"]: event_hash(e) for e in events.search(Scope(), size=10)}
        assert digest["events.hash"] == events_hash(stored)
