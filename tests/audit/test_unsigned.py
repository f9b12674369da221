"""verify's look for events no digest lists, on the real node and SQLite.

Each test drives one signing chain by hand on a fake clock a day ago, so event times and the
chain's intervals agree, then tampers as someone who can write to the store would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from audit import AuditStore, ChainedStoreSink, OpenSearchStore, Record, Scope, SQLiteStore
from audit.__main__ import main
from audit._chain import Keyring
from audit._digests import DigestStore, digest_store_beside
from audit._digestwriter import DigestWriter
from audit._migrate import migrate_indices
from audit._search import Requester, backbone_event
from audit._verify import Verifier, VerifyReport
from audit.events import INDEX_BASE, Action, index_name
from audit.processors import audit_processors, render_json, run_chain
from tests.audit.test_migrate import old_template
from tools.opensearch_node import Node

#: A day ago, on a digest interval's boundary: the chain's intervals cover the events' times.
START = (time.time() // 300) * 300 - 86_400


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Chain:
    """An event store and one gateway chain signing what is stored, on a fake clock."""

    def __init__(self, store: AuditStore, directory: Path, *, schema: bool = True) -> None:
        if schema:
            store.ensure_schema()
        self.store = store
        self.digests: DigestStore = digest_store_beside(store)
        self.keys = Keyring(private=[Ed25519PrivateKey.generate()])
        self.clock = Clock()
        self.writer = DigestWriter(
            directory=directory, keyring=self.keys, store=self.digests, instance="gw-1",
            clock=self.clock,
        )  # fmt: skip
        self._processors = audit_processors(render=False)

    def record(
        self, action: str = "access_denied", *, when: float | None = None, **extra: Any
    ) -> Record:
        event = {
            "event.action": action,
            "@timestamp": iso(self.clock.now if when is None else when),
            "source.ip": "192.0.2.7",
            **extra,
        }
        doc = run_chain(self._processors, event)
        return Record(str(doc["event.id"]), str(doc["@timestamp"]), render_json(None, "", doc))

    def emit(self, count: int = 1, *, signed: bool = True, **fields: Any) -> list[str]:
        """Store ``count`` events at the clock's time; the chain lists them when ``signed``."""
        records = [self.record(**fields) for _ in range(count)]
        assert {r.status for r in self.store.write(records)} == {"stored"}
        if signed:
            self.writer(records)
        return [r.event_id for r in records]

    def tick(self, seconds: float = 300) -> None:
        """Time passes; the chain closes the intervals that ended."""
        self.clock.now += seconds
        self.writer(())

    def inject(
        self, action: str = "login_success", *, when: float | None = None, **extra: Any
    ) -> str:
        """An event written straight into the store: no chain ever saw it."""
        record = self.record(action, when=when, **extra)
        assert self.store.write([record])[0].status == "stored"
        return record.event_id

    def verify(self, **options: Any) -> VerifyReport:
        self.store.refresh()
        self.digests.refresh()
        verifier = Verifier(events=self.store, digests=self.digests, keyring=self.keys)
        return verifier.verify(**options)

    def drop(self) -> None:
        """Let go of a chain left running (its files closed, no shutdown digest)."""
        if self.writer._spool is not None:
            self.writer._journal.close()
            self.writer._spool.close()
        self.store.close()

    def signed_log(self) -> list[str]:
        """Two intervals of events (3, then 2), then a shutdown: a closed chain."""
        ids = self.emit(3)
        self.tick()
        ids += self.emit(2)
        self.tick()
        self.writer.close()
        return ids


@pytest.fixture(params=["opensearch", "sqlite"])
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chain]:
    store: AuditStore
    if request.param == "opensearch":
        node: Node = request.getfixturevalue("opensearch_node")
        prefix: str = request.getfixturevalue("index_prefix")
        store = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
    else:
        store = SQLiteStore(path=tmp_path / "audit.db")
    made = Chain(store, tmp_path / "chain")
    yield made
    made.drop()


def unsigned(report: VerifyReport) -> list[tuple[str, ...]]:
    return [f.event_ids for f in report.other if f.kind == "events_unsigned"]


def kinds(report: VerifyReport) -> tuple[list[str], list[str]]:
    return [f.kind for f in report.other], [n.kind for n in report.notes]


