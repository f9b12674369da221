"""Audit search, event detail with pivots, export of the current result, subject export.

Every page goes through the audit services (:mod:`audit._search`, :mod:`audit._export`), so
the scope is the one the API enforces: security officers and incident responders see every
event, school admins their own tenant's, anyone else is refused; each search, detail view and
export is itself an audit event.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from audit import (
    ALL_EVENTS_ROLES,
    EXPORT_COLUMNS,
    AuditSearch,
    AuditSink,
    AuditStore,
    Filters,
    Requester,
    SubjectExport,
    SubjectExporter,
    backbone_event,
    scope_for,
)
from audit import Page as StorePage
from audit import parse_filters as _parse_filters
from audit.events import ACTIONS, Action, Category
from console._render import Page, Renderer
from console.errors import BadForm, NotFound

__all__ = ["AUDIT_FILTERS", "MAX_EXPORT", "AuditPages", "requester"]

#: The search API's filters, in the order the form shows them.
AUDIT_FILTERS: Final = (
    "since",
    "until",
    "subject",
    "target",
    "tenant",
    "source_ip",
    "category",
    "action",
    "outcome",
    "status",
    "request_id",
    "rule",
    "q",
)
PAGE_SIZES: Final = (25, 50, 100, 200)
DEFAULT_SIZE: Final = 50
#: An export of a search result holds at most this many events (the subject export has none).
MAX_EXPORT: Final = 10_000
_EXPORT_PAGE: Final = 1000
_CONTROL: Final = frozenset({"lang", "cursor", "size", "order"})
#: Fields shown in the results table, in order.
COLUMNS: Final = (
    ("@timestamp", "col_time"),
    ("event.action", "col_action"),
    ("event.outcome", "col_outcome"),
    ("user.id", "col_user"),
    ("organization.id", "col_tenant"),
    ("source.ip", "col_ip"),
    ("url.path", "col_path"),
    ("http.response.status_code", "col_status"),
)


def requester(page: Page) -> Requester:
    return Requester(page.who.user_id, frozenset(page.who.roles), page.who.tenant)


def _filter_params(request: Request) -> dict[str, list[str]]:
    """The query's filters, blank form fields dropped (an empty input means "any")."""
    found: dict[str, list[str]] = {}
    for key in request.query_params:
        if key in _CONTROL:
            continue
        values = [v for v in request.query_params.getlist(key) if v.strip()]
        if values:
            found[key] = values
    return found


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise BadForm(f"{name}: give it once")
    return values[0] if values else None


