"""verify against the real node and SQLite: tampering as a store administrator would do it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from audit import AuditStore, OpenSearchStore, Scope, SQLiteStore
from audit.__main__ import main
from audit._chain import Keyring, events_hash, sign_record
from audit._digests import DigestStore, digest_store_beside
from audit._digestwriter import DigestWriter, digest_record_id
from audit._verify import Verifier, VerifyReport
from audit.events import index_name, parse_timestamp
from tests.audit.conftest import fast_pipeline
from tools.opensearch_node import Node

START = 1_800_000_000.0
INSTANCE = "gw-1"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Admin(Protocol):
    """What someone with the store's own credentials can do, bypassing the gateway."""

    def delete_event(self, event_id: str) -> None: ...
    def edit_event(self, event_id: str, name: str, value: str) -> None: ...
    def delete_digest(self, record_id: str) -> None: ...
    def put_digest(self, record: dict[str, Any]) -> None: ...


class OpenSearchAdmin:
    def __init__(self, client: OpenSearch, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    def _where(self, pattern: str, field: str, value: str) -> tuple[str, str]:
        self.client.indices.refresh(index=pattern)
        hits = self.client.search(
            index=pattern, body={"query": {"term": {field: value}}, "size": 1}
        )["hits"]["hits"]
        return hits[0]["_index"], hits[0]["_id"]

    def delete_event(self, event_id: str) -> None:
        index, _id = self._where(f"{self.prefix}audit-events-*", "event.id", event_id)
        self.client.delete(index=index, id=_id, refresh=True)

    def edit_event(self, event_id: str, name: str, value: str) -> None:
        index, _id = self._where(f"{self.prefix}audit-events-*", "event.id", event_id)
        self.client.update(index=index, id=_id, body={"doc": {name: value}}, refresh=True)

    def delete_digest(self, record_id: str) -> None:
        index, _id = self._where(f"{self.prefix}audit-digests-*", "record.id", record_id)
        self.client.delete(index=index, id=_id, refresh=True)

    def put_digest(self, record: dict[str, Any]) -> None:
        index, _id = self._where(f"{self.prefix}audit-digests-*", "record.id", record["record.id"])
        self.client.index(index=index, id=_id, body=record, refresh=True)


class SQLiteAdmin:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)

    def delete_event(self, event_id: str) -> None:
        self.db.execute("DELETE FROM audit_events WHERE event_id = ?", (event_id,))

    def edit_event(self, event_id: str, name: str, value: str) -> None:
        column = name.replace(".", "_")
        self.db.execute(
            f"UPDATE audit_events SET {column} = ? WHERE event_id = ?",  # noqa: S608
            (value, event_id),
        )

    def delete_digest(self, record_id: str) -> None:
        self.db.execute("DELETE FROM audit_digests WHERE record_id = ?", (record_id,))

    def put_digest(self, record: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE audit_digests SET document = ? WHERE record_id = ?",
            (orjson.dumps(record).decode(), record["record.id"]),
        )


@dataclass
class Log:
    """A log written through the real pipeline: digests #0 (3 events), #1 (2), #2 (0)."""

    events: AuditStore
    digests: DigestStore
    keys: Keyring
    admin: Admin
    ids: list[list[str]]

    def verify(self, keys: Keyring | None = None) -> VerifyReport:
        verifier = Verifier(events=self.events, digests=self.digests, keyring=keys or self.keys)
        return verifier.verify()

    def digest(self, seq: int) -> dict[str, Any]:
        found = self.digests.get(digest_record_id(INSTANCE, seq))
        assert found is not None
        return found


#: What every test event carries besides its action (minimisation changes both fields).
AGENT = {"source.ip": "192.0.2.77", "user_agent.original": "Mozilla/5.0"}


def ship(pipeline: Any, writer: DigestWriter, count: int, clock: Clock) -> None:
    """Emit ``count`` events, wait until stored, then end the interval."""
    before = writer.digests_written
    for n in range(count):
        pipeline.emit({"event.action": "access_denied", **AGENT, "labels": {"n": str(n)}})
    assert pipeline.wait_idle(10)
    clock.now += 300
    deadline = time.monotonic() + 10
    while writer.digests_written == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.digests_written == before + 1


def write_log(events: AuditStore, spool: Path, keys: Keyring, admin: Admin) -> Log:
    events.ensure_schema()
    digests = digest_store_beside(events)
    clock = Clock()
    writer = DigestWriter(
        directory=spool / "chain", keyring=keys, store=digests, instance=INSTANCE, clock=clock
    )
    pipeline = fast_pipeline(events, spool, on_shipped=writer)
    pipeline.open()
    try:
        ship(pipeline, writer, 3, clock)
        ship(pipeline, writer, 2, clock)
    finally:
        pipeline.close()
        writer.close()
    digests.refresh()
    events.refresh()  # OpenSearch: what the pipeline wrote becomes searchable now
    log = Log(events, digests, keys, admin, [])
    log.ids = [[e[0] for e in log.digest(seq)["events.entries"]] for seq in range(3)]
    return log


