"""Audit search for security staff: filters from query parameters, scope by role, the search.

Three steps, each a plain function or small class so the HTTP layer stays thin:

* :func:`parse_filters` turns query parameters (``name -> [values]``) into :class:`Filters`,
  raising :class:`BadFilter` with a message naming the parameter.
* :func:`scope_for` turns (requester, filters) into the store :class:`Scope`. The scope is
  enforced in the query itself: ``security_officer`` and ``incident_responder`` search
  everything; ``school_admin`` only their own tenant (``organization.id`` or the data tenant of
  a personal-data event); everyone else is refused. Filters only ever narrow: every condition
  is ANDed, and a school admin asking for another tenant is refused, never widened.
* :class:`AuditSearch` runs the search and records it as an ``audit_search`` event (who, the
  filters, how many results), refusals included.
* Paging: an opaque cursor (:class:`CursorCodec`) carries the last event's position, the sort
  order, the OpenSearch point in time and a digest of the requester and scope, signed with
  HMAC. An altered cursor does not decode, and a cursor is only good for the search that made
  it: replayed by another user or with other filters it is refused (and the attempt audited).
  The scope itself is always recomputed from the caller, never read from the cursor.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import secrets
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol, runtime_checkable

import orjson

from audit._sink import AuditSink
from audit._store import AuditStore, Page, Scope, Total
from audit.errors import BadFilter, SearchRefused, StoreError, StoreUnavailable
from audit.events import ACTIONS, Action, Category, parse_timestamp

__all__ = [
    "ALL_EVENTS_ROLES",
    "DEFAULT_PAGE_SIZE",
    "FILTER_PARAMS",
    "LIST_PARAMS",
    "MAX_PAGE_SIZE",
    "MAX_VALUES",
    "OUTCOMES",
    "TENANT_ROLES",
    "AuditSearch",
    "BadFilter",
    "Cursor",
    "CursorCodec",
    "Filters",
    "PointInTimeStore",
    "Requester",
    "SearchRefused",
    "SearchResult",
    "parse_filters",
    "scope_digest",
    "scope_for",
]

#: Roles that search every event.
ALL_EVENTS_ROLES: Final = frozenset({"security_officer", "incident_responder"})
#: Roles that search the events of their own tenant only.
TENANT_ROLES: Final = frozenset({"school_admin"})
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000
#: Longer cursors are refused before any decoding. A cursor that would be longer (a point in
#: time over more than about 60 daily indices) pages without the point in time instead.
MAX_CURSOR_LENGTH: Final = 4096
#: At most this many values per filter (keeps queries bounded).
MAX_VALUES: Final = 100
OUTCOMES: Final = frozenset({"success", "failure", "unknown"})
LIST_PARAMS: Final = {
    "subject": "subjects",
    "target": "target_ids",
    "tenant": "tenants",
    "source_ip": "source_ips",
    "category": "categories",
    "action": "actions",
    "outcome": "outcomes",
    "status": "status_codes",
    "request_id": "trace_ids",
    "rule": "rule_names",
}
#: Every query parameter a search understands (the HTTP layer adds its own: size, cursor).
FILTER_PARAMS: Final = frozenset({*LIST_PARAMS, "since", "until", "q"})


@dataclass(frozen=True, slots=True)
class Requester:
    """Who searches: the issuer-qualified user id, roles and tenant of the caller."""

    user_id: str | None
    roles: frozenset[str]
    tenant: str | None


@dataclass(frozen=True, slots=True)
class Filters:
    """What was asked for; empty fields do not restrict."""

    subjects: tuple[str, ...] = ()
    target_ids: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    source_ips: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    status_codes: tuple[int, ...] = ()
    trace_ids: tuple[str, ...] = ()
    rule_names: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def describe(self) -> dict[str, Any]:
        """The filters as JSON-ready values, empty ones left out (for the audit event)."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if value in ((), None):
                continue
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise BadFilter(f"{name}: give it once")
    return values[0] if values else None