class AuditPages:
    """The audit pages over ``store``; searches and exports are recorded in ``sink``."""

    def __init__(
        self,
        *,
        store: AuditStore,
        sink: AuditSink,
        renderer: Renderer,
        exporter: SubjectExporter | None = None,
    ) -> None:
        self._store = store
        self._sink = sink
        self._renderer = renderer
        self._search = AuditSearch(store=store, sink=sink)
        # The gateway passes its configured exporter (pseudonymisation, person map).
        self._exporter = exporter or SubjectExporter(store=store, sink=sink)

    # --- search --------------------------------------------------------------------------

    def search(self, request: Request, page: Page) -> Response:
        params = _filter_params(request)
        order = _single(request, "order") or "desc"
        if order not in ("asc", "desc"):
            raise BadForm("order: asc or desc")
        size_text = _single(request, "size") or str(DEFAULT_SIZE)
        if not size_text.isdigit() or int(size_text) not in PAGE_SIZES:
            raise BadForm(f"size: one of {', '.join(map(str, PAGE_SIZES))}")
        filters = _parse_filters(params)
        result = self._search.search(
            requester(page),
            filters,
            size=int(size_text),
            cursor=_single(request, "cursor") or None,
            newest_first=order == "desc",
        )
        base = [(k, v) for k, vs in params.items() for v in vs]
        base += [("order", order), ("size", size_text)]
        return self._renderer.render(
            page,
            "audit.html",
            params=params,
            order=order,
            size=int(size_text),
            sizes=PAGE_SIZES,
            filters=AUDIT_FILTERS,
            categories=sorted(c.value for c in Category),
            actions=sorted(ACTIONS),
            outcomes=("success", "failure", "unknown"),
            events=result.events,
            total=result.total,
            columns=COLUMNS,
            base_query=base,
            next_query=[*base, ("cursor", result.next_cursor)] if result.next_cursor else None,
            paged=bool(_single(request, "cursor")),
            max_export=MAX_EXPORT,
            tenant_only=not (page.who.roles & ALL_EVENTS_ROLES),
        )

    # --- one event -----------------------------------------------------------------------

    def event(self, request: Request, page: Page) -> Response:
        event_id = request.path_params["event_id"]
        if not event_id or len(event_id) > 100 or not event_id.isprintable():
            raise NotFound()
        who = requester(page)
        scope = replace(scope_for(who, Filters()), event_ids=(event_id,))
        found = self._store.search(scope, size=1)
        self._sink.emit(
            backbone_event(
                Action.AUDIT_SEARCH,
                who,
                outcome="success" if found else "failure",
                labels={"kind": "event_detail", "event_id": event_id, "results": len(found)},
            )
        )
        if not found:
            raise NotFound()
        event = found[0]
        return self._renderer.render(
            page, "event.html", event=event, rows=_rows(event), pivots=_pivots(event)
        )

    # --- export of the current result ----------------------------------------------------

    def export(self, request: Request, page: Page) -> Response:
        params = _filter_params(request)
        params.pop("format", None)
        kind = _single(request, "format") or "csv"
        if kind not in ("csv", "json"):
            raise BadForm("format: csv or json")
        order = _single(request, "order") or "desc"
        if order not in ("asc", "desc"):
            raise BadForm("order: asc or desc")
        filters = _parse_filters(params)
        who = requester(page)
        scope = scope_for(who, filters)
        events: list[dict[str, Any]] = []
        after: StorePage | None = None
        while len(events) < MAX_EXPORT:
            batch = self._store.search(
                scope,
                size=min(_EXPORT_PAGE, MAX_EXPORT - len(events)),
                newest_first=order == "desc",
                after=after,
            )
            events += batch
            if len(batch) < _EXPORT_PAGE:
                break
            after = StorePage.of(batch[-1])
        made = SubjectExport(
            cover={
                "kind": "audit search result",
                "filters": filters.describe(),
                "generated_at": datetime.now(UTC).isoformat(),
                "events": len(events),
                "truncated_at": MAX_EXPORT if len(events) >= MAX_EXPORT else None,
            },
            events=events,
        )
        self._sink.emit(
            backbone_event(
                Action.AUDIT_EXPORT,
                who,
                outcome="success",
                labels={
                    "kind": "search_result",
                    "filters": filters.describe(),
                    "results": len(events),
                },
            )
        )
        return _download(made, kind, "audit-search")

    # --- subject export (access requests) ------------------------------------------------

    def subjects(self, request: Request, page: Page) -> Response:
        return self._renderer.render(
            page,
            "subjects.html",
            subject=request.query_params.get("subject", ""),
            tenant_only=not (page.who.roles & ALL_EVENTS_ROLES),
        )

    def subject_export(self, request: Request, page: Page) -> Response:
        subject = (_single(request, "subject") or "").strip()
        if not subject:
            raise BadForm("subject: required")
        kind = _single(request, "format") or "json"
        if kind not in ("csv", "json"):
            raise BadForm("format: csv or json")
        made = self._exporter.export(requester(page), subject)
        return _download(made, kind, "subject-export")


def _download(made: SubjectExport, kind: str, name: str) -> Response:
    if kind == "csv":
        body, media = made.to_csv().encode("utf-8"), "text/csv; charset=utf-8"
    else:
        body, media = made.to_json(), "application/json"
    return Response(
        body,
        media_type=media,
        headers={
            "cache-control": "no-store",
            "content-disposition": f'attachment; filename="{name}.{kind}"',
        },
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _rows(event: dict[str, Any]) -> list[tuple[str, str]]:
    """Every field of the event in schema order, labels spelled out one per row."""
    rows = []
    for name in EXPORT_COLUMNS:
        value = event.get(name)
        if name == "labels" and isinstance(value, dict):
            rows += [(f"labels.{k}", _text(v)) for k, v in sorted(value.items())]
        elif value not in (None, "", []):
            rows.append((name, _text(value)))
    return rows


def _pivots(event: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(label key, search query) for the same person, IP address and request id."""
    found = []
    for field, param, key in (
        ("user.id", "subject", "pivot_subject"),
        ("user.target.id", "subject", "pivot_subject"),
        ("source.ip", "source_ip", "pivot_ip"),
        ("trace.id", "request_id", "pivot_request"),
    ):
        value = event.get(field)
        if isinstance(value, str) and value and value.isprintable() and len(value) <= 512:
            found.append((key, [(param, value)]))
    return found
