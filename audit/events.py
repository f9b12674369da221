"""The audit event model in one place: fields, actions, categories, ids, and the stores' schema.

Every audit event is a flat mapping of ECS field names (dotted) to values. This module is the
single definition of:

* :data:`FIELDS`: each field's name, type, whether it holds a list, and how retention minimises
  it. The OpenSearch index template (:func:`index_template`, strict mappings) and the SQLite
  columns (:data:`SQLITE_COLUMNS`) are both generated from it, so the stores cannot drift apart.
* :data:`ACTIONS`: the action taxonomy of DESIGN.md §3 as constants, each with its ECS
  ``event.category``/``event.type`` and its **retention category** (DESIGN.md §4).
* :data:`SCHEMA_VERSION` and :func:`new_event_id` (UUIDv7: unique and time-sortable).
* the daily index name of an event (:func:`index_name`), by the event's own ``@timestamp``.

An action that is not in the taxonomy is never dropped: it is classed with the backbone's own
trail (the longest retention and the ``block`` policy) and flagged ``labels.unknown_action``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

__all__ = [
    "ACTIONS",
    "DEADLETTER_INDEX",
    "ECS_VERSION",
    "FIELDS",
    "FREE_TEXT_FIELD",
    "FREE_TEXT_SOURCES",
    "INDEX_BASE",
    "LEGACY_FREE_TEXT_FIELD",
    "SCHEMA_VERSION",
    "SQLITE_COLUMNS",
    "Action",
    "ActionSpec",
    "Category",
    "Field",
    "LoginFailure",
    "action_spec",
    "category_of",
    "deadletter_index_template",
    "field",
    "index_name",
    "index_pattern",
    "index_template",
    "new_event_id",
    "parse_timestamp",
]

#: Bumped whenever a field is added, removed or changes type; stored in every event.
SCHEMA_VERSION: Final = 1
#: The ECS version our field names follow.
ECS_VERSION: Final = "8.11.0"
#: Daily indices are ``{prefix}audit-events-YYYY.MM.DD``.
INDEX_BASE: Final = "audit-events"
#: Events OpenSearch rejected (mapping errors) are kept whole in ``{prefix}audit-deadletter``.
DEADLETTER_INDEX: Final = "audit-deadletter"

FieldType = Literal["keyword", "text", "date", "ip", "long", "boolean", "object"]
Minimise = Literal["truncate_ip", "drop"]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of the event: ECS name, type, list or scalar, and its minimisation."""

    name: str
    type: FieldType
    multi: bool = False
    minimise: Minimise | None = None
    required: bool = False

    @property
    def column(self) -> str:
        """The SQLite column name: dots become underscores, ``@timestamp`` becomes ``ts``."""
        return "ts" if self.name == "@timestamp" else self.name.replace(".", "_")


FIELDS: Final[tuple[Field, ...]] = (
    Field("@timestamp", "date", required=True),
    Field("event.id", "keyword", required=True),
    Field("event.kind", "keyword"),
    Field("event.category", "keyword", multi=True),
    Field("event.type", "keyword", multi=True),
    Field("event.action", "keyword", required=True),
    Field("event.outcome", "keyword"),
    Field("event.reason", "keyword"),
    Field("user.id", "keyword"),
    Field("user.roles", "keyword", multi=True),
    Field("user.target.id", "keyword"),
    Field("organization.id", "keyword"),
    Field("source.ip", "ip", minimise="truncate_ip"),
    Field("user_agent.original", "keyword", minimise="drop"),
    Field("http.request.method", "keyword"),
    Field("http.response.status_code", "long"),
    Field("url.path", "keyword"),
    Field("error.type", "keyword"),
    Field("error.message", "text"),
    Field("trace.id", "keyword"),
    Field("rule.name", "keyword"),
    Field("labels", "object"),
    Field("ecs.version", "keyword"),
    Field("audit.schema_version", "long", required=True),
    Field("audit.category", "keyword", required=True),
    Field("audit.data_categories", "keyword", multi=True),
    Field("audit.token_hash", "keyword"),
    Field("audit.minimised", "boolean"),
)

