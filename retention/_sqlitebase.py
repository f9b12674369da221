"""The SQLite side of retention's own tables (holds, the run lock and runs).

Each store keeps its own connection to the audit store's SQLite file, shared between threads
(the run lock's renewal thread uses it too), so every use holds ``_lock``; writes take the
database lock up front (``BEGIN IMMEDIATE``) and a busy file is :class:`StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from audit.errors import StoreUnavailable

__all__ = ["BUSY_TIMEOUT", "SQLiteTables"]

#: Seconds a writer waits for another connection's transaction before giving up.
BUSY_TIMEOUT: Final = 10.0


class SQLiteTables:
    """A thread-shared connection to ``path`` with an immediate-transaction helper."""

    def __init__(self, *, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite busy: {exc}") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
