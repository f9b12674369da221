# ruff: noqa: S608 - SQL is built from our own table name; values are bound
"""Where signed records live: digests of intervals and retention records, beside the events.

OpenSearch: daily indices ``{prefix}audit-digests-YYYY.MM.DD`` (by the record's
``@timestamp``), written with ``create`` by record id, behind their own template. SQLite: the
table ``audit_digests`` in the events' file. Both take :class:`audit.Record` batches like the
event stores (``record.id`` as the id), so digests travel through a spool like any event.

Use :func:`digest_store_beside` to get the digest store of an event store (same cluster and
credentials, or same file).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

from audit._opensearch import OpenSearchStore, _item_result, translated_errors
from audit._sqlite import SQLiteStore
from audit._store import AuditStore, ItemResult, Record
from audit.errors import StoreError, StoreUnavailable

__all__ = [
    "DIGEST_INDEX_BASE",
    "DigestStore",
    "OpenSearchDigestStore",
    "SQLiteDigestStore",
    "digest_store_beside",
]

DIGEST_INDEX_BASE: Final = "audit-digests"
TABLE: Final = "audit_digests"
PAGE_SIZE: Final = 1000
#: One page of "one record per instance" (``first_from``, ``heads``): more instances than
#: this is an error (verify them one ``--instance`` at a time).
MAX_INSTANCES: Final = 10_000
_FILTER_PATH: Final = "errors,items.*.status,items.*.error.type,items.*.error.reason"


def _iso(moment: datetime) -> str:
    """The records' own time format (UTC, microseconds, ``Z``): SQLite compares strings."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DigestStore(Protocol):
    """Signed records (digests and retention records) by id."""

    def ensure_schema(self) -> None:
        """Create the template/table if missing (idempotent)."""

    def write(self, records: Sequence[Record]) -> list[ItemResult]:
        """Create each record once by id; one result per record. Raises StoreUnavailable."""

    def records(
        self,
        *,
        kind: str,
        instance: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The records of ``kind`` (of ``instance``) whose ``@timestamp`` lies in
        ``[since, until)`` at the store's precision (OpenSearch: milliseconds), by instance
        then sequence number. A digest's ``@timestamp`` is the end of its interval."""

    def first_from(
        self, *, kind: str, moment: datetime, instance: str | None = None
    ) -> list[dict[str, Any]]:
        """Per instance, its first record of ``kind`` with ``@timestamp`` at or after
        ``moment`` (the complement of ``records(until=moment)``, at the same precision)."""

    def heads(self, *, kind: str, instance: str | None = None) -> list[dict[str, Any]]:
        """Per instance, its record of ``kind`` with the highest sequence number."""

    def get(self, record_id: str) -> dict[str, Any] | None:
        """One record by id, or None."""

    def refresh(self) -> None:
        """Make what was written visible."""


def digest_index_template(prefix: str, *, shards: int, replicas: int) -> dict[str, Any]:
    """Only what verify searches and sorts on is mapped; the rest stays in ``_source``."""
    keyword = {"type": "keyword"}
    return {
        "index_patterns": [f"{prefix}{DIGEST_INDEX_BASE}-*"],
        "priority": 200,
        "template": {
            "settings": {"index": {"number_of_shards": shards, "number_of_replicas": replicas}},
            "mappings": {
                "dynamic": False,
                "properties": {
                    "@timestamp": {"type": "date"},
                    "record": {
                        "properties": {
                            "id": keyword,
                            "kind": keyword,
                            "instance": keyword,
                            "seq": {"type": "long"},
                        }
                    },
                    "events": {"properties": {"entries": {"type": "object", "enabled": False}}},
                },
            },
        },
    }


class OpenSearchDigestStore:
    """Records in daily ``audit-digests-*`` indices of the events' cluster."""

    def __init__(self, *, client: Any, index_prefix: str = "", shards: int = 1, replicas: int = 1):
        self._client = client
        self._prefix = index_prefix
        self._shards, self._replicas = shards, replicas
        self.pattern = f"{index_prefix}{DIGEST_INDEX_BASE}-*"

    def index_of(self, timestamp: str) -> str:
        return f"{self._prefix}{DIGEST_INDEX_BASE}-{timestamp[:10].replace('-', '.')}"

    def ensure_schema(self) -> None:
        with translated_errors():
            self._client.indices.put_index_template(
                name=f"{self._prefix}{DIGEST_INDEX_BASE}",
                body=digest_index_template(
                    self._prefix, shards=self._shards, replicas=self._replicas
                ),
            )

    def write(self, records: Sequence[Record]) -> list[ItemResult]:
        if not records:
            return []
        lines: list[bytes] = []
        for record in records:
            action = {"create": {"_index": self.index_of(record.timestamp), "_id": record.event_id}}
            lines += [orjson.dumps(action), record.document]
        with translated_errors():
            response = self._client.bulk(body=b"\n".join(lines) + b"\n", filter_path=_FILTER_PATH)
        items = response.get("items") or []
        if len(items) != len(records):
            raise StoreUnavailable(f"bulk answered {len(items)} items for {len(records)}")
        return [_item_result(item) for item in items]

    def refresh(self) -> None:
        with translated_errors():
            self._client.indices.refresh(
                index=self.pattern, ignore_unavailable=True, allow_no_indices=True
            )

    def _hits(self, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        after: list[Any] | None = None
        sort = [{"record.instance": "asc"}, {"record.seq": "asc"}, {"record.id": "asc"}]
        while True:
            body: dict[str, Any] = {"query": query, "sort": sort, "size": PAGE_SIZE}
            if after is not None:
                body["search_after"] = after
            with translated_errors():
                response = self._client.search(
                    index=self.pattern, body=body, ignore_unavailable=True, allow_no_indices=True
                )
            hits = response["hits"]["hits"]
            yield from hits
            if len(hits) < PAGE_SIZE:
                return
            after = hits[-1]["sort"]

    @staticmethod
    def _filters(kind: str, instance: str | None) -> list[dict[str, Any]]:
        filters: list[dict[str, Any]] = [{"term": {"record.kind": kind}}]
        if instance is not None:
            filters.append({"term": {"record.instance": instance}})
        return filters

    def records(
        self,
        *,
        kind: str,
        instance: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        filters = self._filters(kind, instance)
        window = {op: _iso(at) for op, at in (("gte", since), ("lt", until)) if at is not None}
        if window:
            filters.append({"range": {"@timestamp": window}})
        return [hit["_source"] for hit in self._hits({"bool": {"filter": filters}})]

    def _one_per_instance(
        self, filters: list[dict[str, Any]], sort: list[dict[str, str]]
    ) -> list[dict[str, Any]]:
        body = {
            "query": {"bool": {"filter": filters}},
            "collapse": {"field": "record.instance"},
            "sort": sort,
            "size": MAX_INSTANCES,
        }
        with translated_errors():
            response = self._client.search(
                index=self.pattern, body=body, ignore_unavailable=True, allow_no_indices=True
            )
        hits = response["hits"]["hits"]
        if len(hits) >= MAX_INSTANCES:
            raise StoreError(f"more than {MAX_INSTANCES} chain instances: verify per --instance")
        return [hit["_source"] for hit in hits]

    def first_from(
        self, *, kind: str, moment: datetime, instance: str | None = None
    ) -> list[dict[str, Any]]:
        filters = [*self._filters(kind, instance), {"range": {"@timestamp": {"gte": _iso(moment)}}}]
        return self._one_per_instance(filters, [{"@timestamp": "asc"}, {"record.seq": "asc"}])

    def heads(self, *, kind: str, instance: str | None = None) -> list[dict[str, Any]]:
        return self._one_per_instance(self._filters(kind, instance), [{"record.seq": "desc"}])

    def get(self, record_id: str) -> dict[str, Any] | None:
        hits = list(self._hits({"term": {"record.id": record_id}}))
        return hits[0]["_source"] if hits else None


class SQLiteDigestStore:
    """Records in the ``audit_digests`` table of the events' SQLite file."""

    def __init__(
        self,
        *,
        path: str,
        db: sqlite3.Connection | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        self._lock = lock or threading.Lock()
        if db is None:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db = db
        self._ready = False

    def ensure_schema(self) -> None:
        with self._lock:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (record_id TEXT PRIMARY KEY, kind TEXT,"
                " instance TEXT, seq INTEGER, ts TEXT, document TEXT)"
            )
            # verify reads a time window of one kind: --from/--to read only what they need
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_kind_ts ON {TABLE} (kind, ts)")
            self._ready = True

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Rows of a read (a store nothing was written to yet reads as empty)."""
        if not self._ready:
            self.ensure_schema()
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def write(self, records: Sequence[Record]) -> list[ItemResult]:
        results: list[ItemResult] = []
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for record in records:
                        doc = orjson.loads(record.document)
                        cursor = self._db.execute(
                            f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?)"
                            " ON CONFLICT(record_id) DO NOTHING",
                            (
                                record.event_id,
                                doc.get("record.kind"),
                                doc.get("record.instance"),
                                doc.get("record.seq"),
                                record.timestamp,
                                record.document.decode(),
                            ),
                        )
                        results.append(ItemResult("stored" if cursor.rowcount else "duplicate"))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite busy: {exc}") from exc
        return results

    def refresh(self) -> None:
        """Writes are visible at once."""

    @staticmethod
    def _where(
        kind: str,
        instance: str | None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[str, list[Any]]:
        where, params = "kind = ?", [kind]
        for clause, value in (
            (" AND instance = ?", instance),
            (" AND ts >= ?", _iso(since) if since is not None else None),
            (" AND ts < ?", _iso(until) if until is not None else None),
        ):
            if value is not None:
                where += clause
                params.append(value)
        return where, params

    def records(
        self,
        *,
        kind: str,
        instance: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        where, params = self._where(kind, instance, since, until)
        sql = f"SELECT document FROM {TABLE} WHERE {where} ORDER BY instance, seq, record_id"
        return [orjson.loads(row[0]) for row in self._query(sql, params)]

    def _one_per_instance(self, where: str, params: list[Any], order: str) -> list[dict[str, Any]]:
        sql = (
            "SELECT document FROM (SELECT document, instance, ROW_NUMBER() OVER"
            f" (PARTITION BY instance ORDER BY {order}) AS n FROM {TABLE} WHERE {where})"
            " WHERE n = 1 ORDER BY instance"
        )
        return [orjson.loads(row[0]) for row in self._query(sql, params)]

    def first_from(
        self, *, kind: str, moment: datetime, instance: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = self._where(kind, instance, since=moment)
        return self._one_per_instance(where, params, "ts, seq")

    def heads(self, *, kind: str, instance: str | None = None) -> list[dict[str, Any]]:
        where, params = self._where(kind, instance)
        return self._one_per_instance(where, params, "seq DESC")

    def get(self, record_id: str) -> dict[str, Any] | None:
        rows = self._query(f"SELECT document FROM {TABLE} WHERE record_id = ?", (record_id,))
        return None if not rows else orjson.loads(rows[0][0])

    # --- for tests and operators: what an administrator of the store could do --------------

    def delete(self, record_id: str) -> None:
        with self._lock:
            self._db.execute(f"DELETE FROM {TABLE} WHERE record_id = ?", (record_id,))

    def replace(self, record_id: str, document: bytes) -> None:
        with self._lock:
            self._db.execute(
                f"UPDATE {TABLE} SET document = ? WHERE record_id = ?",
                (document.decode(), record_id),
            )


def digest_store_beside(store: AuditStore) -> DigestStore:
    """The digest store that belongs with ``store`` (same cluster, or same SQLite file)."""
    if isinstance(store, OpenSearchStore):
        return OpenSearchDigestStore(
            client=store._client,
            index_prefix=store.index_prefix,
            shards=store._shards,
            replicas=store._replicas,
        )
    if isinstance(store, SQLiteStore):
        if store.path == ":memory:":
            shared = store._db, store._lock
            return SQLiteDigestStore(path=store.path, db=shared[0], lock=shared[1])
        return SQLiteDigestStore(path=store.path)
    raise TypeError(f"no digest store for {type(store).__name__}")
