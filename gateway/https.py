"""The first stage: who is the peer, which scheme and host did the client use, and HTTPS only.

Forwarding headers (``Forwarded``, ``X-Forwarded-For/Proto/Host``, ``X-Request-ID``) are
believed only from peers inside the configured trusted-proxy networks, which are empty by
default; from anyone else they are ignored for routing, policy, redirects and the audit IP.

This stage creates the request's :class:`~gateway.types.GatewayState`, redirects plain HTTP to
HTTPS (308, to a host from the configured list, never one echoed from the request), and puts
HSTS and the request id on every response.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
import secrets
from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import quote_from_bytes

from gateway.errors import HeadersTooLarge
from gateway.pages import send_error
from gateway.settings import IPNetwork, normalise_host
from gateway.types import SCOPE_KEY, ASGIApp, GatewayState, Message, Receive, Scope, Send

REDIRECT_STATUS = 308
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_HEADER_COUNT = 100
MAX_FORWARDED_HOPS = 20
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
_SAFE_IN_LOCATION = "/%:@!$&'()*+,;=-._~"


_ID_PREFIX = f"{secrets.randbits(64):016x}"
_ID_COUNTER = itertools.count(secrets.randbits(32))
_ID_MASK = 0xFFFFFFFFFFFFFFFF


def new_request_id() -> str:
    """A unique 128-bit id, hex encoded: a random per-process prefix and a counter.

    Unique, not secret (it is shown to the client); no system call per request.
    """
    return _ID_PREFIX + format(next(_ID_COUNTER) & _ID_MASK, "016x")


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _header_values(scope: Scope, name: bytes) -> list[str]:
    """All values of a comma-separated header, in order, across repeated headers."""
    values: list[str] = []
    for key, value in scope.get("headers", ()):
        if key == name:
            values.extend(part.strip() for part in value.decode("latin-1").split(","))
    return [value for value in values if value]


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _ip_text(text: str) -> str | None:
    """The address in ``text`` written the standard way (:func:`_parse_ip`), or None."""
    address = _parse_ip(text)
    return str(address) if address is not None else None


def _parse_forwarded(scope: Scope) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded`` elements, each a dict of lower-case parameter names."""
    elements: list[dict[str, str]] = []
    for element in _header_values(scope, b"forwarded"):
        params: dict[str, str] = {}
        for pair in element.split(";"):
            name, sep, value = pair.partition("=")
            if sep:
                params[name.strip().lower()] = value.strip().strip('"')
        elements.append(params)
    return elements


