"""The forward stage: the final ASGI app, which streams the request to the upstream and back.

It forwards the canonical path (``gateway.types.canonical_path``, percent-encoded again for the
wire) with the query string exactly as received, and the headers the earlier stages left, minus
hop-by-hop ones (``gateway.headers.forwardable_request_headers``). Bodies stream both ways in
chunks; memory does not grow with their size.

Only the configured methods are forwarded (``DEFAULT_METHODS``); others get a 400 page.

Failures, each answered with a generic page (``gateway.pages.send_error``) and one audit event:

    upstream unreachable, refused, broken   502  event.action upstream_error
    connect or read timeout                 504  event.action upstream_timeout
    upstream answered 5xx                   passed through, event.action upstream_error

When the audit log can record an error event nowhere (``AuditUnavailable``), the client gets
503 instead (fail closed), also in place of an upstream 5xx.

When the upstream fails after the response has started, no status can be sent any more: the
event is audited and the response is left incomplete, so the server closes the connection and
the client sees a truncated body rather than a complete-looking one.

WebSocket scopes are relayed message by message after the same stages ran. A failed upstream
handshake is answered with 502/504 (audited), and one the upstream refuses with 401/403/404
with that status (not audited: the upstream's answer), where the server supports the
``websocket.http.response`` extension (uvicorn does); where it does not, the connection is
closed before acceptance (the client sees 403).

Lifespan: when the forwarder is the outermost app it answers lifespan itself and closes the
upstream pool at shutdown; otherwise the app that owns the lifespan calls :meth:`Forward.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

from audit import AuditSink, AuditUnavailable
from gateway._upstream import (
    UpstreamClient,
    UpstreamResponse,
    UpstreamWebSocket,
    WebSocketRejected,
)
from gateway.errors import (
    AccessDenied,
    AuthenticationRequired,
    BadRequest,
    GatewayError,
    NotFound,
    ServiceUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.headers import forwardable_request_headers, forwardable_response_headers
from gateway.pages import send_error
from gateway.paths import encode_path
from gateway.types import Message, Receive, Scope, Send, canonical_path, state

__all__ = ["DEFAULT_METHODS", "Forward"]

#: Methods forwarded by default. TRACE (it would echo our identity headers and assertion back
#: to the client) and CONNECT (a tunnel) are answered 400 unless configured.
DEFAULT_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# The page shown when the upstream refuses a WebSocket upgrade (other 4xx: 400).
_REJECTIONS: dict[int, type[GatewayError]] = {
    401: AuthenticationRequired,
    403: AccessDenied,
    404: NotFound,
}
_WS_NORMAL_CLOSE = 1000
_WS_INTERNAL_ERROR = 1011


class _BodyReader:
    """Reads the client's request body from ``receive`` as an async iterator, once."""

    __slots__ = ("_first", "_receive", "disconnected", "done")

    def __init__(self, receive: Receive, first: Message) -> None:
        self._receive = receive
        self._first = first
        self.done = not first.get("more_body", False)
        self.disconnected = False

    async def chunks(self) -> AsyncIterator[bytes]:
        body = self._first.get("body", b"")
        if body:
            yield body
        while not self.done:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                # The client went away mid-upload: abort the upstream request.
                self.disconnected = True
                raise ConnectionResetError("client disconnected during the request body")
            self.done = not message.get("more_body", False)
            body = message.get("body", b"")
            if body:
                yield body


