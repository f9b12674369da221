"""The audit search API: thin Starlette routes over :mod:`audit._search` and friends.

* ``GET /_gateway/audit`` — search. Filters as query parameters (repeat one for several values):
  ``since``, ``until`` (ISO 8601 with a zone), ``subject``, ``target``, ``tenant``,
  ``source_ip`` (address or CIDR), ``category``, ``action``, ``outcome``, ``status``,
  ``request_id``, ``rule``, ``q`` (free text); paging with ``size`` (1..1000) and the opaque
  ``cursor`` of the previous answer; ``order=asc|desc`` (by time). Answers
  ``{"events": [...], "total": {"value": n, "relation": "eq"|"gte"}, "next_cursor": ...}``.
* ``GET /_gateway/audit/export?subject=...&format=json|csv`` — the data-subject export.
* ``GET /_gateway/stats?row=week&row=organization.id&row=user.roles&column=event.action``
  (and ``since``, ``until``) — counts with small-cell and complementary suppression
  (:mod:`audit._stats`).

The policy decides who reaches these routes at all; the scope (which events) is decided in the
query by :func:`audit._search.scope_for` from the caller's identity. Bad filters are 400 with a
message naming the parameter, refusals 403, an unreachable store 503. Store calls are blocking
and run in the thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from audit import (
    AuditSearch,
    AuditSink,
    AuditStore,
    BadFilter,
    PersonDirectory,
    Requester,
    Scope,
    SearchRefused,
    Statistics,
    SubjectExporter,
)
from audit import parse_filters as _parse_filters
from audit._stats import DEFAULT_COLUMN, DEFAULT_ROWS
from audit.errors import PersonMapInvalid, StoreError, StoreUnavailable
from gateway.types import identity

__all__ = ["EXPORT_PATH", "SEARCH_PATH", "STATS_PATH", "audit_routes"]

SEARCH_PATH: Final = "/_gateway/audit"
EXPORT_PATH: Final = "/_gateway/audit/export"
STATS_PATH: Final = "/_gateway/stats"
DEFAULT_PAGE_SIZE: Final = 100
DEFAULT_STATS_THRESHOLD: Final = 10
_PAGING: Final = ("size", "cursor", "order")
_NO_STORE: Final = {"cache-control": "no-store"}
logger = logging.getLogger(__name__)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**_NO_STORE, **(headers or {})},
    )


def _error(status: int, code: str, detail: str) -> Response:
    return _json({"error": code, "detail": detail}, status)


def requester(request: Request) -> Requester:
    who = identity(request.scope)
    return Requester(who.user_id, frozenset(who.roles), who.tenant)


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise BadFilter(f"{name}: give it once")
    return values[0] if values else None


def _answer(handler: Callable[[Request], Response]) -> Callable[[Request], Any]:
    """Run a blocking handler in the thread pool and map our errors to JSON answers."""

    async def endpoint(request: Request) -> Response:
        try:
            return await run_in_threadpool(handler, request)
        except BadFilter as exc:
            return _error(400, "bad_filter", str(exc))
        except SearchRefused as exc:
            return _error(403, "search_refused", str(exc))
        except PersonMapInvalid as exc:
            logger.error("audit export refused: %s", exc)
            return _error(503, "person_map_invalid", "the person map cannot be read; see the log")
        except StoreUnavailable:
            return _error(503, "audit_store_unavailable", "the audit store cannot be reached")
        except StoreError:
            return _error(502, "audit_store_error", "the audit store refused the query")

    return endpoint


def audit_routes(
    *,
    store: AuditStore,
    sink: AuditSink,
    pseudonymise_staff: bool = True,
    stats_threshold: int = DEFAULT_STATS_THRESHOLD,
    cursor_key: bytes | None = None,
    persons: PersonDirectory | None = None,
) -> Sequence[Route]:
    """The audit API's routes over ``store``; searches and exports are recorded in ``sink``.

    ``cursor_key`` signs search cursors (the same key on every instance; see AuditSearch).
    ``pseudonymise_staff`` and ``persons`` (the platform's person map) shape exports
    (settings ``audit.export_pseudonymise_staff``, ``audit.person_map_file``);
    ``stats_threshold`` is the smallest published group (``audit.stats_min_group_size``)."""
    searcher = AuditSearch(store=store, sink=sink, cursor_key=cursor_key)
    exporter = SubjectExporter(
        store=store, sink=sink, pseudonymise_staff=pseudonymise_staff, persons=persons
    )
    statistics = Statistics(store=store, sink=sink, threshold=stats_threshold)

    def search(request: Request) -> Response:
        params = {
            key: request.query_params.getlist(key)
            for key in request.query_params
            if key not in _PAGING
        }
        filters = _parse_filters(params)
        order = _single(request, "order") or "asc"
        if order not in ("asc", "desc"):
            raise BadFilter("order: asc or desc")
        size_text = _single(request, "size")
        if size_text is not None and not size_text.isdigit():
            raise BadFilter("size: a whole number")
        result = searcher.search(
            requester(request),
            filters,
            size=int(size_text) if size_text is not None else DEFAULT_PAGE_SIZE,
            cursor=_single(request, "cursor"),
            newest_first=order == "desc",
        )
        return _json(
            {
                "events": result.events,
                "total": {
                    "value": result.total.value,
                    "relation": "eq" if result.total.exact else "gte",
                },
                "next_cursor": result.next_cursor,
            }
        )

    def export(request: Request) -> Response:
        unknown = set(request.query_params) - {"subject", "format"}
        if unknown:
            raise BadFilter(f"unknown parameters: {', '.join(sorted(unknown))}")
        subject = _single(request, "subject")
        if subject is None:
            raise BadFilter("subject: required")
        kind = _single(request, "format") or "json"
        if kind not in ("json", "csv"):
            raise BadFilter("format: json or csv")
        made = exporter.export(requester(request), subject)
        if kind == "csv":
            return Response(
                made.to_csv(),
                media_type="text/csv; charset=utf-8",
                headers={**_NO_STORE, "content-disposition": 'attachment; filename="export.csv"'},
            )
        return Response(
            made.to_json(),
            media_type="application/json",
            headers={**_NO_STORE, "content-disposition": 'attachment; filename="export.json"'},
        )

    def stats(request: Request) -> Response:
        unknown = set(request.query_params) - {"row", "column", "since", "until"}
        if unknown:
            raise BadFilter(f"unknown parameters: {', '.join(sorted(unknown))}")
        period = _parse_filters(
            {
                k: request.query_params.getlist(k)
                for k in ("since", "until")
                if k in request.query_params
            }
        )
        rows = request.query_params.getlist("row") or list(DEFAULT_ROWS)
        try:
            table = statistics.table(
                requester(request),
                rows=rows,
                column=_single(request, "column") or DEFAULT_COLUMN,
                scope=Scope(since=period.since, until=period.until),
            )
        except ValueError as exc:
            raise BadFilter(str(exc)) from exc
        return _json(table)

    return [
        Route(SEARCH_PATH, _answer(search), methods=["GET"]),
        Route(STATS_PATH, _answer(stats), methods=["GET"]),
        Route(EXPORT_PATH, _answer(export), methods=["GET"]),
    ]
