"""audit/_clisink.py: the CLIs' events stored at once and signed into a chain of their own."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from audit import ChainedStoreSink, Keyring, OpenSearchStore, Scope, SQLiteStore
from audit.__main__ import main
from audit._clisink import cli_instance_id
from audit._digests import digest_store_beside
from audit._verify import Verifier
from tests.audit.test_verify import OpenSearchAdmin, SQLiteAdmin, statuses
from tools.opensearch_node import Node

OFFICER = ["--user", "iss|sec", "--role", "security_officer"]


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def event(n: int) -> dict[str, object]:
    return {"event.action": "audit_search", "event.outcome": "success", "labels": {"n": str(n)}}


class TestSigning:
    def test_each_event_lands_in_a_closed_signed_digest(self, tmp_path: Path) -> None:
        """One emit: the event is stored and listed in a shutdown digest that verifies."""
        store = SQLiteStore(path=tmp_path / "audit.db")
        store.ensure_schema()
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        sink = ChainedStoreSink(store=store, keyring=keys, directory=tmp_path / "chain")
        sink.emit(event(1))
        [stored] = store.search(Scope(), size=10)
        [digest] = digest_store_beside(store).records(kind="digest")
        assert [e[0] for e in digest["events.entries"]] == [stored["event.id"]]
        assert digest["chain.closed"] is True
        assert "-cli-" in digest["record.instance"]
        report = Verifier(events=store, digests=digest_store_beside(store), keyring=keys).verify()
        assert statuses(report) == ["intact"]
        store.close()

    def test_later_runs_continue_the_same_chain(self, tmp_path: Path) -> None:
        """Three sinks one after another (three CLI runs): one chain, #0..#2, linked."""
        store = SQLiteStore(path=tmp_path / "audit.db")
        store.ensure_schema()
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        for n in range(3):
            ChainedStoreSink(store=store, keyring=keys, directory=tmp_path / "chain").emit(event(n))
        digests = digest_store_beside(store).records(kind="digest")
        assert len({d["record.instance"] for d in digests}) == 1
        assert [d["record.seq"] for d in digests] == [0, 1, 2]
        report = Verifier(events=store, digests=digest_store_beside(store), keyring=keys).verify()
        assert report.ok
        store.close()

    def test_concurrent_runs_take_turns_on_one_chain(self, tmp_path: Path) -> None:
        """Four sinks emitting at once (four CLI runs) do not fork the chain: every event in
        exactly one digest, sequence numbers without gaps or repeats, all intact."""
        path = tmp_path / "audit.db"
        SQLiteStore(path=path).ensure_schema()
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        errors: list[BaseException] = []

        def cli_run(worker: int) -> None:
            store = SQLiteStore(path=path)
            try:
                sink = ChainedStoreSink(store=store, keyring=keys, directory=tmp_path / "chain")
                for n in range(5):
                    sink.emit(event(worker * 100 + n))
            except BaseException as exc:
                errors.append(exc)
            finally:
                store.close()

        threads = [threading.Thread(target=cli_run, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        store = SQLiteStore(path=path)
        digests = digest_store_beside(store).records(kind="digest")
        listed = [e[0] for d in digests for e in d["events.entries"]]
        assert len(listed) == len(set(listed)) == 20
        assert [d["record.seq"] for d in digests] == list(range(len(digests)))
        report = Verifier(events=store, digests=digest_store_beside(store), keyring=keys).verify()
        assert report.ok
        store.close()

    def test_without_a_key_only_stores(self, tmp_path: Path) -> None:
        """No keyring: the event is stored, no chain directory appears."""
        store = SQLiteStore(path=tmp_path / "audit.db")
        store.ensure_schema()
        ChainedStoreSink(store=store).emit(event(1))
        assert len(store.search(Scope(), size=10)) == 1
        assert not (tmp_path / "chain").exists()
        store.close()

    def test_key_without_directory_refused(self, tmp_path: Path) -> None:
        """A key but no chain directory is a configuration mistake, refused at construction."""
        store = SQLiteStore(path=tmp_path / "audit.db")
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        with pytest.raises(ValueError, match="directory"):
            ChainedStoreSink(store=store, keyring=keys)
        store.close()

    def test_instance_ids_differ_under_one_prefix(self) -> None:
        """Two machines configured with one instance prefix still get two chains."""
        first, second = cli_instance_id("gw-1"), cli_instance_id("gw-1")
        assert first.startswith("gw-1-cli-")
        assert first != second


class TestCommandEvents:
    def _argv(self, tmp_path: Path, db: Path) -> tuple[list[str], Path]:
        key = Ed25519PrivateKey.generate()
        (tmp_path / "signing.pem").write_bytes(pem(key))
        jwks = tmp_path / "audit-keys.json"
        jwks.write_bytes(Keyring(private=[key]).jwks_json())
        signing = ["--signing-key", str(tmp_path / "signing.pem")]
        chain = ["--chain-dir", str(tmp_path / "cli-chain")]
        return ["--sqlite", str(db), *OFFICER, *signing, *chain], jwks

    def test_deleted_search_event_is_reported_by_verify(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`python -m audit search` signs its audit_search event; deleting that event from
        the store is then an events_missing finding of verify, naming it."""
        db = tmp_path / "audit.db"
        SQLiteStore(path=db).ensure_schema()
        argv, jwks = self._argv(tmp_path, db)
        assert main([*argv, "search"]) == 0
        assert main([*argv, "verify", "--keys", str(jwks)]) == 0
        store = SQLiteStore(path=db)
        [searched] = store.search(Scope(actions=["audit_search"]), size=10)
        store.close()
        SQLiteAdmin(db).delete_event(str(searched["event.id"]))
        capsys.readouterr()
        assert main([*argv, "verify", "--keys", str(jwks), "--format", "json"]) == 1
        lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        missing = [line for line in lines if line["status"] == "events_missing"]
        assert [f["event_ids"] for f in missing[0]["findings"]] == [[searched["event.id"]]]

    def test_deleted_verify_event_is_reported_by_the_next_verify(self, tmp_path: Path) -> None:
        """verify's own audit_verify event is signed too: deleting it is found next time."""
        db = tmp_path / "audit.db"
        SQLiteStore(path=db).ensure_schema()
        argv, jwks = self._argv(tmp_path, db)
        assert main([*argv, "verify", "--keys", str(jwks)]) == 0
        store = SQLiteStore(path=db)
        [verified] = store.search(Scope(actions=["audit_verify"]), size=10)
        store.close()
        with sqlite3.connect(db) as admin:
            admin.execute("DELETE FROM audit_events WHERE event_id = ?", (verified["event.id"],))
        assert main([*argv, "verify", "--keys", str(jwks)]) == 1

    def test_key_without_chain_dir_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--signing-key alone names no place for the chain: a clear error, exit status 2."""
        db = tmp_path / "audit.db"
        SQLiteStore(path=db).ensure_schema()
        argv, _jwks = self._argv(tmp_path, db)
        without_dir = argv[: argv.index("--chain-dir")]
        assert main([*without_dir, "search"]) == 2
        assert "--chain-dir" in capsys.readouterr().err

    def test_unreadable_key_exits_2(self, tmp_path: Path) -> None:
        """A signing key file that is not a PEM Ed25519 key: exit status 2."""
        db = tmp_path / "audit.db"
        SQLiteStore(path=db).ensure_schema()
        (tmp_path / "bad.pem").write_text("not a key")
        argv = ["--sqlite", str(db), *OFFICER, "--signing-key", str(tmp_path / "bad.pem")]
        assert main([*argv, "--chain-dir", str(tmp_path / "c"), "search"]) == 2


@pytest.mark.opensearch
class TestOpenSearch:
    def test_deleted_cli_event_reported_on_the_node(
        self, opensearch_node: Node, opensearch: OpenSearch, index_prefix: str, tmp_path: Path
    ) -> None:
        """The same on OpenSearch: a signed CLI event deleted from its daily index is missing."""
        store = OpenSearchStore(url=opensearch_node.url, index_prefix=index_prefix, replicas=0)
        store.ensure_schema()
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        sink = ChainedStoreSink(store=store, keyring=keys, directory=tmp_path / "chain")
        sink.emit(event(1))
        sink.emit(event(2))
        verifier = Verifier(events=store, digests=digest_store_beside(store), keyring=keys)
        assert statuses(verifier.verify()) == ["intact", "intact"]
        store.refresh()
        gone = str(store.search(Scope(), size=10)[0]["event.id"])
        OpenSearchAdmin(opensearch, index_prefix).delete_event(gone)
        report = verifier.verify()
        assert sorted(statuses(report)) == ["events_missing", "intact"]
        assert [i.findings[0].event_ids for i in report.intervals if i.findings] == [(gone,)]
        store.close()