class Forward:
    """The final app: forward to the upstream through ``client``, audit failures to ``audit``."""

    name: ClassVar[str] = "forward"

    def __init__(
        self,
        *,
        client: UpstreamClient,
        audit: AuditSink,
        methods: Iterable[str] = DEFAULT_METHODS,
    ) -> None:
        self._client = client
        self._audit = audit
        self._methods = frozenset(methods)
        if not self._methods or any(m != m.upper() or not m.isalpha() for m in self._methods):
            raise ValueError("methods must be a non-empty set of upper-case method names")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    async def aclose(self) -> None:
        """Close the upstream pool (at shutdown)."""
        await self._client.aclose()

    # --- HTTP ------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope)
        if scope["method"] not in self._methods:
            await send_error(
                scope, send, BadRequest("method_not_forwarded"), state(scope).request_id
            )
            return
        first = await receive()
        reader = _BodyReader(receive, first) if first["type"] == "http.request" else None
        if reader is None:
            return  # disconnected before sending anything
        body = None if reader.done and not first.get("body") else reader.chunks()
        headers = forwardable_request_headers(scope["headers"])
        try:
            response = await self._client.send(scope["method"], target, headers, body)
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            if reader.disconnected:
                return  # the client aborted its upload: nobody to answer, nothing failed upstream
            shown: GatewayError = exc if self._audit_error(scope, exc) else ServiceUnavailable()
            await send_error(scope, send, shown, state(scope).request_id)
            return
        try:
            await self._relay(scope, receive, send, response, reader)
        finally:
            await response.aclose()

    async def _relay(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        response: UpstreamResponse,
        reader: _BodyReader,
    ) -> None:
        if response.status >= 500 and not self._audit_status(scope, response.status):
            # The event can be neither shipped nor spooled: fail closed (audit/_sink.py).
            await send_error(scope, send, ServiceUnavailable(), state(scope).request_id)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": forwardable_response_headers(response.headers),
            }
        )
        watcher: asyncio.Task[None] | None = None
        chunks = 0
        try:
            async for chunk in response.stream():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                chunks += 1
                if watcher is not None:
                    if watcher.done():
                        return  # the client went away: stop reading the upstream
                elif chunks > 1 and reader.done:
                    # A long body: watch for the client going away (short ones never get here).
                    watcher = asyncio.ensure_future(_wait_disconnect(receive))
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            self._audit_error(scope, exc, started=True)
            return  # incomplete on purpose: the server closes the connection
        finally:
            if watcher is not None:
                watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _target(self, scope: Scope) -> str:
        path = encode_path(canonical_path(scope))
        query: bytes = scope.get("query_string", b"")
        return f"{path}?{query.decode('latin-1')}" if query else path

    # --- WebSocket -------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope)
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        headers = forwardable_request_headers(scope["headers"])
        try:
            upstream = await self._client.connect_websocket(
                target, headers, scope.get("subprotocols") or ()
            )
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            shown: GatewayError = exc if self._audit_error(scope, exc) else ServiceUnavailable()
            await self._deny_websocket(scope, send, shown)
            return
        except WebSocketRejected as exc:
            # The upstream's own answer (e.g. 403, 404): passed on as our page for that status.
            await self._deny_websocket(scope, send, _REJECTIONS.get(exc.status, BadRequest)())
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await _relay_websocket(receive, send, upstream)
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            self._audit_error(scope, exc, started=True)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": _WS_INTERNAL_ERROR})
        finally:
            with contextlib.suppress(Exception):
                await upstream.close()

    async def _deny_websocket(self, scope: Scope, send: Send, error: GatewayError) -> None:
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": _WS_INTERNAL_ERROR})
            return

        async def as_websocket(message: Message) -> None:
            message = dict(message)
            message["type"] = "websocket." + message["type"]
            await send(message)

        await send_error(scope, as_websocket, error, state(scope).request_id)

    # --- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- audit -----------------------------------------------------------------------------

    def _event(self, scope: Scope) -> dict[str, Any]:
        gw = state(scope)
        who = gw.identity
        event: dict[str, Any] = {
            "event.kind": "event",
            "event.category": ["web"],
            "event.type": ["error"],
            "event.outcome": "failure",
            "http.request.method": scope.get("method", "GET"),
            "url.path": gw.path,
            "trace.id": gw.request_id,
            "source.ip": gw.client_ip,
        }
        if who is not None:
            event["user.id"] = who.user_id
            event["user.roles"] = sorted(who.roles)
            event["organization.id"] = who.tenant
        return event

    def _emit(self, event: dict[str, Any]) -> bool:
        """Record ``event``; False when the audit log can take it nowhere (then fail closed)."""
        try:
            self._audit.emit(event)
        except AuditUnavailable:
            return False
        return True

    def _audit_error(self, scope: Scope, error: GatewayError, *, started: bool = False) -> bool:
        event = self._event(scope)
        event["event.action"] = (
            "upstream_timeout" if isinstance(error, UpstreamTimeout) else "upstream_error"
        )
        event["event.reason"] = error.reason
        event["error.type"] = error.code
        event["error.message"] = (
            f"{error.text_en} ({error.reason}{', after the response started' if started else ''})"
        )
        if not started:
            event["http.response.status_code"] = error.status_code
        if scope["type"] == "websocket":
            event["http.request.method"] = "GET"
            event["labels"] = {"protocol": "websocket"}
        return self._emit(event)

    def _audit_status(self, scope: Scope, status: int) -> bool:
        event = self._event(scope)
        event["event.action"] = "upstream_error"
        event["event.reason"] = "upstream_server_error"
        event["error.type"] = "upstream_server_error"
        event["error.message"] = f"The upstream answered with status {status}."
        event["http.response.status_code"] = status
        return self._emit(event)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _relay_websocket(receive: Receive, send: Send, upstream: UpstreamWebSocket) -> None:
    """Pump messages both ways until either side closes; close the other side likewise."""

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                code = message.get("code", _WS_NORMAL_CLOSE)
                await upstream.close(code if _closable(code) else _WS_NORMAL_CLOSE)
                return

    async def upstream_to_client() -> None:
        while True:
            data = await upstream.receive()
            if data is None:
                code = upstream.close_code or _WS_NORMAL_CLOSE
                await send(
                    {
                        "type": "websocket.close",
                        "code": code if _closable(code) else _WS_NORMAL_CLOSE,
                    }
                )
                return
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()  # re-raise an upstream failure for the caller to audit


def _closable(code: int) -> bool:
    """Close codes an endpoint may send (RFC 6455 §7.4: not 1005, 1006, 1015)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code < 5000