#: The fields free-text search looks into (a case-insensitive substring of any of them).
FREE_TEXT_SOURCES: Final = (
    "url.path",
    "event.reason",
    "error.type",
    "user_agent.original",
    "error.message",
)
#: OpenSearch only: the sources are copied into this one ``wildcard`` field (indexed as
#: n-grams, so ``*text*`` needs no scan of every term), which no document carries itself. Its
#: ``lowercase`` normalizer lowercases values and patterns, so a case-insensitive search is a
#: plain conjunction of n-gram terms (``case_insensitive: true`` on a field without it expands
#: every n-gram into its case variants: about 2x slower at 1,000,000 events, bench/search.py).
FREE_TEXT_FIELD: Final = "audit.search_text"
#: The free-text field of indices made before the normalizer (no longer written; ``python -m
#: audit migrate`` adds FREE_TEXT_FIELD to such indices and fills it).
LEGACY_FREE_TEXT_FIELD: Final = "audit.free_text"

_BY_NAME: Final = {f.name: f for f in FIELDS}
#: SQLite column name for each field name, in schema order.
SQLITE_COLUMNS: Final[dict[str, str]] = {f.name: f.column for f in FIELDS}


def field(name: str) -> Field | None:
    """The definition of field ``name``, or None when the schema has no such field."""
    return _BY_NAME.get(name)


class Category(StrEnum):
    """Retention categories (DESIGN.md §4); each has its own period and spool-full policy."""

    AUTHENTICATION = "authentication"
    ACCESS_DENIED = "access_denied"
    PERSONAL_DATA = "personal_data_access"
    ERRORS = "errors"
    BACKBONE = "backbone"


class Action(StrEnum):
    """Every ``event.action`` the platform records (DESIGN.md §3)."""

    LOGIN_SUCCESS = "login_success"
    LOGIN_FAILURE = "login_failure"
    LOGOUT = "logout"
    SESSION_REFRESH = "session_refresh"
    SESSION_REJECTED = "session_rejected"
    SESSIONS_REVOKED = "sessions_revoked"
    AUTHENTICATION_FAILED = "authentication_failed"
    LOGIN_THROTTLED = "login_throttled"
    BEARER_THROTTLED = "bearer_throttled"
    BEARER_TOKEN_REJECTED = "bearer_token_rejected"  # noqa: S105 - an action name
    ACCESS_DENIED = "access_denied"
    PERSONAL_DATA_ACCESS = "personal_data_access"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    GATEWAY_ERROR = "gateway_error"
    AUDIT_SEARCH = "audit_search"
    AUDIT_EXPORT = "audit_export"
    AUDIT_PSEUDONYM_LOOKUP = "audit_pseudonym_lookup"
    AUDIT_VERIFY = "audit_verify"
    AUDIT_EVENTS_DROPPED = "audit_events_dropped"
    AUDIT_MIGRATION = "audit_migration"
    HOLD_PLACED = "hold_placed"
    HOLD_RELEASED = "hold_released"
    RETENTION_RUN = "retention_run"
    POLICY_RELOADED = "policy_reloaded"
    POLICY_RELOAD_FAILED = "policy_reload_failed"
    ROLE_GRANTED = "role_granted"
    ROLE_REVOKED = "role_revoked"
    GRANTS_RELOAD_FAILED = "grants_reload_failed"


class LoginFailure(StrEnum):
    """The ``event.reason`` of a ``login_failure`` (and of ``bearer_token_rejected``)."""

    STATE_MISMATCH = "state_mismatch"
    IDP_ERROR = "idp_error"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - a reason id
    EXPIRED = "expired"
    UNKNOWN_ISSUER = "unknown_issuer"
    NO_ROLE_MAPPING = "no_role_mapping"
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """What an action means: its retention category and ECS categorisation."""

    action: str
    category: Category
    ecs_category: tuple[str, ...]
    ecs_type: tuple[str, ...]


