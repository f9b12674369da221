"""Revoke every session of one person (incident response), after a confirmation.

The form posts the user id (``issuer|subject``) to ``/sessions/confirm``, which shows whose
sessions end and how many logins of theirs the audit log holds for the last 24 hours; the
confirmation posts to ``/sessions/revoke``, which revokes through the same revocation store as
``POST /_gateway/sessions/revoke`` (every session issued before now stops working on every
instance that shares the store) and records ``sessions_revoked``.

The handlers run in the thread pool (``Console._run``), so the store's write (a network call
with the OpenSearch store) never blocks the event loop. When the store cannot record the
revocation (:class:`~gateway.oidc.errors.RevocationsUnavailable`, which is what the HTTP
revoke API treats as unavailability too) the answer is 503: the confirmation page again, with
the same person filled in, saying the revocation was NOT recorded and to submit again, and a
``sessions_revoked`` failure event with reason ``revocation_store_unavailable``, as the API
records it. (The OpenSearch store keeps the refused write queued on this instance and retries
it, but other instances do not see it until it lands, so the page does not call it done.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from audit import AuditSink, AuditStore, Scope
from console._render import Form, Page, Renderer, first
from console.errors import BadForm
from gateway._audit import request_event
from gateway.oidc import RevocationStore
from gateway.oidc.errors import RevocationsUnavailable

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
        return self._renderer.render(
            page, "session_confirm.html", target=target, logins=logins, unavailable=False
        )

    def revoke(self, request: Request, page: Page, form: Form) -> Response:
        target = check_user_id(first(form, "user_id"))
        now = self._clock()
        try:
            self._revocations.revoke_subject(target, before=now, until=now + self._lifetime)
        except RevocationsUnavailable:
            self._sink.emit(self._event(request, target, outcome="failure", status=503))
            return self._renderer.render(
                page,
                "session_confirm.html",
                status=503,
                target=target,
                logins=None,
                unavailable=True,
            )
        self._sink.emit(self._event(request, target, outcome="success", status=303))
        location = "/_gateway/console/sessions?" + urlencode({"revoked": target})
        return RedirectResponse(location, 303)

    @staticmethod
    def _event(request: Request, target: str, *, outcome: str, status: int) -> dict[str, Any]:
        """``sessions_revoked`` about ``target``, with the fields the HTTP revoke API records."""
        failed = outcome != "success"
        event = request_event(
            request.scope,
            action="sessions_revoked",
            category=["authentication", "session", "iam"],
            event_type=["denied"] if failed else ["end"],
            outcome=outcome,
            reason=RevocationsUnavailable.reason if failed else None,
        )
        event["http.response.status_code"] = status
        event["labels"] = {"via": "console"}
        event["user.target.id"] = target
        return event
