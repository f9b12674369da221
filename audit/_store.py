"""What every audit store offers: the shipper's bulk write, and search, count, delete, minimise.

Two stores implement :class:`AuditStore`: OpenSearch (production, ``audit/_opensearch.py``)
and SQLite (embedded, ``audit/_sqlite.py``). One contract test suite runs against both.

A :class:`Scope` selects events (all given conditions must hold; a condition left empty does
not restrict). ``exclude`` scopes remove events from the selection: retention passes the
active holds there, so a held event is never deleted or minimised. ``delete`` and ``minimise``
refuse a scope without an upper time bound (``until``): nobody deletes audit events by hand.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from audit.events import FREE_TEXT_SOURCES

__all__ = [
    "COUNT_KEYS",
    "PLATFORM_ID_CATEGORY",
    "TEXT_FIELDS",
    "TOTAL_LIMIT",
    "AuditStore",
    "Guard",
    "ItemResult",
    "Page",
    "Record",
    "Scope",
    "Total",
    "platform_id_groups",
    "truncate_ip",
]

#: Asked right before each change ``delete`` or ``minimise`` is about to make (each bulk
#: request, each index drop): ``False`` stops the call there, and it returns what it changed so
#: far. Retention re-reads the active holds in it, so a hold placed mid-step stops the step.
Guard = Callable[[], bool]
#: Totals are exact up to this many matches, then reported as "at least" this many.
TOTAL_LIMIT: Final = 10_000
#: Free text (``Scope.text``) matches a case-insensitive substring of any of these fields
#: (OpenSearch: one ``wildcard`` field they are copied into, ``audit.events.FREE_TEXT_FIELD``).
TEXT_FIELDS: Final = FREE_TEXT_SOURCES
#: What ``AuditStore.counts`` can group by: keyword fields, and ``week`` (ISO weeks, Monday
#: 00:00 UTC, given as ``YYYY-MM-DD``). ``user.roles`` holds a list: an event counts once under
#: each of its roles (and under ``""`` when it has none).
COUNT_KEYS: Final = (
    "audit.category",
    "event.action",
    "organization.id",
    "event.outcome",
    "user.roles",
    "week",
)


@dataclass(frozen=True, slots=True)
class Total:
    """How many events match: exact when ``exact``, else at least ``value``."""

    value: int
    exact: bool


@dataclass(frozen=True, slots=True)
class Record:
    """One rendered event on its way to the store: id, ``@timestamp``, and the JSON bytes."""

    event_id: str
    timestamp: str
    document: bytes


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The store's answer for one record of a bulk write.

    ``stored``: written now; ``duplicate``: already there (a retried write; counts as stored);
    ``retry``: a transient failure of this item (429, 5xx, a block); ``rejected``: the document
    does not fit the mapping and never will (goes to the dead letters with ``reason``).
    """

    status: Literal["stored", "duplicate", "retry", "rejected"]
    reason: str = ""
    error_type: str = ""