class TestClean:
    def test_clean_store_reports_nothing(self, chain: Chain) -> None:
        """A signed log: no finding, no note, and no hour read id by id (counts agree)."""
        chain.signed_log()
        report = chain.verify()
        assert report.ok
        assert kinds(report) == ([], [])
        assert report.unsigned is not None
        assert report.unsigned.hours >= 1
        assert report.unsigned.hours_read == 0


class TestInjected:
    def test_injected_event_is_reported_with_its_id(self, chain: Chain) -> None:
        """A login_success written into a signed period is an unsigned-event finding."""
        chain.signed_log()
        injected = chain.inject(when=START + 60)
        report = chain.verify()
        assert unsigned(report) == [(injected,)]
        assert not report.ok
        detail = report.other[0].detail
        assert f"{injected} at " in detail
        assert "(login_success)" in detail
        assert "192.0.2.7" not in detail  # no personal data beyond ids, times and actions

    def test_copy_under_a_new_id_is_reported(self, chain: Chain) -> None:
        """A signed event copied under a new id: the copy is reported, the original is not."""
        original = chain.signed_log()[0]
        chain.store.refresh()
        [doc] = chain.store.search(Scope(event_ids=[original]))
        copy_id = str(uuid.uuid4())
        copied = {**doc, "event.id": copy_id}
        stored = chain.store.write([Record(copy_id, doc["@timestamp"], orjson.dumps(copied))])
        assert stored[0].status == "stored"
        report = chain.verify()
        assert unsigned(report) == [(copy_id,)]
        assert [i.status for i in report.intervals] == ["intact"] * 3

    def test_event_dated_in_the_future_is_reported(self, chain: Chain) -> None:
        """An event dated after now is not 'pending': it would stay so until then."""
        chain.signed_log()
        injected = chain.inject(when=time.time() + 3600)
        assert unsigned(chain.verify()) == [(injected,)]

    def test_names_the_index_or_day(self, chain: Chain) -> None:
        """The finding names where the event is: its daily index, or its day on SQLite."""
        chain.signed_log()
        chain.inject(when=START + 60)
        detail = chain.verify().other[0].detail
        day = iso(START + 60)[:10]
        if isinstance(chain.store, OpenSearchStore):
            assert f"in {index_name(chain.store.index_prefix, iso(START + 60))} " in detail
        else:
            assert f"in {day} " in detail


class TestOpenTail:
    def test_events_after_the_last_digest_are_pending(self, chain: Chain) -> None:
        """Events stored in a running chain's open interval are pending, not findings, within
        the grace; a day later (the chain never signed them) they are findings."""
        chain.emit(3)
        chain.tick()
        tail = chain.emit(2)  # stored; the interval they are in is still open
        now = at(chain.clock.now + 30)
        report = chain.verify(now=now)
        assert report.ok
        assert kinds(report) == ([], ["unsigned_pending"])
        assert report.unsigned is not None and report.unsigned.pending == 2
        later = chain.verify(now=now + timedelta(days=1))
        assert [set(ids) for ids in unsigned(later)] == [set(tail)]


class TestWithoutKey:
    def test_cli_event_without_key_is_a_note(self, chain: Chain) -> None:
        """A CLI run without a signing key marks its backbone event: said, not a finding;
        with --signed-since before it, a finding."""
        chain.emit(3)
        chain.tick()
        sink = ChainedStoreSink(store=chain.store)
        who = Requester("iss|sec", frozenset({"security_officer"}), None)
        event = backbone_event(Action.AUDIT_VERIFY, who, outcome="success", labels={})
        sink.emit({**event, "@timestamp": iso(chain.clock.now + 10)})  # the chain covers it
        chain.tick()
        chain.writer.close()
        now = at(chain.clock.now + 3600)
        report = chain.verify(now=now)
        assert kinds(report) == ([], ["unsigned_keyless"])
        assert report.notes[0].event_ids[0] in report.notes[0].detail
        strict = chain.verify(now=now, signed_since=at(START))
        assert len(unsigned(strict)) == 1

    def test_the_mark_does_not_excuse_an_access_event(self, chain: Chain) -> None:
        """The mark on a non-backbone event (the CLIs write none) excuses nothing."""
        chain.signed_log()
        forged = chain.inject("access_denied", when=START + 60, labels={"audit_signing": "off"})
        assert unsigned(chain.verify()) == [(forged,)]

    def test_event_from_before_any_chain_is_uncovered(self, chain: Chain) -> None:
        """An event from a time no chain signed is a note (a gateway without a key, or an
        injection verify cannot tell from one); with --signed-since before it, a finding."""
        chain.signed_log()
        old = chain.inject(when=START - 86_400)
        report = chain.verify()
        assert report.ok
        assert kinds(report) == ([], ["unsigned_uncovered"])
        assert report.notes[0].event_ids == (old,)
        strict = chain.verify(signed_since=at(START - 2 * 86_400))
        assert unsigned(strict) == [(old,)]


