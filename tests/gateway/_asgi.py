"""A tiny harness for calling pure-ASGI stages directly in tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.types import SCOPE_KEY, GatewayState, Message, Scope


@dataclass
class Result:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    messages: list[Message] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.decode("latin-1").lower() == name.lower():
                return value.decode("latin-1")
        return None

    def header_values(self, name: str) -> list[str]:
        return [v.decode("latin-1") for k, v in self.headers if k.decode().lower() == name.lower()]


class Recorder:
    """An inner app that remembers the scope it got and answers 200 ``ok``."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.scopes: list[Scope] = []
        self.headers = headers or []

    @property
    def called(self) -> bool:
        return bool(self.scopes)

    @property
    def state(self) -> GatewayState:
        found = self.scopes[-1][SCOPE_KEY]
        assert isinstance(found, GatewayState)
        return found

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), *self.headers],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})


def http_scope(
    path: str = "/",
    *,
    raw_path: bytes | None = None,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    scheme: str = "https",
    client: tuple[str, int] | None = ("203.0.113.7", 50000),
    query: bytes = b"",
    host: str | None = "platform.example.nl",
    scope_type: str = "http",
) -> Scope:
    all_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
    if host is not None and not any(k == b"host" for k, _ in all_headers):
        all_headers.insert(0, (b"host", host.encode("latin-1")))
    return {
        "type": scope_type,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode("utf-8"),
        "query_string": query,
        "headers": all_headers,
        "client": client,
        "server": ("127.0.0.1", 8443),
    }


async def call(app: Any, scope: Scope, body: bytes = b"") -> Result:
    messages: list[Message] = []
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next((m for m in messages if m["type"] == "http.response.start"), None)
    chunks = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    if start is None:
        return Result(status=0, headers=[], body=b"", messages=messages)
    return Result(
        status=start["status"], headers=list(start["headers"]), body=chunks, messages=messages
    )


def with_state(scope: Scope, **values: Any) -> Scope:
    """``scope`` with a GatewayState as the https stage would have made it."""
    values.setdefault("request_id", "test-request-id")
    values.setdefault("client_ip", "203.0.113.7")
    values.setdefault("host", "platform.example.nl")
    scope[SCOPE_KEY] = GatewayState(**values)
    return scope