def _moment(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parse_timestamp(value)
    except ValueError as exc:
        raise BadFilter(f"{name}: not an ISO 8601 time with a zone: {value!r}") from exc
    if moment.tzinfo is None:
        raise BadFilter(f"{name}: give a time zone (for example Z): {value!r}")
    return moment


def _check(name: str, value: str) -> Any:
    if not value or len(value) > 512 or not value.isprintable():
        raise BadFilter(f"{name}: empty, too long or not printable")
    if name == "source_ip":
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise BadFilter(f"source_ip: not an address or CIDR: {value!r}") from exc
    elif name == "status":
        if not value.isdigit() or not 100 <= int(value) <= 599:
            raise BadFilter(f"status: not an HTTP status code: {value!r}")
        return int(value)
    elif name == "category" and value not in set(Category):
        raise BadFilter(f"category: one of {', '.join(sorted(Category))}")
    elif name == "action" and value not in ACTIONS:
        raise BadFilter(f"action: not a known action: {value!r}")
    elif name == "outcome" and value not in OUTCOMES:
        raise BadFilter(f"outcome: one of {', '.join(sorted(OUTCOMES))}")
    return value


def parse_filters(params: Mapping[str, Sequence[str]]) -> Filters:
    """Filters from query parameters; repeat a list parameter for several values (OR)."""
    unknown = set(params) - FILTER_PARAMS
    if unknown:
        raise BadFilter(f"unknown parameters: {', '.join(sorted(unknown))}")
    lists: dict[str, tuple[Any, ...]] = {}
    for param, attribute in LIST_PARAMS.items():
        values = params.get(param) or []
        if len(values) > MAX_VALUES:
            raise BadFilter(f"{param}: at most {MAX_VALUES} values")
        lists[attribute] = tuple(dict.fromkeys(_check(param, v) for v in values))
    since = _moment("since", _one(params, "since"))
    until = _moment("until", _one(params, "until"))
    if since is not None and until is not None and since >= until:
        raise BadFilter("since must be before until")
    text = _one(params, "q")
    if text is not None and (not text.strip() or len(text) > 256 or not text.isprintable()):
        raise BadFilter("q: blank, longer than 256 characters or not printable")
    return Filters(since=since, until=until, text=text, **lists)


def scope_for(who: Requester, filters: Filters) -> Scope:
    """The store scope for ``who`` asking ``filters``; raises SearchRefused.

    Every filter narrows (the store ANDs all conditions); the role decides the tenant
    condition, and a tenant filter outside the requester's reach is refused.
    """
    if who.roles & ALL_EVENTS_ROLES:
        tenants = filters.tenants
    elif who.roles & TENANT_ROLES:
        if not who.tenant:
            raise SearchRefused("a school administrator without a tenant searches nothing")
        if any(t != who.tenant for t in filters.tenants):
            raise SearchRefused("you may search your own tenant's events only")
        tenants = (who.tenant,)
    else:
        raise SearchRefused("your roles do not allow audit search")
    return Scope(
        subjects=filters.subjects,
        target_ids=filters.target_ids,
        tenants=tenants,
        source_ips=filters.source_ips,
        categories=filters.categories,
        actions=filters.actions,
        outcomes=filters.outcomes,
        status_codes=filters.status_codes,
        trace_ids=filters.trace_ids,
        rule_names=filters.rule_names,
        since=filters.since,
        until=filters.until,
        text=filters.text,
    )


#: Cursor layout version (the first element of the signed payload).
CURSOR_VERSION: Final = 1
_MAC_BYTES: Final = 16
_MAX_PLAIN: Final = 64 * 1024


#: ``Cursor.pit`` when the pages go on without a point in time (SQLite, too many indices, or
#: the cluster refused one); ``None`` means "open one for the next page".
NO_PIT: Final = ""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: after ``after``, in one order, in one point in time (on
    OpenSearch), for one requester's scope (``scope`` is :func:`scope_digest`)."""

    after: Page
    newest_first: bool
    pit: str | None
    scope: str


def scope_digest(who: Requester, scope: Scope) -> str:
    """A digest of who searches and the exact scope: a cursor is only good for that search."""
    plain = {"user": who.user_id, "scope": asdict(scope)}
    return hashlib.sha256(orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class CursorCodec:
    """Opaque, tamper-proof cursors: the payload (position, order, point in time, scope
    digest) with an HMAC-SHA256 tag (128 bits), base64url. A cursor that was altered, or made
    with another key, does not decode."""

    def __init__(self, *, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the cursor key needs at least 16 bytes")
        self._key = key

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, cursor: Cursor) -> str:
        payload = zlib.compress(
            orjson.dumps(
                [
                    CURSOR_VERSION,
                    cursor.after.timestamp,
                    cursor.after.event_id,
                    "desc" if cursor.newest_first else "asc",
                    cursor.pit,
                    cursor.scope,
                ]
            ),
            9,
        )  # a point in time id is long and repetitive: about a quarter of it remains
        return base64.urlsafe_b64encode(self._tag(payload) + payload).decode().rstrip("=")

    def decode(self, text: str) -> Cursor:
        """The cursor in ``text``; BadFilter when it is malformed, altered or not ours."""
        if len(text) > MAX_CURSOR_LENGTH:
            raise BadFilter("cursor: malformed")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as exc:
            raise BadFilter("cursor: malformed") from exc
        tag, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(tag) != _MAC_BYTES or not hmac.compare_digest(tag, self._tag(payload)):
            raise BadFilter("cursor: altered, or not issued by this gateway")
        try:  # only our own (tagged) payloads get here; still, bound what they inflate to
            inflater = zlib.decompressobj()
            plain = inflater.decompress(payload, _MAX_PLAIN)
            if inflater.unconsumed_tail or not inflater.eof:
                raise ValueError("cursor payload too large")
            version, timestamp, event_id, order, pit, scope = orjson.loads(plain)
            parse_timestamp(str(timestamp))
        except (orjson.JSONDecodeError, zlib.error, ValueError, TypeError) as exc:
            raise BadFilter("cursor: malformed") from exc
        if version != CURSOR_VERSION or order not in ("asc", "desc"):
            raise BadFilter("cursor: from another version; search again")
        return Cursor(Page(str(timestamp), str(event_id)), order == "desc", pit, str(scope))


@runtime_checkable
class PointInTimeStore(Protocol):
    """A store that pages from a point in time, page and total in one request (OpenSearch)."""

    def open_pit(self, scope: Scope) -> str | None: ...

    def close_pit(self, pit: str) -> None: ...

    def search_page(
        self,
        scope: Scope,
        *,
        size: int = ...,
        newest_first: bool = ...,
        after: Page | None = ...,
        pit: str | None = ...,
    ) -> tuple[list[dict[str, Any]], Total]: ...


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One page of events, the total, and the cursor of the next page (None at the end)."""

    events: list[dict[str, Any]]
    total: Total
    next_cursor: str | None
    filters: Filters = field(default_factory=Filters)


def backbone_event(
    action: Action, who: Requester, *, outcome: str, labels: Mapping[str, Any]
) -> dict[str, Any]:
    """An event of the backbone's own trail about ``who`` (labels are stored as strings)."""
    event: dict[str, Any] = {
        "event.kind": "event",
        "event.action": action.value,
        "event.outcome": outcome,
        "user.roles": sorted(who.roles),
        "labels": {
            k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in labels.items()
        },
    }
    if who.user_id is not None:
        event["user.id"] = who.user_id
    if who.tenant is not None:
        event["organization.id"] = who.tenant
    return event


class AuditSearch:
    """Runs scoped searches over ``store`` and records each one in ``sink``.

    ``cursor_key`` signs the cursors; give every gateway instance behind one load balancer the
    same key (without one, a random key per process: cursors then only page on the instance
    that made them).

    On OpenSearch, the second and later pages read from a point in time opened when the second
    page is asked for (a search nobody pages through holds no point-in-time context on the
    cluster, whose number of them is limited), over the daily indices of the scope's time
    window; it is closed at the last page and otherwise expires after its keep-alive. When the
    cluster refuses one (429), or it would make the cursor too long (more than about 60 daily
    indices), the pages go on with ``search_after`` alone: still no gap and no repeat (the
    sort key, time then event id, is unique), but events stored meanwhile may show up.
    """

    def __init__(
        self, *, store: AuditStore, sink: AuditSink, cursor_key: bytes | None = None
    ) -> None:
        self._store = store
        self._sink = sink
        self._cursors = CursorCodec(key=cursor_key or secrets.token_bytes(32))
        self._pit = store if isinstance(store, PointInTimeStore) else None

    def _open(self, scope: Scope) -> str:
        """A point in time for the pages to come, or NO_PIT when the store has none or the
        cluster refuses another (its open point-in-time contexts are limited: 429)."""
        if self._pit is None:
            return NO_PIT
        try:
            return self._pit.open_pit(scope) or NO_PIT
        except StoreUnavailable:
            return NO_PIT

    def _close(self, pit: str | None) -> None:
        if pit and self._pit is not None:
            with contextlib.suppress(StoreError):  # it expires by itself anyway
                self._pit.close_pit(pit)

    def _refuse(self, who: Requester, filters: Filters, reason: str) -> None:
        self._sink.emit(
            backbone_event(
                Action.AUDIT_SEARCH,
                who,
                outcome="failure",
                labels={"filters": filters.describe(), "refused": reason},
            )
        )

    def search(
        self,
        who: Requester,
        filters: Filters,
        *,
        size: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> SearchResult:
        """One page; raises SearchRefused or BadFilter (both recorded as a failed
        audit_search when they concern the scope or the cursor)."""
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise BadFilter(f"size: between 1 and {MAX_PAGE_SIZE}")
        try:
            scope = scope_for(who, filters)
        except SearchRefused as exc:
            self._refuse(who, filters, str(exc))
            raise
        digest = scope_digest(who, scope)
        previous = None
        if cursor:
            try:
                previous = self._cursors.decode(cursor)
                if previous.newest_first != newest_first:
                    raise BadFilter("cursor: made for the other sort order")
                if previous.scope != digest:
                    raise BadFilter("cursor: made for another search or another user")
            except BadFilter as exc:
                self._refuse(who, filters, str(exc))
                raise
        after = previous.after if previous is not None else None
        pit = previous.pit if previous is not None else NO_PIT
        if pit is None:  # the second page: open the point in time now
            pit = self._open(scope)
        if self._pit is not None:  # page and total in one request
            events, total = self._pit.search_page(
                scope, size=size, newest_first=newest_first, after=after, pit=pit or None
            )
        else:
            events = self._store.search(scope, size=size, newest_first=newest_first, after=after)
            total = self._store.total(scope)
        next_cursor = None
        if len(events) == size:
            next_pit = None if previous is None and self._pit is not None else pit
            next_cursor = self._cursors.encode(
                Cursor(Page.of(events[-1]), newest_first, next_pit, digest)
            )
            if len(next_cursor) > MAX_CURSOR_LENGTH:  # too many indices: search_after alone
                self._close(pit)
                next_cursor = self._cursors.encode(
                    Cursor(Page.of(events[-1]), newest_first, NO_PIT, digest)
                )
        else:
            self._close(pit)
        self._sink.emit(
            backbone_event(
                Action.AUDIT_SEARCH,
                who,
                outcome="success",
                labels={
                    "filters": filters.describe(),
                    "results": str(total.value) if total.exact else f">={total.value}",
                    "returned": str(len(events)),
                    "page": "next" if after is not None else "first",
                },
            )
        )
        return SearchResult(events, total, next_cursor, filters)