class TestWindow:
    def test_only_the_window_is_looked_at(self, chain: Chain) -> None:
        """--from/--to: an event injected inside the window is reported, one outside not."""
        chain.emit(2)
        for _ in range(24):  # two hours of intervals
            chain.tick()
        chain.writer.close()
        inside = chain.inject(when=START + 60)
        chain.inject(when=START + 5400)
        report = chain.verify(since=at(START), until=at(START + 1800))
        assert unsigned(report) == [(inside,)]

    def test_event_listed_after_the_window_is_not_reported(self, chain: Chain) -> None:
        """An event stored now but listed by a digest hours later (a replayed spool) is found
        in the digests after --to, not reported."""
        chain.writer(())  # the chain signs from START on: the event's time is covered
        record = chain.record(when=START + 60)
        chain.store.write([record])
        for _ in range(36):  # three hours of empty intervals
            chain.tick()
        chain.writer([record])  # the shipper signs it only now
        chain.tick()
        chain.writer.close()
        report = chain.verify(since=at(START), until=at(START + 600))
        assert kinds(report) == ([], [])
        assert report.unsigned is not None and report.unsigned.lookahead_digests > 0

    def test_per_instance_does_not_look(self, chain: Chain) -> None:
        """--instance: events name no chain, so the look is not made (and said so)."""
        chain.signed_log()
        chain.inject(when=START + 60)
        report = chain.verify(instance="gw-1")
        assert report.unsigned is None
        assert "not looked for" in report.summary()


@pytest.fixture
def os_chain(opensearch_node: Node, index_prefix: str, tmp_path: Path) -> Iterator[Chain]:
    store = OpenSearchStore(url=opensearch_node.url, index_prefix=index_prefix, replicas=0)
    made = Chain(store, tmp_path / "chain")
    yield made
    made.drop()


class TestNoEventId:
    def test_document_without_an_event_id_is_reported(
        self, os_chain: Chain, opensearch: OpenSearch
    ) -> None:
        """A document with no event.id at all (OpenSearch's mapping allows it) is reported."""
        os_chain.signed_log()
        assert isinstance(os_chain.store, OpenSearchStore)
        index = index_name(os_chain.store.index_prefix, iso(START))
        body = {"@timestamp": iso(START + 60), "event.action": "login_success"}
        opensearch.index(index=index, body=body, refresh=True)
        report = os_chain.verify()
        assert [f.kind for f in report.other] == ["events_unsigned"]
        assert "1 document(s) without an event.id" in report.other[0].detail