def _spec(action: Action, category: Category, ecs_category: str, *ecs_type: str) -> ActionSpec:
    return ActionSpec(action.value, category, (ecs_category,), tuple(ecs_type))


_AUTH, _DENIED, _PD = Category.AUTHENTICATION, Category.ACCESS_DENIED, Category.PERSONAL_DATA
_ERR, _BB = Category.ERRORS, Category.BACKBONE

ACTIONS: Final[dict[str, ActionSpec]] = {
    s.action: s
    for s in (
        _spec(Action.LOGIN_SUCCESS, _AUTH, "authentication", "start"),
        _spec(Action.LOGIN_FAILURE, _AUTH, "authentication", "start"),
        _spec(Action.LOGOUT, _AUTH, "authentication", "end"),
        _spec(Action.SESSION_REFRESH, _AUTH, "session", "change"),
        _spec(Action.BEARER_TOKEN_REJECTED, _AUTH, "authentication", "denied"),
        _spec(Action.SESSION_REJECTED, _AUTH, "session", "denied"),
        _spec(Action.SESSIONS_REVOKED, _AUTH, "session", "end"),
        _spec(Action.AUTHENTICATION_FAILED, _AUTH, "authentication", "denied"),
        _spec(Action.LOGIN_THROTTLED, _AUTH, "authentication", "denied"),
        _spec(Action.BEARER_THROTTLED, _AUTH, "authentication", "denied"),
        _spec(Action.ACCESS_DENIED, _DENIED, "web", "denied"),
        _spec(Action.PERSONAL_DATA_ACCESS, _PD, "web", "access"),
        _spec(Action.UPSTREAM_ERROR, _ERR, "web", "error"),
        _spec(Action.UPSTREAM_TIMEOUT, _ERR, "web", "error"),
        _spec(Action.GATEWAY_ERROR, _ERR, "web", "error"),
        _spec(Action.AUDIT_SEARCH, _BB, "database", "access"),
        _spec(Action.AUDIT_EXPORT, _BB, "database", "access"),
        _spec(Action.AUDIT_PSEUDONYM_LOOKUP, _BB, "database", "access"),
        _spec(Action.AUDIT_VERIFY, _BB, "database", "access"),
        _spec(Action.AUDIT_EVENTS_DROPPED, _BB, "database", "info"),
        _spec(Action.AUDIT_MIGRATION, _BB, "database", "change"),
        _spec(Action.HOLD_PLACED, _BB, "configuration", "creation"),
        _spec(Action.HOLD_RELEASED, _BB, "configuration", "change"),
        _spec(Action.RETENTION_RUN, _BB, "database", "deletion"),
        _spec(Action.POLICY_RELOADED, _BB, "configuration", "change"),
        _spec(Action.POLICY_RELOAD_FAILED, _BB, "configuration", "error"),
        _spec(Action.ROLE_GRANTED, _BB, "iam", "change"),
        _spec(Action.ROLE_REVOKED, _BB, "iam", "change"),
        _spec(Action.GRANTS_RELOAD_FAILED, _BB, "configuration", "error"),
    )
}


def action_spec(action: object) -> ActionSpec | None:
    """The spec of ``action``, or None when it is not part of the taxonomy."""
    return ACTIONS.get(action) if isinstance(action, str) else None


def category_of(event: Mapping[str, Any]) -> Category:
    """The retention category of an event; unknown actions count as the backbone's trail."""
    spec = action_spec(event.get("event.action"))
    return Category.BACKBONE if spec is None else spec.category


# --- event ids -------------------------------------------------------------------------------


