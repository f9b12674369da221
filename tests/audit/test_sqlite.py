"""audit/_sqlite.py: the embedded store behind the pipeline (demo and single-machine mode)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from audit import Record, Scope, SQLiteStore
from audit.errors import StoreUnavailable
from audit.processors import audit_processors, render_json, run_chain
from tests.audit.conftest import event, fast_pipeline


class TestPipelineOnSqlite:
    def test_ships_each_event_once_and_dead_letters_bad_ones(self, tmp_path: Path) -> None:
        """Through the pipeline, good events land once; a bad one becomes a dead letter."""
        store = SQLiteStore(path=tmp_path / "audit.db")
        pipeline = fast_pipeline(store, tmp_path / "spool")
        pipeline.open()
        for seq in range(300):
            pipeline.emit(event(seq))
        pipeline.emit(event(300, **{"http.response.status_code": "x"}))
        assert pipeline.wait_idle(30)
        pipeline.close()
        docs = store.search(Scope(), size=1000)
        assert sorted(int(d["labels"]["seq"]) for d in docs) == list(range(300))
        [letter] = store.deadletters()
        assert "http.response.status_code" in letter["reason"]
        store.close()

    def test_wal_mode(self, tmp_path: Path) -> None:
        """The file store runs in WAL mode (readers do not block the shipper)."""
        store = SQLiteStore(path=tmp_path / "audit.db")
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.close()


class TestSharedFile:
    def test_locked_by_another_process_is_unavailable(self, tmp_path: Path) -> None:
        """While another connection holds the write lock, a write fails as unavailable
        (the shipper retries it) and nothing is half-written."""
        path = tmp_path / "audit.db"
        store = SQLiteStore(path=path)
        store.ensure_schema()
        store._db.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        records = [_record(1)]
        with pytest.raises(StoreUnavailable, match=r"busy|locked"):
            store.write(records)
        other.execute("ROLLBACK")
        other.close()
        assert [r.status for r in store.write(records)] == ["stored"]
        store.close()


def _record(n: int) -> Record:
    doc = run_chain(audit_processors(render=False), {"event.action": "logout", "labels": {"n": n}})
    return Record(doc["event.id"], doc["@timestamp"], render_json(None, "", doc))
