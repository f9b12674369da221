"""Holds: the list (active and released), placing one with a confirmation that says how many
events it protects now, and releasing one with a reason.

Placing is two steps. The form posts to ``/holds/confirm``, which validates it exactly as the
hold service will (:func:`retention.hold_from_request`), counts the events the scope
matches now, and shows a confirmation page carrying the same values; only its submission to
``/holds`` places the hold (:class:`retention._service.Holds`, which records ``hold_placed``).
Releasing posts a reason to ``/holds/{id}/release`` (``hold_released``). Both are POSTs with
the session's CSRF token, and each answers with a redirect to the list (post/redirect/get).
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from audit import AuditStore
from audit.events import Category
from console._render import Form, Page, Renderer, first
from console.errors import BadForm, Conflict, NotFound, NotPermitted
from retention import Holds, hold_from_request
from retention.errors import HoldAlreadyReleased, HoldNotFound, InvalidHold

__all__ = ["HOLD_FIELDS", "HoldsPages", "hold_body"]

#: The form's fields (besides the CSRF token), as the confirmation page carries them on.
HOLD_FIELDS: Final = (
    "incident_id",
    "reason",
    "user_ids",
    "source_ips",
    "organization_ids",
    "categories",
    "since",
    "until",
    "review_on",
)
_LIST_FIELDS: Final = ("user_ids", "source_ips", "organization_ids")


def _lines(text: str) -> list[str]:
    return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]


def hold_body(form: Form) -> dict[str, Any]:
    """The hold service's request body from the form's fields (validated by the service)."""
    scope: dict[str, Any] = {name: _lines(first(form, name) or "") for name in _LIST_FIELDS}
    scope["categories"] = [c for c in form.get("categories", ()) if c]
    for name in ("since", "until"):
        value = (first(form, name) or "").strip()
        if value:
            scope[name] = value
    body: dict[str, Any] = {
        "incident_id": (first(form, "incident_id") or "").strip(),
        "reason": first(form, "reason") or "",
        "scope": scope,
    }
    review = (first(form, "review_on") or "").strip()
    if review:
        try:
            day = datetime.strptime(review, "%Y-%m-%d").date()
        except ValueError:
            raise BadForm("review_on: a date as YYYY-MM-DD") from None
        body["review_at"] = datetime.combine(day, time(9, 0), tzinfo=UTC).isoformat()
    return body


def _carried(form: Form) -> list[tuple[str, str]]:
    """The form's values as hidden fields for the confirmation page."""
    return [(name, value) for name in HOLD_FIELDS for value in form.get(name, ())]


class HoldsPages:
    """The holds pages over ``holds`` (the service) and ``events`` (to count coverage)."""

    def __init__(self, *, holds: Holds, events: AuditStore, renderer: Renderer) -> None:
        self._holds = holds
        self._events = events
        self._renderer = renderer

    def _list(
        self, page: Page, *, status: int = 200, error: str | None = None, form: Form | None = None
    ) -> Response:
        holds = self._holds.list()
        return self._renderer.render(
            page,
            "holds.html",
            status=status,
            active=[h for h in holds if h.active],
            released=[h for h in holds if not h.active],
            categories=sorted(c.value for c in Category),
            form=form or {},
            error=error,
            done=page.extra.get("done"),
        )

    def list(self, request: Request, page: Page) -> Response:
        done = request.query_params.get("done")
        page.extra["done"] = done if done in ("placed", "released") else None
        return self._list(page)

    def confirm(self, _request: Request, page: Page, form: Form) -> Response:
        by = self._by(page)
        try:
            hold = hold_from_request(hold_body(form), placed_by=by, placed_at=datetime.now(UTC))
        except (InvalidHold, BadForm) as exc:
            return self._list(page, status=400, error=str(exc), form=form)
        covered = self._events.count(hold.audit_scope())
        return self._renderer.render(
            page, "hold_confirm.html", hold=hold, covered=covered, carried=_carried(form)
        )

    def place(self, _request: Request, page: Page, form: Form) -> Response:
        by = self._by(page)
        try:
            self._holds.place(hold_body(form), by=by)
        except (InvalidHold, BadForm) as exc:
            return self._list(page, status=400, error=str(exc), form=form)
        return _back("placed")

    def release(self, request: Request, page: Page, form: Form) -> Response:
        by = self._by(page)
        reason = first(form, "reason") or ""
        try:
            self._holds.release(request.path_params["hold_id"], by=by, reason=reason)
        except InvalidHold as exc:
            return self._list(page, status=400, error=str(exc))
        except HoldNotFound:
            raise NotFound() from None
        except HoldAlreadyReleased:
            raise Conflict() from None
        return _back("released")

    @staticmethod
    def _by(page: Page) -> str:
        if page.who.user_id is None:
            raise NotPermitted("placing or releasing a hold needs an identified user")
        return page.who.user_id


def _back(done: str) -> Response:
    return RedirectResponse("/_gateway/console/holds?" + urlencode({"done": done}), 303)
