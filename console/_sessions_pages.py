"""Revoke every session of one person (incident response), after a confirmation.

The form posts the user id (``issuer|subject``) to ``/sessions/confirm``, which shows whose
sessions end and how many logins of theirs the audit log holds for the last 24 hours; the
confirmation posts to ``/sessions/revoke``, which revokes through the same revocation store as
``POST /_gateway/sessions/revoke`` (every session issued before now stops working on every
instance that shares the store) and records ``sessions_revoked``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from audit import AuditSink, AuditStore, Scope
from console._render import Form, Page, Renderer, first
from console.errors import BadForm
from gateway._audit import request_event
from gateway.oidc import RevocationStore

__all__ = ["MAX_USER_ID", "SessionsPages", "check_user_id"]

MAX_USER_ID: Final = 1024
_RECENT: Final = timedelta(hours=24)


def check_user_id(value: str | None) -> str:
    """An issuer-qualified user id as the gateway records it; BadForm otherwise."""
    text = (value or "").strip()
    if "|" not in text or len(text) > MAX_USER_ID or not text.isprintable():
        raise BadForm("user_id: issuer|subject, as audit events show it (user.id)")
    return text


class SessionsPages:
    """The revoke pages over ``revocations``; ``lifetime`` is the sessions' absolute timeout."""

    def __init__(
        self,
        *,
        revocations: RevocationStore,
        lifetime: float,
        events: AuditStore,
        sink: AuditSink,
        renderer: Renderer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._revocations = revocations
        self._lifetime = lifetime
        self._events = events
        self._sink = sink
        self._renderer = renderer
        self._clock = clock

    def form(self, request: Request, page: Page) -> Response:
        return self._renderer.render(
            page,
            "sessions.html",
            user_id=request.query_params.get("user_id", ""),
            revoked=request.query_params.get("revoked"),
            error=None,
        )

    def confirm(self, _request: Request, page: Page, form: Form) -> Response:
        try:
            target = check_user_id(first(form, "user_id"))
        except BadForm as exc:
            return self._renderer.render(
                page,
                "sessions.html",
                status=400,
                user_id=first(form, "user_id") or "",
                revoked=None,
                error=str(exc),
            )
        now = datetime.fromtimestamp(self._clock(), UTC)
        logins = self._events.count(
            Scope(user_ids=[target], actions=["login_success"], since=now - _RECENT)
        )
        return self._renderer.render(page, "session_confirm.html", target=target, logins=logins)

    def revoke(self, request: Request, page: Page, form: Form) -> Response:
        target = check_user_id(first(form, "user_id"))
        now = self._clock()
        self._revocations.revoke_subject(target, before=now, until=now + self._lifetime)
        event = request_event(
            request.scope,
            action="sessions_revoked",
            category=["authentication", "session", "iam"],
            event_type=["end"],
            outcome="success",
        )
        event["http.response.status_code"] = 303
        event["labels"] = {"via": "console"}
        event["user.target.id"] = target
        self._sink.emit(event)
        location = "/_gateway/console/sessions?" + urlencode({"revoked": target})
        return RedirectResponse(location, 303)
