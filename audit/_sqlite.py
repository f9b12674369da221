# ruff: noqa: S608 - SQL is built from our own table/column constants; values are bound
"""The embedded store: SQLite in WAL mode, one column per schema field (``audit.events``).

For the demo and single-machine installs. It behaves like the OpenSearch store where the
contract tests look: ``create`` by event id (a second write is a duplicate), documents that do
not fit the schema are rejected with a reason (unknown field, wrong type) instead of stored,
and the same :class:`audit.Scope` selects events. Lists and ``labels`` are stored as JSON
text. One connection, guarded by a lock: the shipper thread writes, other threads read.
Several processes may share the file (each with its own spool): a write waits up to
``BUSY_TIMEOUT`` for the lock, then fails as unavailable and the shipper retries.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from audit._store import (
    COUNT_KEYS,
    PLATFORM_ID_CATEGORY,
    TEXT_FIELDS,
    TOTAL_LIMIT,
    Guard,
    ItemResult,
    Page,
    Record,
    Scope,
    Total,
    platform_id_groups,
    require_until,
    truncate_ip,
)
from audit.errors import StoreUnavailable
from audit.events import FIELDS, SQLITE_COLUMNS, Field, field, parse_timestamp

__all__ = ["SQLiteStore"]

TABLE: Final = "audit_events"
DEADLETTER_TABLE: Final = "audit_deadletters"
_INDEXED: Final = (
    "ts",
    "user_id",
    "user_target_id",
    "organization_id",
    "audit_category",
    "event_action",
)
_COLUMNS: Final = list(SQLITE_COLUMNS.values())
#: Seconds to wait for another process's write lock (several gateway workers, one file).
BUSY_TIMEOUT: Final = 10.0
#: The alias of the ``json_each`` table that spreads ``user.roles`` for counting.
_ROLE: Final = "role_each"


def _sql_type(f: Field) -> str:
    if f.type in ("long", "boolean"):
        return "INTEGER"
    return "TEXT"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ip_in(ip: str | None, network: str) -> int:
    if ip is None:
        return 0
    try:
        return int(ipaddress.ip_address(ip) in ipaddress.ip_network(network, strict=False))
    except ValueError:
        return 0


class _Rejected(ValueError):
    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.error_type = error_type


def _value_for(f: Field, value: Any) -> Any:  # noqa: PLR0911, PLR0912 - one branch per type
    """Check ``value`` against the field's type (as a strict mapping would) and encode it."""
    if value is None:
        return None
    if f.multi:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items):
            raise _Rejected(f"{f.name}: expected strings", "mapper_parsing_exception")
        return orjson.dumps(items).decode()
    if f.type == "object":
        if not isinstance(value, dict):
            raise _Rejected(f"{f.name}: expected an object", "mapper_parsing_exception")
        return orjson.dumps({k: str(v) for k, v in value.items()}).decode()
    if f.type == "long":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Rejected(f"{f.name}: expected an integer", "mapper_parsing_exception")
        return value
    if f.type == "boolean":
        if not isinstance(value, bool):
            raise _Rejected(f"{f.name}: expected a boolean", "mapper_parsing_exception")
        return int(value)
    if not isinstance(value, str):
        raise _Rejected(f"{f.name}: expected a string", "mapper_parsing_exception")
    if f.type == "ip":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError as exc:
            raise _Rejected(f"{f.name}: {exc}", "mapper_parsing_exception") from exc
    if f.type == "date":
        try:
            return _iso(parse_timestamp(value))
        except ValueError as exc:
            raise _Rejected(f"{f.name}: {exc}", "mapper_parsing_exception") from exc
    return value


def _row(document: bytes) -> list[Any]:
    try:
        doc = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise _Rejected(f"not JSON: {exc}", "parse_exception") from exc
    if not isinstance(doc, dict):
        raise _Rejected("not a JSON object", "parse_exception")
    unknown = [name for name in doc if field(name) is None]
    if unknown:
        raise _Rejected(f"unknown fields {sorted(unknown)}", "strict_dynamic_mapping_exception")
    for f in FIELDS:
        if f.required and doc.get(f.name) is None:
            raise _Rejected(f"missing {f.name}", "mapper_parsing_exception")
    return [_value_for(f, doc.get(f.name)) for f in FIELDS]


def _from_row(row: sqlite3.Row) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for f in FIELDS:
        value = row[f.column]
        if value is None:
            continue
        if f.multi or f.type == "object":
            value = orjson.loads(value)
        elif f.type == "boolean":
            value = bool(value)
        doc[f.name] = value
    return doc


def _where(scope: Scope, exclude: Sequence[Scope]) -> tuple[str, list[Any]]:
    clause, params = _conditions(scope)
    for held in exclude:
        held_clause, held_params = _conditions(held)
        # COALESCE: a NULL column makes the condition NULL, and NOT NULL would hide the event.
        clause += f" AND NOT COALESCE(({held_clause}), 0)"
        params += held_params
    return clause, params


