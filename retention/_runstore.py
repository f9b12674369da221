# ruff: noqa: S608 - SQL is built from our own table constants; values are bound
"""The retention job's own state in the audit store: the run lock (a lease) and run reports.

The lock is one record (a row in SQLite, a document in OpenSearch) naming its holder, a random
token and when the lease expires. Taking it is atomic: SQLite in a ``BEGIN IMMEDIATE``
transaction, OpenSearch with ``op_type=create`` for a free lock and ``if_seq_no`` /
``if_primary_term`` to take over an expired one, so of two machines racing exactly one wins.
The holder renews the lease while it runs; if it dies, the lease expires and the next run
takes over. Expiry compares the holder's ``expires_at`` with the taker's clock: keep the lease
much longer than the clock skew between machines (NTP keeps it under a second).

Each run is recorded when it starts (``started``) and again when it ends (``finished`` or
``stopped``, with its report); a run left ``started`` was interrupted, and the next run marks
it ``interrupted`` and says in its report that it completes it.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import orjson
from opensearchpy.exceptions import ConflictError, NotFoundError, TransportError

from audit._opensearch import connect, translated_errors
from audit.errors import StoreError
from audit.events import index_pattern, parse_timestamp
from retention._sqlitebase import SQLiteTables
from retention.errors import LockLost

__all__ = [
    "RETENTION_INDEX",
    "Lease",
    "OpenSearchRunStore",
    "RunRecord",
    "RunStore",
    "SQLiteRunStore",
]

LOCK_TABLE: Final = "retention_lock"
RUNS_TABLE: Final = "retention_runs"
#: ``{prefix}audit-retention``: outside ``audit-events-*``, so never pruned with the events.
RETENTION_INDEX: Final = "audit-retention"
LOCK_ID: Final = "run-lock"
MAX_RUNS: Final = 1000


@dataclass(frozen=True, slots=True)
class Lease:
    """The run lock as held by ``owner`` (``token`` proves it) until ``expires_at``."""

    owner: str
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored: its state and, once ended, its report (JSON)."""

    run_id: str
    owner: str
    started_at: datetime
    state: str  # started | finished | stopped | interrupted
    report: dict[str, Any] | None = None


