# ruff: noqa: S608 - SQL is built from our own table name; values are bound
"""What the event store holds, hour by hour: for verify's look for events no digest lists.

Verify (``audit/_verify.py``) compares, per UTC hour of ``@timestamp``, how many events the
store holds with how many of the events the digests list it found there. Only an hour whose
counts differ is read id by id. So an :class:`Inventory` offers three reads:

* :meth:`Inventory.hours`: events per hour in a time range, one aggregation (OpenSearch: a
  composite ``date_histogram``, paged) or one ``GROUP BY`` (SQLite); no event is read;
* :meth:`Inventory.ids_in`: every event id of one hour with the number of documents carrying
  it, streamed (OpenSearch: a composite ``terms`` aggregation on ``event.id``, paged with its
  ``after_key``, so neither a result window nor a scroll context limits it; SQLite: one query);
* :meth:`Inventory.describe`: the few suspects' time, action, where they are stored and the
  marker of a writer without a key (:data:`UNSIGNED_LABEL`): no other field leaves the store.

Hours are keyed ``YYYY-MM-DDTHH`` (UTC), as :func:`hour_of` derives them from a timestamp.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import orjson

from audit._opensearch import OpenSearchStore, translated_errors
from audit._sqlite import SQLiteStore
from audit._store import AuditStore
from audit.events import parse_timestamp

__all__ = [
    "HOUR",
    "UNSIGNED_LABEL",
    "Inventory",
    "StoredEvent",
    "hour_of",
    "hour_start",
    "inventory_of",
]

HOUR: Final = timedelta(hours=1)
#: A writer that signs nothing (a CLI run without a signing key) says so in this label
#: (value ``"off"``) of each event it writes (``audit/_clisink.py``).
UNSIGNED_LABEL: Final = "audit_signing"
#: Buckets per aggregation page (hours of ``hours``, ids of ``ids_in``).
PAGE: Final = 10_000
DESCRIBE_CHUNK: Final = 500
_TABLE: Final = "audit_events"


def hour_of(timestamp: str) -> str:
    """The UTC hour ``YYYY-MM-DDTHH`` of a timestamp (the stores' canonical form is sliced,
    any other form parsed first). Raises ValueError on a string that is no timestamp."""
    if len(timestamp) == 27 and timestamp[-1] == "Z" and timestamp[10] == "T":
        return timestamp[:13]
    return parse_timestamp(timestamp).astimezone(UTC).strftime("%Y-%m-%dT%H")


def hour_start(hour: str) -> datetime:
    """The first moment of an hour key."""
    return datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as verify reports it: no personal data (no user, address, path)."""

    event_id: str
    timestamp: str
    action: str
    category: str
    where: str  # the index it is in (OpenSearch) or its UTC day (SQLite)
    keyless: bool  # marked by its writer as written without a signing key


class Inventory(Protocol):
    def hours(self, *, since: datetime | None, until: datetime | None) -> dict[str, int]:
        """Events per UTC hour with ``@timestamp`` in ``[since, until)`` (hours without
        events left out)."""

    def ids_in(self, hour: str) -> Iterator[tuple[str, int]]:
        """Each event id stored in ``hour`` and how many documents carry it (``""``: the
        documents that carry none)."""

    def describe(self, event_ids: Sequence[str]) -> list[StoredEvent]:
        """The stored documents of ``event_ids`` (each copy once)."""


def _described(doc: dict[str, Any], where: str) -> StoredEvent:
    labels = doc.get("labels")
    keyless = isinstance(labels, dict) and labels.get(UNSIGNED_LABEL) == "off"
    return StoredEvent(
        event_id=str(doc.get("event.id") or ""),
        timestamp=str(doc.get("@timestamp") or ""),
        action=str(doc.get("event.action") or ""),
        category=str(doc.get("audit.category") or ""),
        where=where,
        keyless=keyless,
    )


