"""audit/_sqlite.py: the embedded store behind the pipeline (demo and single-machine mode)."""

from __future__ import annotations

from pathlib import Path

from audit import Scope, SQLiteStore
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