class RunStore(Protocol):
    """The run lock and the run reports, next to the audit events."""

    def ensure_schema(self) -> None:
        """Create the tables or index if missing (idempotent)."""

    def acquire(self, *, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Take the lock if free or expired at ``now``; None while another holds it."""

    def renew(self, lease: Lease, *, now: datetime, duration: timedelta) -> Lease:
        """Extend our lease; raises :class:`LockLost` when another has taken the lock."""

    def release(self, lease: Lease) -> None:
        """Give the lock up if it is still ours (else nothing)."""

    def holder(self) -> Lease | None:
        """Who holds (or last held, if expired) the lock; None when free."""

    def start_run(self, record: RunRecord) -> None:
        """Record a run as started."""

    def end_run(self, run_id: str, *, state: str, report: dict[str, Any]) -> None:
        """Record how a run ended, with its report."""

    def runs(self, *, state: str | None = None) -> list[RunRecord]:
        """Recorded runs, oldest first (all, or those in ``state``)."""

    def clear_stale_blocks(self) -> list[str]:
        """Undo write blocks and switched-off refresh an interrupted run left on event
        indices; the indices set right."""

    def close(self) -> None:
        """Release connections."""


def _token() -> str:
    return secrets.token_hex(16)


def _lease_json(lease: Lease) -> dict[str, Any]:
    return {
        "owner": lease.owner,
        "token": lease.token,
        "expires_at": lease.expires_at.isoformat(),
    }


def _lease_from(data: dict[str, Any]) -> Lease:
    return Lease(
        owner=str(data["owner"]),
        token=str(data["token"]),
        expires_at=parse_timestamp(str(data["expires_at"])),
    )


def _record_from(data: dict[str, Any]) -> RunRecord:
    report = data.get("report")
    return RunRecord(
        run_id=str(data["run_id"]),
        owner=str(data["owner"]),
        started_at=parse_timestamp(str(data["started_at"])),
        state=str(data["state"]),
        report=orjson.loads(report) if isinstance(report, str) else None,
    )


class SQLiteRunStore(SQLiteTables):
    """The lock row and run rows in the audit store's SQLite file (its own connection)."""

    def ensure_schema(self) -> None:
        with self._lock:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} (name TEXT PRIMARY KEY,"
                " owner TEXT NOT NULL, token TEXT NOT NULL, expires_at TEXT NOT NULL)"
            )
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (run_id TEXT PRIMARY KEY,"
                " owner TEXT NOT NULL, started_at TEXT NOT NULL, state TEXT NOT NULL,"
                " report TEXT)"
            )

    def _current(self, db: sqlite3.Connection) -> Lease | None:
        row = db.execute(
            f"SELECT owner, token, expires_at FROM {LOCK_TABLE} WHERE name = ?", (LOCK_ID,)
        ).fetchone()
        if row is None:
            return None
        return Lease(owner=row[0], token=row[1], expires_at=parse_timestamp(row[2]))

    def acquire(self, *, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        with self._transaction() as db:
            current = self._current(db)
            if current is not None and current.expires_at > now:
                return None
            lease = Lease(owner=owner, token=_token(), expires_at=now + duration)
            db.execute(
                f"INSERT OR REPLACE INTO {LOCK_TABLE} VALUES (?, ?, ?, ?)",
                (LOCK_ID, lease.owner, lease.token, lease.expires_at.isoformat()),
            )
        return lease

    def renew(self, lease: Lease, *, now: datetime, duration: timedelta) -> Lease:
        with self._transaction() as db:
            current = self._current(db)
            if current is None or current.token != lease.token:
                raise LockLost(f"the run lock was taken over (now held by {_who(current)})")
            renewed = Lease(owner=lease.owner, token=lease.token, expires_at=now + duration)
            db.execute(
                f"UPDATE {LOCK_TABLE} SET expires_at = ? WHERE name = ? AND token = ?",
                (renewed.expires_at.isoformat(), LOCK_ID, lease.token),
            )
        return renewed

    def release(self, lease: Lease) -> None:
        with self._transaction() as db:
            db.execute(
                f"DELETE FROM {LOCK_TABLE} WHERE name = ? AND token = ?", (LOCK_ID, lease.token)
            )

    def holder(self) -> Lease | None:
        with self._lock:
            return self._current(self._db)

    def start_run(self, record: RunRecord) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO {RUNS_TABLE} VALUES (?, ?, ?, ?, NULL)",
                (record.run_id, record.owner, record.started_at.isoformat(), record.state),
            )

    def end_run(self, run_id: str, *, state: str, report: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                f"UPDATE {RUNS_TABLE} SET state = ?, report = ? WHERE run_id = ?",
                (state, orjson.dumps(report).decode(), run_id),
            )

    def runs(self, *, state: str | None = None) -> list[RunRecord]:
        where, params = ("", []) if state is None else (" WHERE state = ?", [state])
        with self._lock:
            rows = self._db.execute(
                f"SELECT run_id, owner, started_at, state, report FROM {RUNS_TABLE}{where}"
                " ORDER BY started_at, rowid LIMIT ?",
                [*params, MAX_RUNS],
            ).fetchall()
        return [
            _record_from(
                {"run_id": r[0], "owner": r[1], "started_at": r[2], "state": r[3], "report": r[4]}
            )
            for r in rows
        ]

    def clear_stale_blocks(self) -> list[str]:
        return []  # SQLite deletes in one statement: nothing is left half-done


def _who(lease: Lease | None) -> str:
    return "nobody" if lease is None else f"{lease.owner} until {lease.expires_at.isoformat()}"


_MAPPINGS: Final = {
    "dynamic": "strict",
    "properties": {
        "kind": {"type": "keyword"},
        "owner": {"type": "keyword"},
        "token": {"type": "keyword"},
        "expires_at": {"type": "date"},
        "run_id": {"type": "keyword"},
        "started_at": {"type": "date"},
        "state": {"type": "keyword"},
        "report": {"type": "text", "index": False},
    },
}