class ForwardedResolver:
    """Decides the client address, scheme and host of a request from its peer and headers."""

    def __init__(self, *, trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        self._trusted = tuple(trusted_proxies)

    def is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if address is None or not self._trusted:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    def resolve(self, scope: Scope) -> tuple[str | None, str, str | None, bool]:
        """(client ip, scheme, host, peer trusted) for ``scope``."""
        client = scope.get("client")
        peer_text = client[0] if client else None
        peer = _parse_ip(peer_text) if peer_text else None
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        host_header = header(scope, b"host")
        host = host_header.decode("latin-1") if host_header is not None else None
        if not self.is_trusted(peer):
            return (_ip_text(peer_text) if peer_text else None), scheme, host, False

        forwarded = _parse_forwarded(scope)
        if forwarded:
            hops = [_parse_ip(element.get("for", "")) for element in forwarded]
            protos = [element.get("proto", "") for element in forwarded]
            hosts = [element.get("host", "") for element in forwarded]
        else:
            hops = [_parse_ip(value) for value in _header_values(scope, b"x-forwarded-for")]
            protos = _header_values(scope, b"x-forwarded-proto")
            hosts = _header_values(scope, b"x-forwarded-host")
        hops = hops[-MAX_FORWARDED_HOPS:]
        index = len(hops) - 1
        while index > 0 and self.is_trusted(hops[index]):
            index -= 1
        client_ip = str(hops[index]) if hops and hops[index] is not None else str(peer)
        proto = _pick(protos, index, len(hops)).lower()
        if proto in ("http", "https"):
            scheme = proto
        forwarded_host = _pick(hosts, index, len(hops))
        if forwarded_host:
            host = forwarded_host
        return client_ip, scheme, host, True


def _pick(values: list[str], index: int, hops: int) -> str:
    """The value that belongs to hop ``index`` when the lists line up, else the last one."""
    if not values:
        return ""
    if len(values) == hops and 0 <= index < hops:
        return values[index]
    return values[-1]


class RedirectTarget:
    """Builds ``https://`` URLs on a configured public host; never on one the client named."""

    def __init__(self, *, public_hosts: Sequence[str], https_port: int) -> None:
        if not public_hosts:
            raise ValueError("at least one public host is needed to redirect to")
        self._hosts = tuple(normalise_host(host) for host in public_hosts)
        self._port = "" if https_port == 443 else f":{https_port}"

    def url(self, requested_host: str | None, raw_path: bytes, query: bytes) -> str:
        host = self._hosts[0]
        if requested_host:
            name = _strip_port(requested_host)
            try:
                normalised = normalise_host(name)
            except ValueError:
                normalised = ""
            if normalised in self._hosts:
                host = normalised
        path = quote_from_bytes(raw_path, safe=_SAFE_IN_LOCATION) if raw_path else "/"
        if not path.startswith("/"):
            path = "/"
        location = f"https://{host}{self._port}{path}"
        if query:
            location += "?" + quote_from_bytes(query, safe=_SAFE_IN_LOCATION + "?")
        return location


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def send_redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": REDIRECT_STATUS,
            "headers": [
                (b"location", location.encode("ascii")),
                (b"content-length", b"0"),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


class HTTPSStage:
    """Creates the gateway state, enforces HTTPS and adds HSTS to every response."""

    name: ClassVar[str] = "https"

    def __init__(
        self,
        app: ASGIApp,
        *,
        resolver: ForwardedResolver,
        redirect: RedirectTarget,
        hsts_max_age: int,
        hsts_preload: bool = False,
        allow_plain_http: bool = False,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
    ) -> None:
        self.app = app
        self._max_header_bytes = max_header_bytes
        self._max_header_count = max_header_count
        self._resolver = resolver
        self._redirect = redirect
        self._allow_plain_http = allow_plain_http
        value = f"max-age={int(hsts_max_age)}; includeSubDomains"
        if hsts_preload:
            value += "; preload"
        self._hsts = (b"strict-transport-security", value.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        oversized = len(headers) > self._max_header_count or (
            sum(map(len, itertools.chain.from_iterable(headers))) > self._max_header_bytes
        )
        client_ip, scheme, host, trusted = self._resolver.resolve(scope)
        request_id = None
        if trusted:
            given = header(scope, b"x-request-id")
            if given is not None and _REQUEST_ID.fullmatch(given.decode("latin-1")):
                request_id = given.decode("latin-1")
        state = GatewayState(
            request_id=request_id or new_request_id(),
            client_ip=client_ip,
            scheme=scheme,
            host=host,
        )
        scope[SCOPE_KEY] = state
        if oversized:  # before anything reads, audits or forwards them (CWE-770)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1009})
                return
            await send_error(scope, send, HeadersTooLarge(), state.request_id)
            return

        if scheme != "https" and not self._allow_plain_http:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            location = self._redirect.url(
                host,
                scope.get("raw_path") or scope["path"].encode(),
                scope.get("query_string", b""),
            )
            await send_redirect(send, location)
            return

        hsts = self._hsts if scheme == "https" else None
        request_id_header = (b"x-request-id", state.request_id.encode("ascii"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() not in (b"strict-transport-security", b"x-request-id")
                ]
                headers.append(request_id_header)
                if hsts is not None:
                    headers.append(hsts)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RedirectApp:
    """The plain-HTTP listener: every request is redirected to HTTPS, nothing else is served.

    Served with lifespan off (see :mod:`gateway.server`): it has nothing to start or stop.
    """

    def __init__(self, *, redirect: RedirectTarget) -> None:
        self._redirect = redirect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        host = header(scope, b"host")
        location = self._redirect.url(
            host.decode("latin-1") if host is not None else None,
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
        )
        await send_redirect(send, location)