class OpenSearchInventory:
    """The daily indices (``-kept`` ones included: the pattern covers them)."""

    def __init__(self, store: OpenSearchStore) -> None:
        self._client = store._client
        self._pattern = f"{store.index_prefix}audit-events-*"

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        with translated_errors():
            response: dict[str, Any] = self._client.search(
                index=self._pattern, body=body, ignore_unavailable=True, allow_no_indices=True
            )
        return response

    def _composite(self, query: dict[str, Any], source: dict[str, Any]) -> Iterator[Any]:
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"sources": [{"k": source}], "size": PAGE}
            if after is not None:
                composite["after"] = after
            body = {"query": query, "size": 0, "aggs": {"c": {"composite": composite}}}
            agg = (self._search(body).get("aggregations") or {}).get("c") or {}
            buckets = agg.get("buckets") or []
            for bucket in buckets:
                yield bucket["key"]["k"], int(bucket["doc_count"])
            after = agg.get("after_key")
            if len(buckets) < PAGE or after is None:
                return

    @staticmethod
    def _range(since: datetime | None, until: datetime | None) -> dict[str, Any]:
        bounds = {
            op: at.astimezone(UTC).isoformat()
            for op, at in (("gte", since), ("lt", until))
            if at is not None
        }
        return {"range": {"@timestamp": bounds}} if bounds else {"match_all": {}}

    def hours(self, *, since: datetime | None, until: datetime | None) -> dict[str, int]:
        histogram = {"field": "@timestamp", "fixed_interval": "1h", "time_zone": "UTC"}
        found: dict[str, int] = {}
        for key, count in self._composite(self._range(since, until), {"date_histogram": histogram}):
            moment = datetime.fromtimestamp(int(key) / 1000, tz=UTC)
            found[moment.strftime("%Y-%m-%dT%H")] = count
        return found

    def ids_in(self, hour: str) -> Iterator[tuple[str, int]]:
        start = hour_start(hour)
        source = {"terms": {"field": "event.id", "missing_bucket": True}}
        for key, count in self._composite(self._range(start, start + HOUR), source):
            yield ("" if key is None else str(key)), count

    def describe(self, event_ids: Sequence[str]) -> list[StoredEvent]:
        found: list[StoredEvent] = []
        wanted = sorted(set(event_ids))
        for at in range(0, len(wanted), DESCRIBE_CHUNK):
            chunk = wanted[at : at + DESCRIBE_CHUNK]
            body = {
                "query": {"terms": {"event.id": chunk}},
                "_source": ["event.id", "@timestamp", "event.action", "audit.category", "labels"],
                "size": 10 * len(chunk),  # copies of one id included
                "sort": [{"@timestamp": "asc"}, {"event.id": "asc"}],
            }
            for hit in self._search(body)["hits"]["hits"]:
                found.append(_described(hit["_source"], str(hit["_index"])))
        return found


class SQLiteInventory:
    """The ``audit_events`` table (its ``ts`` column is the canonical ``@timestamp``)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._store._lock:
            try:
                return self._store._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def hours(self, *, since: datetime | None, until: datetime | None) -> dict[str, int]:
        where, params = "1 = 1", []
        if since is not None:
            where += " AND ts >= ?"
            params.append(_iso(since))
        if until is not None:
            where += " AND ts < ?"
            params.append(_iso(until))
        rows = self._rows(
            f"SELECT substr(ts, 1, 13) AS h, COUNT(*) FROM {_TABLE} WHERE {where} GROUP BY h",
            params,
        )
        return {str(h): int(n) for h, n in rows}

    def ids_in(self, hour: str) -> Iterator[tuple[str, int]]:
        start = hour_start(hour)
        rows = self._rows(
            f"SELECT event_id FROM {_TABLE} WHERE ts >= ? AND ts < ?",
            (_iso(start), _iso(start + HOUR)),
        )
        for (event_id,) in rows:  # the primary key: one document per id
            yield ("" if event_id is None else str(event_id)), 1

    def describe(self, event_ids: Sequence[str]) -> list[StoredEvent]:
        found: list[StoredEvent] = []
        wanted = sorted(set(event_ids))
        for at in range(0, len(wanted), DESCRIBE_CHUNK):
            chunk = wanted[at : at + DESCRIBE_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._rows(
                f"SELECT event_id, ts, event_action, audit_category, labels FROM {_TABLE}"
                f" WHERE event_id IN ({marks}) ORDER BY ts, event_id",
                chunk,
            )
            for event_id, ts, action, category, labels in rows:
                doc = {
                    "event.id": event_id,
                    "@timestamp": ts,
                    "event.action": action,
                    "audit.category": category,
                    "labels": _labels(labels),
                }
                found.append(_described(doc, str(ts)[:10]))
        return found


def _labels(text: str | None) -> dict[str, Any]:
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def inventory_of(store: AuditStore) -> Inventory:
    """The inventory of an event store (OpenSearch or SQLite)."""
    if isinstance(store, OpenSearchStore):
        return OpenSearchInventory(store)
    if isinstance(store, SQLiteStore):
        return SQLiteInventory(store)
    raise TypeError(f"no inventory for {type(store).__name__}")
