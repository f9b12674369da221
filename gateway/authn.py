"""The authenticate stage: who is asking, from a session cookie or a bearer token.

Authenticators are tried in order (session cookie first, then bearer token). Each returns an
:class:`~gateway.types.Identity` when it recognises the request, ``None`` to decline (not its
kind of credential), or raises :class:`AuthenticationFailed` to reject (a credential of its kind
that is invalid). The first identity wins; when every authenticator declines, the request is
anonymous and the authorize stage decides whether that is enough. A rejection is a 401 and an
audit event; it never falls back to anonymous.

An authenticator may ask for ``Set-Cookie`` headers on the response (:func:`add_set_cookie`: the
session authenticator re-issues a session after its refresh interval and clears a refused one).
The stage adds them to whatever answers the request, the 401 included; a cookie of the same
name that the response sets itself (a new login, a logout) wins. Only requests with such
cookies pay for the ``send`` wrapper: the others go on with the server's ``send`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from audit import AuditSink
from gateway._audit import request_event
from gateway.errors import AuthenticationRequired
from gateway.pages import send_error
from gateway.types import ANONYMOUS, ASGIApp, Identity, Message, Receive, Scope, Send, state

#: ``state(scope).extra`` key: ``Set-Cookie`` values to add to the response.
SET_COOKIE_KEY = "oidc.set_cookie"


def add_set_cookie(scope: Scope, value: bytes) -> None:
    """Ask the authenticate stage to send ``Set-Cookie: value`` with the response (call it
    from an authenticator: the stage takes the values when the authenticators are done)."""
    state(scope).extra.setdefault(SET_COOKIE_KEY, []).append(value)


def with_cookies(send: Send, cookies: list[bytes]) -> Send:
    """``send`` adding ``Set-Cookie: value`` for each of ``cookies`` to the response start,
    except those naming a cookie the response sets itself."""

    async def send_with_cookies(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            own = {
                bytes(value).split(b"=", 1)[0].strip()
                for name, value in headers
                if name.lower() == b"set-cookie"
            }
            extra = [value for value in cookies if value.split(b"=", 1)[0] not in own]
            if extra:
                message["headers"] = [*headers, *((b"set-cookie", v) for v in extra)]
        await send(message)

    return send_with_cookies


def _requested_cookies(scope: Scope, extra: dict[str, Any], send: Send) -> Send:
    """``send`` with the ``Set-Cookie`` values the authenticators asked for (taken out of
    ``extra``), or ``send`` itself when there are none or the scope is a WebSocket."""
    cookies = extra.pop(SET_COOKIE_KEY, None)
    if cookies and scope["type"] == "http":
        return with_cookies(send, cookies)
    return send


class AuthenticationFailed(AuthenticationRequired):
    """A credential was presented and is not valid; ``reason`` says why (snake_case)."""

    def __init__(
        self, reason: str, *, action: str = "authentication_failed", audited: bool = False
    ) -> None:
        super().__init__(reason)
        #: The audit action, e.g. ``bearer_token_rejected`` or ``session_invalid``.
        self.action = action
        #: The authenticator already emitted a detailed event: the stage adds none.
        self.audited = audited


class Authenticator(Protocol):
    name: ClassVar[str]

    async def authenticate(self, scope: Scope) -> Identity | None: ...


class AuthenticateStage:
    """Writes the request's identity into the gateway state (anonymous when none applies)."""

    name: ClassVar[str] = "authenticate"

    def __init__(
        self, app: ASGIApp, *, authenticators: Sequence[Authenticator], sink: AuditSink
    ) -> None:
        self.app = app
        self._authenticators = tuple(authenticators)
        self._sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        gateway = state(scope)
        found: Identity | None = None
        try:
            for authenticator in self._authenticators:
                found = await authenticator.authenticate(scope)
                if found is not None:
                    break
        except AuthenticationFailed as exc:
            send = _requested_cookies(scope, gateway.extra, send)
            if not exc.audited:
                self._emit_rejection(scope, exc)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_error(
                scope,
                send,
                exc,
                gateway.request_id,
                extra_headers=((b"www-authenticate", b'Bearer error="invalid_token"'),),
            )
            return
        gateway.identity = found or ANONYMOUS
        if gateway.extra:
            send = _requested_cookies(scope, gateway.extra, send)
        await self.app(scope, receive, send)

    def _emit_rejection(self, scope: Scope, exc: AuthenticationFailed) -> None:
        self._sink.emit(
            request_event(
                scope,
                action=exc.action,
                category=["authentication"],
                event_type=["denied"],
                outcome="failure",
                reason=exc.reason,
                **{"http.response.status_code": 401},
            )
        )
