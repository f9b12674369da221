# ruff: noqa: S608 - SQL is built from our own table constant; values are bound
"""Where holds live: in the audit store's own place (a table in SQLite, an index in OpenSearch).

:class:`HoldStore` is what the retention job, the API and the CLI use; one contract test runs
over both implementations. A hold is added once and released once (atomically: two releases
racing leave one winner and one :class:`HoldAlreadyReleased`); nothing here deletes a hold.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Protocol

import orjson
from opensearchpy.exceptions import ConflictError, NotFoundError, TransportError

from audit._opensearch import connect, translated_errors
from audit.errors import StoreError
from retention._holds import Hold
from retention._sqlitebase import SQLiteTables
from retention.errors import HoldNotFound, InvalidHold

__all__ = ["HOLDS_INDEX", "HOLDS_TABLE", "HoldStore", "OpenSearchHoldStore", "SQLiteHoldStore"]

HOLDS_TABLE: Final = "audit_holds"
#: ``{prefix}audit-holds``: outside the ``audit-events-*`` pattern, so never pruned with events.
HOLDS_INDEX: Final = "audit-holds"
MAX_HOLDS: Final = 10_000


class HoldStore(Protocol):
    """Holds kept next to the audit events."""

    def ensure_schema(self) -> None:
        """Create the table or index if missing (idempotent)."""

    def add(self, hold: Hold) -> None:
        """Store a new hold; raises :class:`InvalidHold` when its id is taken."""

    def get(self, hold_id: str) -> Hold:
        """The hold with that id; raises :class:`HoldNotFound`."""

    def release(self, hold_id: str, *, by: str, at: datetime, reason: str) -> Hold:
        """Release an active hold once; raises HoldNotFound or HoldAlreadyReleased."""

    def holds(self, *, active: bool | None = None) -> list[Hold]:
        """Holds oldest first: all, only active (``True``) or only released (``False``)."""

    def close(self) -> None:
        """Release connections."""


class SQLiteHoldStore(SQLiteTables):
    """Holds in a table of the audit store's SQLite file (its own connection)."""

    def ensure_schema(self) -> None:
        with self._lock:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {HOLDS_TABLE} (hold_id TEXT PRIMARY KEY,"
                " placed_at TEXT NOT NULL, released_at TEXT, document TEXT NOT NULL)"
            )

    def add(self, hold: Hold) -> None:
        with self._transaction() as db:
            try:
                db.execute(
                    f"INSERT INTO {HOLDS_TABLE} VALUES (?, ?, NULL, ?)",
                    (hold.hold_id, hold.placed_at.isoformat(), _dump(hold)),
                )
            except sqlite3.IntegrityError:
                raise InvalidHold(f"hold id {hold.hold_id} is taken") from None

    def get(self, hold_id: str) -> Hold:
        with self._lock:
            row = self._db.execute(
                f"SELECT document FROM {HOLDS_TABLE} WHERE hold_id = ?", (hold_id,)
            ).fetchone()
        if row is None:
            raise HoldNotFound(f"no hold {hold_id!r}")
        return Hold.from_json(orjson.loads(row[0]))

    def release(self, hold_id: str, *, by: str, at: datetime, reason: str) -> Hold:
        with self._transaction() as db:
            row = db.execute(
                f"SELECT document FROM {HOLDS_TABLE} WHERE hold_id = ?", (hold_id,)
            ).fetchone()
            if row is None:
                raise HoldNotFound(f"no hold {hold_id!r}")
            released = Hold.from_json(orjson.loads(row[0])).released(by=by, at=at, reason=reason)
            db.execute(
                f"UPDATE {HOLDS_TABLE} SET released_at = ?, document = ? WHERE hold_id = ?",
                (at.isoformat(), _dump(released), hold_id),
            )
        return released

    def holds(self, *, active: bool | None = None) -> list[Hold]:
        where = {
            None: "",
            True: " WHERE released_at IS NULL",
            False: " WHERE released_at IS NOT NULL",
        }
        with self._lock:
            rows = self._db.execute(
                f"SELECT document FROM {HOLDS_TABLE}{where[active]}"
                " ORDER BY placed_at, hold_id LIMIT ?",
                (MAX_HOLDS,),
            ).fetchall()
        return [Hold.from_json(orjson.loads(row[0])) for row in rows]


def _dump(hold: Hold) -> str:
    return orjson.dumps(hold.to_json()).decode()


#: A person is waiting on a hold request: let the client retry a dropped connection.
HOLD_RETRIES: Final = 3

_MAPPINGS: Final = {
    "dynamic": "strict",
    "properties": {
        "hold_id": {"type": "keyword"},
        "placed_at": {"type": "date"},
        "released_at": {"type": "date"},
        "document": {"type": "text", "index": False},
    },
}


class OpenSearchHoldStore:
    """Holds in the index ``{prefix}audit-holds``; releases use optimistic concurrency."""

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
        self.index = f"{index_prefix.lower()}{HOLDS_INDEX}"
        self._replicas = replicas
        self._client = connect(
            url,
            username=username,
            password=password,
            ca_certs=ca_certs,
            timeout=timeout,
            max_retries=HOLD_RETRIES,
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

    def _body(self, hold: Hold) -> dict[str, Any]:
        return {
            "hold_id": hold.hold_id,
            "placed_at": hold.placed_at.isoformat(),
            "released_at": None if hold.released_at is None else hold.released_at.isoformat(),
            "document": _dump(hold),
        }

    def add(self, hold: Hold) -> None:
        try:
            with translated_errors():
                self._client.index(
                    index=self.index,
                    id=hold.hold_id,
                    body=self._body(hold),
                    op_type="create",
                    refresh="true",
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, ConflictError):
                raise InvalidHold(f"hold id {hold.hold_id} is taken") from None
            raise

    def _read(self, hold_id: str) -> tuple[Hold, int, int]:
        try:
            with translated_errors():
                found = self._client.get(index=self.index, id=hold_id)
        except StoreError as exc:
            if isinstance(exc.__cause__, NotFoundError):
                raise HoldNotFound(f"no hold {hold_id!r}") from None
            raise
        hold = Hold.from_json(orjson.loads(found["_source"]["document"]))
        return hold, int(found["_seq_no"]), int(found["_primary_term"])

    def get(self, hold_id: str) -> Hold:
        return self._read(hold_id)[0]

    def release(self, hold_id: str, *, by: str, at: datetime, reason: str) -> Hold:
        hold, seq_no, term = self._read(hold_id)
        released = hold.released(by=by, at=at, reason=reason)
        try:
            with translated_errors():
                self._client.index(
                    index=self.index,
                    id=hold_id,
                    body=self._body(released),
                    if_seq_no=seq_no,
                    if_primary_term=term,
                    refresh="true",
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, ConflictError):  # released meanwhile by another
                self._read(hold_id)[0].released(by=by, at=at, reason=reason)
            raise
        return released

    def holds(self, *, active: bool | None = None) -> list[Hold]:
        query: dict[str, Any] = {"match_all": {}}
        if active is True:
            query = {"bool": {"must_not": [{"exists": {"field": "released_at"}}]}}
        elif active is False:
            query = {"exists": {"field": "released_at"}}
        with translated_errors():
            response = self._client.search(
                index=self.index,
                body={
                    "query": query,
                    "size": MAX_HOLDS,
                    "sort": [{"placed_at": "asc"}, {"hold_id": "asc"}],
                },
                ignore_unavailable=True,
            )
        return [
            Hold.from_json(orjson.loads(hit["_source"]["document"]))
            for hit in response["hits"]["hits"]
        ]

    def close(self) -> None:
        self._client.close()