@pytest.fixture(params=["opensearch", "sqlite"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    keys = Keyring(private=[Ed25519PrivateKey.generate()])
    store: AuditStore
    admin: Admin
    if request.param == "opensearch":
        node: Node = request.getfixturevalue("opensearch_node")
        prefix: str = request.getfixturevalue("index_prefix")
        client: OpenSearch = request.getfixturevalue("opensearch")
        store = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
        admin = OpenSearchAdmin(client, prefix)
    else:
        store = SQLiteStore(path=tmp_path / "audit.db")
        admin = SQLiteAdmin(tmp_path / "audit.db")
    yield write_log(store, tmp_path / "spool", keys, admin)
    store.close()


def statuses(report: VerifyReport) -> list[str]:
    return [interval.status for interval in report.intervals]


class TestUntouched:
    def test_verifies_intact(self, log: Log) -> None:
        """An untouched log: every interval intact, no finding."""
        report = log.verify()
        assert statuses(report) == ["intact", "intact", "intact"]
        assert [len(ids) for ids in log.ids] == [3, 2, 0]
        assert report.ok


class TestTampering:
    def test_deleted_event(self, log: Log) -> None:
        """Deleting one event is reported as missing, with its id, in its interval only."""
        gone = log.ids[0][1]
        log.admin.delete_event(gone)
        report = log.verify()
        assert statuses(report) == ["events_missing", "intact", "intact"]
        assert report.intervals[0].findings[0].event_ids == (gone,)
        assert not report.ok

    def test_edited_field(self, log: Log) -> None:
        """Editing one field of one event is reported as altered, with its id."""
        edited = log.ids[1][0]
        log.admin.edit_event(edited, "url.path", "/nothing-to-see")
        report = log.verify()
        assert statuses(report) == ["intact", "events_altered", "intact"]
        assert report.intervals[1].findings[0].event_ids == (edited,)

    def test_deleted_digest(self, log: Log) -> None:
        """Deleting a digest record is reported as a missing digest, by sequence number."""
        log.admin.delete_digest(digest_record_id(INSTANCE, 1))
        report = log.verify()
        assert statuses(report) == ["intact", "digest_missing", "intact"]
        assert report.intervals[1].seq == 1

    def test_digest_forged_with_a_foreign_key(self, log: Log) -> None:
        """An event deleted and its digest rewritten and signed with another key: the forged
        digest's signature is invalid and the next digest no longer chains to it."""
        gone = log.ids[1][0]
        log.admin.delete_event(gone)
        forged = dict(log.digest(1))
        entries = [e for e in forged["events.entries"] if e[0] != gone]
        forged["events.entries"] = entries
        forged["events.count"] = len(entries)
        forged["events.hash"] = events_hash({e[0]: e[1] for e in entries})
        foreign = Keyring(private=[Ed25519PrivateKey.generate()])
        log.admin.put_digest(sign_record(forged, foreign))
        report = log.verify()
        assert statuses(report) == ["intact", "signature_invalid", "chain_broken"]
        assert "unknown key" in report.intervals[1].findings[0].detail

    def test_digest_forged_under_our_key_id(self, log: Log) -> None:
        """A forgery that claims our key id does not verify under our key."""
        forged = sign_record(dict(log.digest(0)), Keyring(private=[Ed25519PrivateKey.generate()]))
        forged["key.id"] = log.keys.signing_key_id
        log.admin.put_digest(forged)
        report = log.verify()
        assert statuses(report)[0] == "signature_invalid"
        assert "does not verify" in report.intervals[0].findings[0].detail


class TestAnchor:
    def test_deleted_newest_digest_caught_by_the_anchor(self, log: Log) -> None:
        """Deleting the newest digest leaves no trace in the store; the heads kept by an
        earlier verify run catch it."""
        heads = log.verify().heads
        assert heads[INSTANCE][0] == 2
        log.admin.delete_digest(digest_record_id(INSTANCE, 2))
        verifier = Verifier(events=log.events, digests=log.digests, keyring=log.keys)
        soon = parse_timestamp(log.digest(1)["interval.end"]) + timedelta(seconds=300)
        assert verifier.verify(now=soon).ok  # what the store alone cannot show yet
        report = verifier.verify(anchor=heads, now=soon)
        assert [f.kind for f in report.other] == ["digest_missing"]
        assert not report.ok

    def test_chain_stopping_without_shutdown_is_stale(self, log: Log) -> None:
        """The shutdown digest deleted: the chain stops early, reported once it is overdue."""
        log.admin.delete_digest(digest_record_id(INSTANCE, 2))
        verifier = Verifier(events=log.events, digests=log.digests, keyring=log.keys)
        end = log.digest(1)["interval.end"]
        soon = parse_timestamp(end) + timedelta(seconds=300)
        assert verifier.verify(now=soon).ok  # within two intervals: may still be running
        later = verifier.verify(now=parse_timestamp(end) + timedelta(hours=1))
        assert [f.kind for f in later.other] == ["digest_missing"]
        assert "stops at digest #1" in later.other[0].detail

    def test_replaced_anchored_digest_is_a_finding(self, log: Log) -> None:
        """A head digest re-signed (same content, other key) no longer matches the anchor."""
        heads = log.verify().heads
        forged = sign_record(log.digest(2), Keyring(private=[Ed25519PrivateKey.generate()]))
        log.admin.put_digest(forged)
        verifier = Verifier(events=log.events, digests=log.digests, keyring=log.keys)
        kinds = [f.kind for f in verifier.verify(anchor=heads).other]
        assert kinds == ["chain_broken"]


class TestWholeIndex:
    def test_deleted_daily_index(
        self, opensearch_node: Node, opensearch: OpenSearch, index_prefix: str, tmp_path: Path
    ) -> None:
        """Deleting the whole daily index: every event of it missing, the index named."""
        store = OpenSearchStore(url=opensearch_node.url, index_prefix=index_prefix, replicas=0)
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        log = write_log(store, tmp_path / "spool", keys, OpenSearchAdmin(opensearch, index_prefix))
        try:
            stored = store.search(Scope(event_ids=log.ids[0][:1]))
            index = index_name(index_prefix, stored[0]["@timestamp"])
            opensearch.indices.delete(index=index)
            report = log.verify()
            assert statuses(report) == ["events_missing", "events_missing", "intact"]
            assert set(report.intervals[0].findings[0].event_ids) == set(log.ids[0])
            assert f"daily index(es) gone: {index}" in report.intervals[0].findings[0].detail
        finally:
            store.close()


class TestRotation:
    def test_old_intervals_verify_after_rotation(self, tmp_path: Path) -> None:
        """A new key signs after rotation; the old key's digests verify while it is published,
        and fail once it is not."""
        events = SQLiteStore(path=tmp_path / "audit.db")
        events.ensure_schema()
        digests = digest_store_beside(events)
        old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        clock = Clock()
        for keys in (Keyring(private=[old]), Keyring(private=[new, old])):
            writer = DigestWriter(
                directory=tmp_path / "chain", keyring=keys, store=digests, clock=clock
            )
            writer(())
            clock.now += 300
            writer(())  # closes one interval with this keyring
            writer._journal.close()  # stop without closing another interval
            assert writer._spool is not None
            writer._spool.close()
        both = Keyring(private=[new, old])
        report = Verifier(events=events, digests=digests, keyring=both).verify()
        assert statuses(report) == ["intact", "intact"]
        assert {r["key.id"] for r in digests.records(kind="digest")} == set(both.key_ids())
        only_new = Keyring.from_jwks(Keyring(private=[new]).jwks_json())
        report = Verifier(events=events, digests=digests, keyring=only_new).verify()
        assert statuses(report) == ["signature_invalid", "intact"]
        events.close()


class TestCommand:
    def test_exit_status_and_audit_event(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """verify exits 0 on an intact log, 1 after tampering, and records audit_verify."""
        db = tmp_path / "audit.db"
        events = SQLiteStore(path=db)
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        log = write_log(events, tmp_path / "spool", keys, SQLiteAdmin(db))
        jwks = tmp_path / "audit-keys.json"
        jwks.write_bytes(keys.jwks_json())
        argv = ["--sqlite", str(db), "--user", "iss|sec", "--role", "security_officer"]
        assert main([*argv, "verify", "--keys", str(jwks)]) == 0
        assert capsys.readouterr().out.count(": intact") == 3
        log.admin.delete_event(log.ids[0][0])
        assert main([*argv, "verify", "--keys", str(jwks), "--format", "json"]) == 1
        lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        intervals = [line["status"] for line in lines if "status" in line]  # notes: "kind"
        assert intervals == ["events_missing", "intact", "intact"]
        verifies = events.search(Scope(actions=["audit_verify"]), size=10)
        assert [e["event.outcome"] for e in verifies] == ["success", "failure"]
        events.close()

    def test_anchor_file_is_kept_between_runs(self, tmp_path: Path) -> None:
        """--anchor keeps the heads after a clean run; the next run reports a deleted head."""
        db = tmp_path / "audit.db"
        events = SQLiteStore(path=db)
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        log = write_log(events, tmp_path / "spool", keys, SQLiteAdmin(db))
        jwks = tmp_path / "audit-keys.json"
        jwks.write_bytes(keys.jwks_json())
        anchor = tmp_path / "heads.json"
        argv = ["--sqlite", str(db), "--user", "iss|sec", "--role", "security_officer"]
        command = [*argv, "verify", "--keys", str(jwks), "--anchor", str(anchor)]
        assert main(command) == 0
        assert orjson.loads(anchor.read_bytes())[INSTANCE]["seq"] == 2
        log.admin.delete_digest(digest_record_id(INSTANCE, 2))
        assert main(command) == 1
        events.close()

    def test_refused_without_a_security_role(self, tmp_path: Path) -> None:
        """A role that may not verify gets exit status 3."""
        db = tmp_path / "audit.db"
        SQLiteStore(path=db).ensure_schema()
        jwks = tmp_path / "keys.json"
        jwks.write_bytes(Keyring(private=[Ed25519PrivateKey.generate()]).jwks_json())
        argv = ["--sqlite", str(db), "--user", "iss|t", "--role", "teacher"]
        assert main([*argv, "verify", "--keys", str(jwks)]) == 3


class CountingDigests:
    """The log's digest store, remembering every digest that ``records`` handed out."""

    def __init__(self, inner: DigestStore) -> None:
        self.inner = inner
        self.read: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def records(self, **query: Any) -> list[dict[str, Any]]:
        found = self.inner.records(**query)
        self.read += [int(r["record.seq"]) for r in found if r["record.kind"] == "digest"]
        return found


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class TestWindow:
    """Digests #0 [S, S+300], #1 [S+300, S+600], #2 [S+600, S+600] (the shutdown digest)."""

    def verify(
        self, log: Log, since: datetime | None, until: datetime | None
    ) -> tuple[VerifyReport, list[int]]:
        digests = CountingDigests(log.digests)
        verifier = Verifier(events=log.events, digests=digests, keyring=log.keys)
        return verifier.verify(since=since, until=until), digests.read

    def test_from_reads_only_the_window(self, log: Log) -> None:
        """--from after #0: #1 and #2 reported, and #0 is not read by the time query."""
        report, read = self.verify(log, at(START + 400), None)
        assert [i.seq for i in report.intervals] == [1, 2]
        assert report.ok
        assert 0 not in read

    def test_to_includes_the_interval_across_it(self, log: Log) -> None:
        """--to inside #1: #0 and #1 (which runs past --to), not #2."""
        report, read = self.verify(log, None, at(START + 400))
        assert [i.seq for i in report.intervals] == [0, 1]
        assert 2 not in read

    def test_window_inside_one_interval(self, log: Log) -> None:
        """A window shorter than an interval still finds the interval around it."""
        report, _read = self.verify(log, at(START + 350), at(START + 360))
        assert [(i.seq, i.status) for i in report.intervals] == [(1, "intact")]

    def test_replaced_predecessor_of_the_window_breaks_the_link(self, log: Log) -> None:
        """#0 (before --from) re-signed with changed content under our key: #1, the window's
        first digest, no longer chains to it."""
        forged = dict(log.digest(0))
        forged["events.count"] = 2
        log.admin.put_digest(sign_record(forged, log.keys))
        report, _read = self.verify(log, at(START + 400), None)
        assert statuses(report) == ["chain_broken", "intact"]
        assert report.intervals[0].seq == 1

    def test_deleted_predecessor_of_the_window_is_missing(self, log: Log) -> None:
        """#0 (before --from) deleted: reported as a missing digest although outside."""
        log.admin.delete_digest(digest_record_id(INSTANCE, 0))
        report, _read = self.verify(log, at(START + 400), None)
        assert [(i.seq, i.status) for i in report.intervals] == [
            (0, "digest_missing"),
            (1, "intact"),
            (2, "intact"),
        ]
        assert not report.ok

    def test_deleted_event_outside_the_window_is_not_read(self, log: Log) -> None:
        """An event of #0 deleted: a window from #1 on does not look at it."""
        log.admin.delete_event(log.ids[0][0])
        report, _read = self.verify(log, at(START + 400), None)
        assert report.ok
        assert not self.verify(log, None, None)[0].ok

    def test_heads_are_the_chains_newest_even_with_a_window(self, log: Log) -> None:
        """The anchor's heads come from the whole chain, not from the window's end."""
        report, _read = self.verify(log, None, at(START + 100))
        assert report.heads[INSTANCE][0] == 2