def _conditions(scope: Scope) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for column, values in (
        ("user_id", scope.user_ids),
        ("organization_id", scope.organization_ids),
        ("audit_category", scope.categories),
        ("event_action", scope.actions),
        ("event_id", scope.event_ids),
        ("user_target_id", scope.target_ids),
        ("event_outcome", scope.outcomes),
        ("http_response_status_code", scope.status_codes),
        ("trace_id", scope.trace_ids),
        ("rule_name", scope.rule_names),
    ):
        if values:
            parts.append(f"{column} IN ({','.join('?' * len(values))})")
            params += list(values)
    if scope.subjects or scope.platform_ids:
        person, person_params = _person(scope)
        parts.append(person)
        params += person_params
    if scope.tenants:
        marks = ",".join("?" * len(scope.tenants))
        parts.append(
            f"(organization_id IN ({marks}) OR json_extract(labels, '$.data_tenant') IN ({marks}))"
        )
        params += [*scope.tenants, *scope.tenants]
    if scope.text is not None:
        columns = [SQLITE_COLUMNS[name] for name in TEXT_FIELDS]
        parts.append("(" + " OR ".join(f"instr(lower({c}), ?) > 0" for c in columns) + ")")
        params += [scope.text.lower()] * len(columns)
    if scope.source_ips:
        parts.append("(" + " OR ".join("ip_in(source_ip, ?)" for _ in scope.source_ips) + ")")
        params += list(scope.source_ips)
    if scope.since is not None:
        parts.append("ts >= ?")
        params.append(_iso(scope.since))
    if scope.until is not None:
        parts.append("ts < ?")
        params.append(_iso(scope.until))
    if scope.minimised is True:
        parts.append("audit_minimised = 1")
    elif scope.minimised is False:
        parts.append("(audit_minimised IS NULL OR audit_minimised = 0)")
    for key, value in scope.labels.items():
        parts.append("json_extract(labels, ?) = ?")
        params += ['$."' + key.replace('"', "") + '"', value]
    return (" AND ".join(parts) or "1 = 1"), params


def _person(scope: Scope) -> tuple[str, list[Any]]:
    """The person either way (user.id, user.target.id), or their platform ids as targets of
    personal-data events (under the id's tenant)."""
    alternatives: list[str] = []
    params: list[Any] = []
    if scope.subjects:
        marks = ",".join("?" * len(scope.subjects))
        alternatives.append(f"user_id IN ({marks}) OR user_target_id IN ({marks})")
        params += [*scope.subjects, *scope.subjects]
    for tenant, ids in platform_id_groups(scope).items():
        clause = f"(audit_category = ? AND user_target_id IN ({','.join('?' * len(ids))})"
        params += [PLATFORM_ID_CATEGORY, *ids]
        if tenant:
            clause += " AND json_extract(labels, '$.data_tenant') = ?"
            params.append(tenant)
        alternatives.append(clause + ")")
    return "(" + " OR ".join(alternatives) + ")", params


def _count_key(key: str) -> str:
    if key not in COUNT_KEYS:
        raise ValueError(f"cannot count by {key!r}; choose from {', '.join(COUNT_KEYS)}")
    if key == "week":  # the Monday of the ISO week ('weekday 0' = the next Sunday or today)
        return f"date({TABLE}.ts, 'weekday 0', '-6 days')"
    if key == "user.roles":
        return f"{_ROLE}.value"
    return f"{TABLE}.{SQLITE_COLUMNS[key]}"