class TestKept:
    """Retention's moves on OpenSearch: spared events copied to ``<day>-kept``, same ids."""

    @staticmethod
    def copy_days(client: OpenSearch, prefix: str) -> list[str]:
        """Copy every daily index's events to its ``-kept`` index; the days copied."""
        client.indices.refresh(index=f"{prefix}audit-events-*")
        days = sorted(client.indices.get(index=f"{prefix}audit-events-*"))
        for day in days:
            hits = client.search(index=day, body={"size": 100})["hits"]["hits"]
            for hit in hits:
                client.index(index=f"{day}-kept", id=hit["_id"], body=hit["_source"])
            client.indices.refresh(index=f"{day}-kept")
        return days

    def test_moved_events_are_not_reported(self, os_chain: Chain, opensearch: OpenSearch) -> None:
        """A day moved whole to -kept verifies clean; an event injected there is reported."""
        os_chain.signed_log()
        assert isinstance(os_chain.store, OpenSearchStore)
        for day in self.copy_days(opensearch, os_chain.store.index_prefix):
            opensearch.indices.delete(index=day)
        day = index_name(os_chain.store.index_prefix, iso(START))
        injected = os_chain.inject(when=START + 60)
        forged = os_chain.record("login_success", when=START + 90)
        opensearch.index(
            index=f"{day}-kept", id=forged.event_id, body=forged.document, refresh=True
        )
        report = os_chain.verify()
        assert sorted(unsigned(report)) == sorted([(forged.event_id,), (injected,)])
        assert [i.status for i in report.intervals] == ["intact"] * 3

    def test_move_in_progress_is_not_reported(
        self, os_chain: Chain, opensearch: OpenSearch
    ) -> None:
        """Between the copy and the drop each event is stored twice: no finding, the copies
        counted."""
        ids = os_chain.signed_log()
        assert isinstance(os_chain.store, OpenSearchStore)
        self.copy_days(opensearch, os_chain.store.index_prefix)
        report = os_chain.verify()
        assert report.ok
        assert [i.status for i in report.intervals] == ["intact"] * 3
        assert report.unsigned is not None
        assert sorted(report.unsigned.copies) == sorted(ids)

    def test_altered_copy_under_the_same_id_is_reported(
        self, os_chain: Chain, opensearch: OpenSearch
    ) -> None:
        """A copy under a signed event's own id, in another index, with one field changed:
        the event is reported altered whichever copy a search finds first."""
        ids = os_chain.signed_log()
        assert isinstance(os_chain.store, OpenSearchStore)
        os_chain.store.refresh()
        [doc] = os_chain.store.search(Scope(event_ids=[ids[0]]))
        forged = {**doc, "event.outcome": "success"}
        index = f"{index_name(os_chain.store.index_prefix, doc['@timestamp'])}-kept"
        opensearch.index(index=index, id=ids[0], body=forged, refresh=True)
        report = os_chain.verify()
        assert report.intervals[0].status == "events_altered"
        assert report.intervals[0].findings[0].event_ids == (ids[0],)


class TestMigrate:
    def test_migrated_events_are_not_reported(
        self, opensearch_node: Node, opensearch: OpenSearch, index_prefix: str, tmp_path: Path
    ) -> None:
        """Daily indices of an older template, upgraded by migrate (each event written back
        under its id): every interval intact, nothing unsigned, no hour read id by id."""
        opensearch.indices.put_index_template(
            name=f"{index_prefix}{INDEX_BASE}", body=old_template(index_prefix)
        )
        store = OpenSearchStore(url=opensearch_node.url, index_prefix=index_prefix, replicas=0)
        chain = Chain(store, tmp_path / "chain", schema=False)
        try:
            chain.signed_log()
            report = migrate_indices(opensearch, prefix=index_prefix)
            assert report.ok and {i.status for i in report.indices} == {"migrated"}
            after = chain.verify()
            assert after.ok
            assert [i.status for i in after.intervals] == ["intact"] * 3
            assert after.unsigned is not None and after.unsigned.hours_read == 0
        finally:
            chain.drop()


class TestCommand:
    def test_exit_status_and_summary(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The CLI exits 1 on an injected event, prints it and counts it in the summary."""
        db = tmp_path / "audit.db"
        chain = Chain(SQLiteStore(path=db), tmp_path / "chain")
        chain.signed_log()
        jwks = tmp_path / "keys.json"
        jwks.write_bytes(chain.keys.jwks_json())
        argv = ["--sqlite", str(db), "--user", "iss|sec", "--role", "security_officer"]
        command = [*argv, "verify", "--keys", str(jwks)]
        assert main(command) == 0
        assert capsys.readouterr().err.strip().endswith("0 finding(s), 0 unsigned event(s)")
        injected = chain.inject(when=START + 60)
        assert main(command) == 1
        out, err = capsys.readouterr()
        assert f"events_unsigned: 1 event(s) in {iso(START)[:10]} that no digest lists:" in out
        assert injected in out
        # the first run's own event (written without a key, a moment ago) is pending
        assert err.strip() == (
            "3 interval(s), 1 finding(s), 1 unsigned event(s);"
            " not findings: 1 pending (newer than the last digests)"
        )
        assert main([*command, "--format", "json"]) == 1
        lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        found = [line for line in lines if line.get("kind") == "events_unsigned"]
        assert found[0]["event_ids"] == [injected] and found[0]["finding"] is True
        chain.drop()