class _UUIDv7:
    """UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then a 12-bit counter and 62 random bits.

    Within one millisecond the counter increases, so ids from one process sort in the order
    they were made; across processes the random bits keep them unique.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def __call__(self, unix_ns: int | None = None) -> str:
        ms = (time.time_ns() if unix_ns is None else unix_ns) // 1_000_000
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                self._counter += 1
                if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                    ms += 1
                    self._counter = 0
            else:
                self._counter = 0
            self._last_ms = ms
            counter = self._counter
        rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: A new unique, time-sortable event id (UUIDv7 string), optionally for a given time in ns.
new_event_id = _UUIDv7()


# --- timestamps and index names --------------------------------------------------------------


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 ``@timestamp`` (``Z`` or an offset) into an aware UTC datetime."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return parsed.astimezone(UTC)


def index_name(prefix: str, timestamp: str) -> str:
    """The daily index of an event by its own ``@timestamp``: ``{prefix}audit-events-Y.m.d``."""
    # ISO-8601 UTC stamps start with YYYY-MM-DD; only parse when an offset could shift the day.
    if len(timestamp) >= 11 and timestamp.endswith(("Z", "+00:00")):
        day = timestamp[:10].replace("-", ".")
    else:
        day = parse_timestamp(timestamp).strftime("%Y.%m.%d")
    return f"{prefix}{INDEX_BASE}-{day}"


def index_pattern(prefix: str) -> str:
    """The pattern that covers every daily index under ``prefix``."""
    return f"{prefix}{INDEX_BASE}-*"


# --- OpenSearch templates --------------------------------------------------------------------


def _mapping_of(f: Field) -> dict[str, Any]:
    if f.type == "object":  # labels: free keys, keyword values (ECS labels)
        return {"type": "object", "dynamic": True}
    if f.type == "date":
        return {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
    if f.type == "keyword":
        return {"type": "keyword", "ignore_above": 2048}
    return {"type": f.type}


def _properties() -> dict[str, Any]:
    """Nested ``properties`` for the dotted field names (OpenSearch stores dots as objects)."""
    root: dict[str, Any] = {}
    for f in FIELDS:
        parts = f.name.split(".")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {"type": "object", "properties": {}})["properties"]
        node[parts[-1]] = _mapping_of(f)
        if f.name in FREE_TEXT_SOURCES:
            node[parts[-1]]["copy_to"] = FREE_TEXT_FIELD
    # doc_values: a wildcard query verifies its n-gram candidates against the field's value,
    # read from doc values, else from _source, where a copied field is not: no hit at all.
    root["audit"]["properties"][FREE_TEXT_FIELD.split(".")[1]] = {
        "type": "wildcard",
        "doc_values": True,
        "normalizer": "lowercase",
    }
    return root


def index_template(prefix: str, *, shards: int = 1, replicas: int = 1) -> dict[str, Any]:
    """The composable index template for the daily indices: strict mappings from :data:`FIELDS`.

    ``dynamic: strict`` makes OpenSearch reject a document with a field the schema does not
    know; only ``labels.*`` takes new keys, always as keywords.
    """
    return {
        "index_patterns": [index_pattern(prefix)],
        "priority": 200,
        "template": {
            "settings": {
                "index": {"number_of_shards": shards, "number_of_replicas": replicas},
            },
            "mappings": {
                "dynamic": "strict",
                "dynamic_templates": [
                    {
                        "labels_as_keywords": {
                            "path_match": "labels.*",
                            "mapping": {"type": "keyword", "ignore_above": 2048},
                        }
                    }
                ],
                "properties": _properties(),
            },
        },
        "_meta": {"audit_schema_version": SCHEMA_VERSION, "ecs_version": ECS_VERSION},
    }


def deadletter_index_template(prefix: str, *, shards: int = 1, replicas: int = 1) -> dict[str, Any]:
    """The dead-letter index keeps a rejected event whole, as text, with the reason."""
    return {
        "index_patterns": [f"{prefix}{DEADLETTER_INDEX}"],
        "priority": 200,
        "template": {
            "settings": {
                "index": {"number_of_shards": shards, "number_of_replicas": replicas},
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "@timestamp": {"type": "date"},
                    "event_id": {"type": "keyword"},
                    "index": {"type": "keyword"},
                    "reason": {"type": "text"},
                    "error_type": {"type": "keyword"},
                    "document": {"type": "text", "index": False},
                },
            },
        },
    }