@dataclass(frozen=True, slots=True)
class Scope:
    """A selection of events; empty fields do not restrict. Times are aware datetimes."""

    user_ids: Sequence[str] = ()
    source_ips: Sequence[str] = ()  # addresses or CIDRs
    organization_ids: Sequence[str] = ()
    categories: Sequence[str] = ()  # audit.category (retention categories)
    actions: Sequence[str] = ()
    event_ids: Sequence[str] = ()
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    minimised: bool | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # --- for audit search (issue 7) ---
    subjects: Sequence[str] = ()  # user.id OR user.target.id (the person, either way)
    #: The person's platform ids as (tenant, id): with ``subjects``, also every
    #: personal-data event whose ``user.target.id`` is the id and ``labels.data_tenant`` the
    #: tenant (``""``: any tenant). Widens only the person condition (:func:`platform_id_groups`).
    platform_ids: Sequence[tuple[str, str]] = ()
    target_ids: Sequence[str] = ()  # user.target.id
    tenants: Sequence[str] = ()  # organization.id OR labels.data_tenant (whose data it is)
    outcomes: Sequence[str] = ()  # event.outcome
    status_codes: Sequence[int] = ()  # http.response.status_code
    trace_ids: Sequence[str] = ()  # trace.id (the request id)
    rule_names: Sequence[str] = ()  # rule.name
    text: str | None = None  # case-insensitive; see TEXT_FIELDS

    def __post_init__(self) -> None:
        if self.text is not None and not self.text.strip():
            raise ValueError("free text must not be blank")
        for value in self.source_ips:
            ipaddress.ip_network(value, strict=False)  # ValueError on a bad address
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("scope times must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Page:
    """Where the previous page of a search ended: its last event's time and id."""

    timestamp: str
    event_id: str

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> Page:
        return cls(str(event["@timestamp"]), str(event["event.id"]))


#: The only category whose ``user.target.id`` is a platform person id (policies' routes).
PLATFORM_ID_CATEGORY: Final = "personal_data_access"


def platform_id_groups(scope: Scope) -> dict[str, list[str]]:
    """The scope's platform ids grouped by tenant (``""``: any tenant), for the stores'
    person condition: user.id or user.target.id in ``subjects``, or a personal-data event
    whose target is one of a tenant's ids under that tenant."""
    groups: dict[str, list[str]] = {}
    for tenant, person_id in scope.platform_ids:
        groups.setdefault(tenant, []).append(person_id)
    return groups


def truncate_ip(value: str) -> str:
    """Minimise an address: IPv4 to its /24, IPv6 to its /48 (the network address)."""
    address = ipaddress.ip_address(value)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


class AuditStore(Protocol):
    """The interface the pipeline, the audit search endpoint and retention use."""

    def ensure_schema(self) -> None:
        """Create the template/tables if missing (idempotent). Raises StoreUnavailable."""

    def ping(self) -> bool:
        """True when the store answers (for readiness checks); never raises."""

    def write(self, records: Sequence[Record]) -> list[ItemResult]:
        """Write each record once (``create`` by event id). One result per record, in order.

        Raises :class:`audit.errors.StoreUnavailable` when the whole request failed.
        """

    def write_deadletters(self, items: Sequence[tuple[Record, ItemResult]]) -> None:
        """Keep rejected records whole, with the reason. Raises StoreUnavailable."""

    def deadletters(self) -> list[dict[str, Any]]:
        """Every dead letter kept (``event_id``, ``reason``, ``error_type``, ``document``)."""

    def refresh(self) -> None:
        """Make everything written so far visible to search and count."""

    def search(
        self,
        scope: Scope,
        *,
        exclude: Sequence[Scope] = (),
        size: int = 100,
        newest_first: bool = False,
        after: Page | None = None,
    ) -> list[dict[str, Any]]:
        """Matching events as flat dicts, oldest first (by @timestamp, then event id) or
        newest first. For the next page pass ``after=Page.of(last_event_of_this_page)``."""

    def ids(self, scope: Scope, *, exclude: Sequence[Scope] = ()) -> Iterator[tuple[str, str]]:
        """Every matching event's id and ``@timestamp`` (as the store keeps it: OpenSearch to
        the millisecond), oldest first, without reading the documents: what retention records
        of a deletion. Lazily paged; consume it before changing what it selects."""

    def count(self, scope: Scope, *, exclude: Sequence[Scope] = ()) -> int:
        """How many events match."""

    def total(self, scope: Scope, *, limit: int = TOTAL_LIMIT) -> Total:
        """How many events match, counted exactly up to ``limit``; beyond, ``exact=False``
        and ``value == limit``."""

    def counts(self, scope: Scope, *, by: Sequence[str]) -> dict[tuple[str, ...], int]:
        """Matching events counted per combination of the ``by`` keys (from
        :data:`COUNT_KEYS`); an event without a key's field counts under ``""``."""

    def delete(
        self, scope: Scope, *, exclude: Sequence[Scope] = (), guard: Guard | None = None
    ) -> int:
        """Delete matching events; returns how many. ``scope.until`` is required. ``guard``
        is asked before each change (see :data:`Guard`)."""

    def minimise(
        self, scope: Scope, *, exclude: Sequence[Scope] = (), guard: Guard | None = None
    ) -> int:
        """Apply each field's minimisation (IP truncated, user agent dropped) to matching
        events not yet minimised; returns how many changed. ``scope.until`` is required.
        ``guard`` is asked before each change (see :data:`Guard`)."""

    def close(self) -> None:
        """Release connections."""


def require_until(scope: Scope) -> None:
    if scope.until is None:
        raise ValueError("delete and minimise need an upper time bound (scope.until)")