class OpenSearchRunStore:
    """The lock and run documents in ``{prefix}audit-retention``."""

    def __init__(
        self,
        *,
        url: str | Sequence[str],
        index_prefix: str = "",
        username: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
        replicas: int = 1,
        timeout: float = 30.0,
    ) -> None:
        self.index = f"{index_prefix.lower()}{RETENTION_INDEX}"
        self._events = index_pattern(index_prefix.lower())
        self._replicas = replicas
        self._client = connect(
            url,
            username=username,
            password=password,
            ca_certs=ca_certs,
            timeout=timeout,
            max_retries=0,  # a retried lock write could win twice; callers decide
        )

    def ensure_schema(self) -> None:
        with translated_errors():
            if self._client.indices.exists(index=self.index):
                return
            try:
                self._client.indices.create(
                    index=self.index,
                    body={
                        "settings": {"number_of_shards": 1, "number_of_replicas": self._replicas},
                        "mappings": _MAPPINGS,
                    },
                )
            except TransportError as exc:  # another process created it meanwhile
                if exc.error != "resource_already_exists_exception":
                    raise

    def _read_lock(self) -> tuple[Lease, int, int] | None:
        try:
            with translated_errors():
                found = self._client.get(index=self.index, id=LOCK_ID)
        except StoreError as exc:
            if isinstance(exc.__cause__, NotFoundError):
                return None
            raise
        return _lease_from(found["_source"]), int(found["_seq_no"]), int(found["_primary_term"])

    def _write_lock(self, lease: Lease, **versioning: Any) -> bool:
        """Write the lock document; False when another write got there first (409)."""
        try:
            with translated_errors():
                self._client.index(
                    index=self.index,
                    id=LOCK_ID,
                    body={"kind": "lock", **_lease_json(lease)},
                    refresh="true",
                    **versioning,
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, ConflictError):
                return False
            raise
        return True

    def acquire(self, *, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        lease = Lease(owner=owner, token=_token(), expires_at=now + duration)
        found = self._read_lock()
        if found is None:
            return lease if self._write_lock(lease, op_type="create") else None
        current, seq_no, term = found
        if current.expires_at > now:
            return None
        return lease if self._write_lock(lease, if_seq_no=seq_no, if_primary_term=term) else None

    def renew(self, lease: Lease, *, now: datetime, duration: timedelta) -> Lease:
        found = self._read_lock()
        if found is None or found[0].token != lease.token:
            raise LockLost(f"the run lock was taken over (now held by {_who(found and found[0])})")
        renewed = Lease(owner=lease.owner, token=lease.token, expires_at=now + duration)
        if not self._write_lock(renewed, if_seq_no=found[1], if_primary_term=found[2]):
            raise LockLost("the run lock was taken over while renewing")
        return renewed

    def release(self, lease: Lease) -> None:
        found = self._read_lock()
        if found is None or found[0].token != lease.token:
            return
        try:
            with translated_errors():
                self._client.delete(
                    index=self.index,
                    id=LOCK_ID,
                    if_seq_no=found[1],
                    if_primary_term=found[2],
                    refresh="true",
                )
        except StoreError as exc:
            if not isinstance(exc.__cause__, ConflictError | NotFoundError):
                raise

    def holder(self) -> Lease | None:
        found = self._read_lock()
        return None if found is None else found[0]

    def _put_run(self, record: RunRecord) -> None:
        body: dict[str, Any] = {
            "kind": "run",
            "run_id": record.run_id,
            "owner": record.owner,
            "started_at": record.started_at.isoformat(),
            "state": record.state,
        }
        if record.report is not None:
            body["report"] = orjson.dumps(record.report).decode()
        with translated_errors():
            self._client.index(
                index=self.index, id=f"run-{record.run_id}", body=body, refresh="true"
            )

    def start_run(self, record: RunRecord) -> None:
        self._put_run(record)

    def end_run(self, run_id: str, *, state: str, report: dict[str, Any]) -> None:
        with translated_errors():
            found = self._client.get(index=self.index, id=f"run-{run_id}")
        record = _record_from(found["_source"])
        self._put_run(
            RunRecord(record.run_id, record.owner, record.started_at, state, dict(report))
        )

    def runs(self, *, state: str | None = None) -> list[RunRecord]:
        query: dict[str, Any] = {"term": {"kind": "run"}}
        if state is not None:
            query = {"bool": {"filter": [query, {"term": {"state": state}}]}}
        with translated_errors():
            response = self._client.search(
                index=self.index,
                body={
                    "query": query,
                    "size": MAX_RUNS,
                    "sort": [{"started_at": "asc"}, {"run_id": "asc"}],
                },
                ignore_unavailable=True,
            )
        return [_record_from(hit["_source"]) for hit in response["hits"]["hits"]]

    def clear_stale_blocks(self) -> list[str]:
        """An interrupted whole-index deletion leaves ``index.blocks.write`` on an event
        index (the audit store sets it just before dropping the index), an interrupted
        minimisation ``index.refresh_interval: -1``. Only retention sets them, and we hold the
        lock, so every such setting is stale: lift it, or late events for that day would be
        refused (or never become searchable) for ever. Returns the indices set right."""
        with translated_errors():
            found = self._client.indices.get_settings(
                index=self._events,
                name="index.blocks.write,index.refresh_interval",
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        stale = []
        for index, data in sorted(found.items()):
            settings = data.get("settings", {}).get("index", {})
            lift: dict[str, None] = {}
            if str(settings.get("blocks", {}).get("write")) == "true":
                lift["index.blocks.write"] = None
            if str(settings.get("refresh_interval")) == "-1":
                lift["index.refresh_interval"] = None
            if lift:
                with translated_errors():
                    self._client.indices.put_settings(index=index, body=lift)
                stale.append(index)
        return stale

    def close(self) -> None:
        self._client.close()