@contextlib.contextmanager
def _busy_is_unavailable() -> Iterator[None]:
    """Another process holding the write lock past the timeout: retry later, like a 429."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"SQLite busy: {exc}") from exc


class SQLiteStore:
    """Audit events in one SQLite file (WAL). ``path=":memory:"`` for a throw-away store."""

    def __init__(self, *, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT
        )
        self._db.row_factory = sqlite3.Row
        self._db.create_function("ip_in", 2, _ip_in, deterministic=True)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")

    def ensure_schema(self) -> None:
        columns = ", ".join(
            f"{f.column} {_sql_type(f)}" + (" PRIMARY KEY" if f.name == "event.id" else "")
            for f in FIELDS
        )
        with self._lock:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({columns})")
            for column in _INDEXED:
                self._db.execute(
                    f"CREATE INDEX IF NOT EXISTS {TABLE}_{column} ON {TABLE} ({column})"
                )
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {DEADLETTER_TABLE} (event_id TEXT PRIMARY KEY,"
                " ts TEXT, reason TEXT, error_type TEXT, document TEXT)"
            )

    def ping(self) -> bool:
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def refresh(self) -> None:
        """Writes are visible at once in SQLite; here for the same interface as OpenSearch."""

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def write(self, records: Sequence[Record]) -> list[ItemResult]:
        placeholders = ",".join("?" * len(_COLUMNS))
        insert = (
            f"INSERT INTO {TABLE} ({','.join(_COLUMNS)}) VALUES ({placeholders})"
            " ON CONFLICT(event_id) DO NOTHING"
        )
        results: list[ItemResult] = []
        with self._lock, _busy_is_unavailable():
            self._db.execute("BEGIN IMMEDIATE")  # take the write lock now, not mid-batch
            try:
                for record in records:
                    try:
                        row = _row(record.document)
                    except _Rejected as exc:
                        results.append(ItemResult("rejected", str(exc), exc.error_type))
                        continue
                    cursor = self._db.execute(insert, row)
                    results.append(ItemResult("stored" if cursor.rowcount else "duplicate"))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return results

    def write_deadletters(self, items: Sequence[tuple[Record, ItemResult]]) -> None:
        now = _iso(datetime.now(UTC))
        with self._lock:
            self._db.executemany(
                f"INSERT OR IGNORE INTO {DEADLETTER_TABLE} VALUES (?, ?, ?, ?, ?)",
                [
                    (r.event_id, now, i.reason, i.error_type, r.document.decode(errors="replace"))
                    for r, i in items
                ],
            )

    def deadletters(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM {DEADLETTER_TABLE} ORDER BY ts").fetchall()
        return [dict(row) for row in rows]

    def search(
        self,
        scope: Scope,
        *,
        exclude: Sequence[Scope] = (),
        size: int = 100,
        newest_first: bool = False,
        after: Page | None = None,
    ) -> list[dict[str, Any]]:
        where, params = _where(scope, exclude)
        order, beyond = ("DESC", "<") if newest_first else ("ASC", ">")
        if after is not None:
            where += f" AND (ts, event_id) {beyond} (?, ?)"
            params += [_iso(parse_timestamp(after.timestamp)), after.event_id]
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM {TABLE} WHERE {where}"
                f" ORDER BY ts {order}, event_id {order} LIMIT ?",
                [*params, size],
            ).fetchall()
        return [_from_row(row) for row in rows]

    def ids(self, scope: Scope, *, exclude: Sequence[Scope] = ()) -> Iterator[tuple[str, str]]:
        """Two columns of the matching rows, read at once (no document is decoded)."""
        where, params = _where(scope, exclude)
        with self._lock:
            rows = self._db.execute(
                f"SELECT event_id, ts FROM {TABLE} WHERE {where} ORDER BY ts, event_id", params
            ).fetchall()
        return iter([(str(r[0]), str(r[1])) for r in rows])

    def count(self, scope: Scope, *, exclude: Sequence[Scope] = ()) -> int:
        where, params = _where(scope, exclude)
        with self._lock:
            (n,) = self._db.execute(
                f"SELECT COUNT(*) FROM {TABLE} WHERE {where}", params
            ).fetchone()
        return int(n)

    def total(self, scope: Scope, *, limit: int = TOTAL_LIMIT) -> Total:
        where, params = _where(scope, ())
        with self._lock:
            (n,) = self._db.execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM {TABLE} WHERE {where} LIMIT ?)",
                [*params, limit + 1],
            ).fetchone()
        return Total(min(int(n), limit), exact=int(n) <= limit)

    def counts(self, scope: Scope, *, by: Sequence[str]) -> dict[tuple[str, ...], int]:
        if not by:
            raise ValueError("counts needs at least one key to group by")
        keys = [_count_key(key) for key in by]
        where, params = _where(scope, ())
        select = ", ".join(keys)
        # One row per (event, role): an event counts once under each of its roles.
        roles = f" LEFT JOIN json_each({TABLE}.user_roles) AS {_ROLE}" if "user.roles" in by else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {select}, COUNT(*) FROM {TABLE}{roles} WHERE {where} GROUP BY {select}",
                params,
            ).fetchall()
        return {
            tuple("" if v is None else str(v) for v in row[: len(keys)]): row[-1] for row in rows
        }

    def delete(
        self, scope: Scope, *, exclude: Sequence[Scope] = (), guard: Guard | None = None
    ) -> int:
        """One statement in a write transaction; ``guard`` is asked inside it, holding the
        database's write lock: a hold stored in this file before is seen, one stored after
        waits until the deletion is committed."""
        require_until(scope)
        where, params = _where(scope, exclude)
        with self._lock, _busy_is_unavailable():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if guard is not None and not guard():
                    self._db.execute("ROLLBACK")
                    return 0
                cursor = self._db.execute(f"DELETE FROM {TABLE} WHERE {where}", params)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(cursor.rowcount)

    def minimise(
        self, scope: Scope, *, exclude: Sequence[Scope] = (), guard: Guard | None = None
    ) -> int:
        """In one write transaction, ``guard`` asked inside it (as :meth:`delete`)."""
        require_until(scope)
        where, params = _where(scope, exclude)
        where += " AND (audit_minimised IS NULL OR audit_minimised = 0)"
        with self._lock, _busy_is_unavailable():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if guard is not None and not guard():
                    self._db.execute("ROLLBACK")
                    return 0
                rows = self._db.execute(
                    f"SELECT event_id, source_ip FROM {TABLE} WHERE {where}",
                    params,
                ).fetchall()
                self._db.executemany(
                    f"UPDATE {TABLE} SET source_ip = ?, user_agent_original = NULL,"
                    " audit_minimised = 1 WHERE event_id = ?",
                    [
                        (truncate_ip(r["source_ip"]) if r["source_ip"] else None, r["event_id"])
                        for r in rows
                    ],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)
