"""The host stage: only the configured public host names are served.

The host (from ``Host``, or from a trusted proxy's forwarding header) is compared
case-insensitively, without a trailing dot, IDNs in punycode; a port, when given, must be one
the gateway is reached on. An absolute-form request target (``GET https://host/path``) must
name the same host, and a request with more than one ``Host`` line is refused (RFC 9112 §3.2).
Anything else is a 400 before any other stage looks at the request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar
from urllib.parse import urlsplit

from gateway.errors import BadRequest
from gateway.pages import send_error
from gateway.settings import normalise_host
from gateway.types import ASGIApp, Receive, Scope, Send, state

#: Where the server keeps the request target as sent (see ``gateway.server``); uvicorn's own
#: ``raw_path`` has lost the authority of an absolute-form target by then.
REQUEST_TARGET_KEY = "gateway.request_target"
#: Distinct allowed Host values remembered (spellings of the public hosts and ports).
_ALLOWED_CACHE_SIZE = 256


def split_host_port(value: str) -> tuple[str, int | None]:
    """("host", port) from a Host value; raises ValueError when malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError("unterminated IPv6 literal")
        host, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("junk after IPv6 literal")
        port_text = rest[1:] if rest else ""
    elif ":" in value:
        host, _, port_text = value.rpartition(":")
    else:
        host, port_text = value, ""
    if not host:
        raise ValueError("empty host")
    if port_text == "":
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("bad port")
    return host, int(port_text)


def absolute_form_authority(raw_path: bytes) -> str | None:
    """The authority of an absolute-form target (``http://host:port/p``), or None."""
    lowered = raw_path[:8].lower()
    if not (lowered.startswith(b"http://") or lowered.startswith(b"https://")):
        return None
    return urlsplit(raw_path.decode("latin-1")).netloc


class HostStage:
    """Rejects requests for hosts (and ports) the gateway does not serve."""

    name: ClassVar[str] = "host"

    def __init__(self, app: ASGIApp, *, public_hosts: Iterable[str], ports: Iterable[int]) -> None:
        self.app = app
        self._hosts = frozenset(normalise_host(host) for host in public_hosts)
        if not self._hosts:
            raise ValueError("the host stage needs at least one public host")
        self._ports = frozenset(ports)
        # Host values found allowed (as sent: a handful of spellings of the public hosts).
        # Only allowed ones are kept, so unknown hosts cannot fill it; bounded all the same.
        self._seen_allowed: set[str] = set()

    def allowed(self, value: str | None) -> bool:
        if not value:
            return False
        if value in self._seen_allowed:
            return True
        try:
            host, port = split_host_port(value)
            ok = normalise_host(host) in self._hosts and (port is None or port in self._ports)
        except ValueError:
            return False
        if ok and len(self._seen_allowed) < _ALLOWED_CACHE_SIZE:
            self._seen_allowed.add(value)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        gateway = state(scope)
        reason = None
        if sum(1 for name, _ in scope.get("headers", ()) if name == b"host") > 1:
            reason = "duplicate_host"  # RFC 9112 §3.2: proxies may disagree on which one
        elif not self.allowed(gateway.host):
            reason = "unknown_host"
        else:
            target = scope.get(REQUEST_TARGET_KEY) or scope.get("raw_path") or b""
            authority = absolute_form_authority(target)
            if authority is not None and not self._same_host(authority, gateway.host):
                reason = "absolute_form_host_mismatch"
        if reason is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_error(scope, send, BadRequest(reason), gateway.request_id)
            return
        await self.app(scope, receive, send)

    def _same_host(self, authority: str, host: str | None) -> bool:
        if host is None:
            return False
        try:
            a_host, a_port = split_host_port(authority)
            b_host, b_port = split_host_port(host)
            return normalise_host(a_host) == normalise_host(b_host) and a_port == b_port
        except ValueError:
            return False
