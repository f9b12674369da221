"""Pipelines the audit worker builds in tests (named in a ``WorkerSpec``)."""

from __future__ import annotations

from pathlib import Path

from audit import AuditPipeline, SQLiteStore


def sqlite_pipeline(
    db_path: str, spool_dir: str, spool_max_bytes: int = 1024 * 1024
) -> AuditPipeline:
    """A pipeline with short waits to SQLite at ``db_path``."""
    store = SQLiteStore(path=Path(db_path))
    return AuditPipeline(
        store=store,
        spool_dir=spool_dir,
        spool_max_bytes=spool_max_bytes,
        batch_size=200,
        flush_interval=0.05,
        backoff_base=0.01,
        backoff_max=0.2,
        close_timeout=5.0,
        fsync="never",
    )
