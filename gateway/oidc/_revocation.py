"""The revocation record: sessions ended before their cookie expires, seen by every instance.

Sessions are stateless encrypted cookies, so logging out cannot delete anything on the server:
the gateway records the revoked session id (logout) or a "revoked before" time for a subject
(back-channel logout, an incident responder's "revoke all sessions"), and every request checks
the record. Entries are kept only until the longest possible session has expired (the absolute
timeout), so the record stays small.

Where it lives: every gateway instance must see a revocation at once, so it lives in a store
the instances share. :class:`SQLiteRevocations` is a file on storage all instances on a machine
(or a shared volume) mount: one indexed lookup per request, no cache, so a revocation takes
effect on the next request everywhere. :class:`MemoryRevocations` is for one instance and
tests. A networked store (the audit store, or a key-value service) fits the same interface
when instances spread over machines.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from gateway.oidc._session import Clock


class RevocationStore(Protocol):
    def revoke_session(self, session_id: str, *, until: float) -> None:
        """Refuse the session ``session_id`` from now on (kept until ``until``)."""

    def revoke_subject(self, user_id: str, *, before: float, until: float) -> None:
        """Refuse every session of ``user_id`` issued at or before ``before``."""

    def is_revoked(self, *, session_id: str, user_id: str, issued_at: float) -> bool: ...


class MemoryRevocations:
    """In-process revocations (one instance, tests); expired entries pruned on write."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._sessions: dict[str, float] = {}
        self._subjects: dict[str, tuple[float, float]] = {}
        self._clock = clock

    def revoke_session(self, session_id: str, *, until: float) -> None:
        self._prune()
        self._sessions[session_id] = until

    def revoke_subject(self, user_id: str, *, before: float, until: float) -> None:
        self._prune()
        old_before, old_until = self._subjects.get(user_id, (before, until))
        self._subjects[user_id] = (max(before, old_before), max(until, old_until))

    def is_revoked(self, *, session_id: str, user_id: str, issued_at: float) -> bool:
        if session_id in self._sessions:
            return True
        found = self._subjects.get(user_id)
        return found is not None and issued_at <= found[0]

    def _prune(self) -> None:
        now = self._clock()
        self._sessions = {k: v for k, v in self._sessions.items() if v > now}
        self._subjects = {k: v for k, v in self._subjects.items() if v[1] > now}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS revoked_sessions (sid TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS revoked_subjects (
    user_id TEXT PRIMARY KEY, before REAL NOT NULL, until REAL NOT NULL
);
"""


class SQLiteRevocations:
    """Revocations in a SQLite file that all instances share (WAL mode).

    Durable as it is: every revocation is its own transaction (autocommit), committed before
    :meth:`revoke_session`/:meth:`revoke_subject` return, and ``synchronous=FULL`` (set here,
    not left to the build's default) fsyncs the WAL at each commit, so neither a crash nor a
    power loss after the revoking request was answered loses it. It needs no journal of its
    own (unlike :class:`~gateway.oidc._revocation_opensearch.OpenSearchRevocations`, whose
    cluster may be away).
    """

    def __init__(self, *, path: Path, clock: Clock = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=2000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock

    def revoke_session(self, session_id: str, *, until: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO revoked_sessions (sid, until) VALUES (?, ?)",
                (session_id, until),
            )
            self._prune()

    def revoke_subject(self, user_id: str, *, before: float, until: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO revoked_subjects (user_id, before, until) VALUES (?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET before = max(before, excluded.before), "
                "until = max(until, excluded.until)",
                (user_id, before, until),
            )
            self._prune()

    def is_revoked(self, *, session_id: str, user_id: str, issued_at: float) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM revoked_sessions WHERE sid = ? UNION ALL "
                "SELECT 1 FROM revoked_subjects WHERE user_id = ? AND before >= ? LIMIT 1",
                (session_id, user_id, issued_at),
            ).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _prune(self) -> None:
        now = self._clock()
        self._db.execute("DELETE FROM revoked_sessions WHERE until <= ?", (now,))
        self._db.execute("DELETE FROM revoked_subjects WHERE until <= ?", (now,))
