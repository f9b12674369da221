"""The upstream client seam: one small interface, built once at start-up, two implementations.

The forwarder (``gateway/proxy.py``) talks to the platform behind the gateway only through
:class:`UpstreamClient`. Which implementation serves is a performance choice made by
``bench/gateway.py`` (measured here: aiohttp's client forwarded several times more requests/s
than httpx's), so both stay behind the same contract:

- ``send`` streams the request body from an async iterable (``None`` means no body at all: no
  chunked empty body for GET/HEAD) and returns as soon as the status line and headers arrived;
  the response body is read through :meth:`UpstreamResponse.stream`, which closes the upstream
  response in a ``finally`` however the iteration ends (done, failed, abandoned), so the pool
  never leaks a connection.
- Bodies are never buffered whole: both libraries apply flow control (aiohttp pauses the socket
  above its read buffer, httpx reads per chunk), so memory stays bounded whatever the size.
- Library exceptions are translated at this boundary into :class:`gateway.errors.UpstreamTimeout`
  (connect or read timeout) and :class:`gateway.errors.UpstreamUnavailable` (everything else),
  raised ``from`` the original; a WebSocket upgrade the upstream refuses with a 4xx status is
  :class:`WebSocketRejected` (the upstream's answer, to pass on). Their ``reason`` is a stable
  snake_case id; their text never carries the upstream address.
- Neither client keeps cookies, follows redirects, decompresses, reads proxy settings from the
  environment, or adds headers the client did not send (besides ``Host``): the pool is shared by
  every user, so nothing of one request may leak into another.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
from collections.abc import AsyncGenerator, AsyncIterable, Iterator, Sequence
from typing import Literal, Protocol

import aiohttp
import httpx
import websockets
import websockets.asyncio.client
import websockets.exceptions
from yarl import URL

from gateway.errors import UpstreamTimeout, UpstreamUnavailable

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_WS_MAX_MESSAGE",
    "AiohttpUpstream",
    "ClientKind",
    "Headers",
    "HttpxUpstream",
    "UpstreamClient",
    "UpstreamResponse",
    "UpstreamWebSocket",
    "WebSocketRejected",
    "create_upstream",
]

#: Seconds to open a TCP connection to the upstream.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds the upstream may stay silent while we wait for headers or the next body bytes.
DEFAULT_READ_TIMEOUT = 30.0
#: Seconds a request may wait for a free pooled connection.
DEFAULT_POOL_TIMEOUT = 10.0
#: Keep-alive connections per upstream.
DEFAULT_POOL_SIZE = 100
#: Largest WebSocket message relayed (bytes); larger ones close the connection.
DEFAULT_WS_MAX_MESSAGE = 1 << 20

Headers = Sequence[tuple[bytes, bytes]]
ClientKind = Literal["aiohttp", "httpx"]

# Headers the libraries would add by themselves; we forward only what the client sent.
_AIOHTTP_SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Generated per hop by the WebSocket client library; never copied from the client's handshake.
_WS_HANDSHAKE_HEADERS = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)


class WebSocketRejected(Exception):
    """The upstream refused a WebSocket upgrade with a 4xx status: its answer, not a failure."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the upstream refused the WebSocket upgrade with status {status}")
        self.status = status


class UpstreamResponse(Protocol):
    """Status and headers of an upstream answer; the body is read once through ``stream``."""

    status: int
    headers: list[tuple[bytes, bytes]]

    def stream(self) -> AsyncGenerator[bytes]:
        """The body in chunks as they arrive; closes the response however iteration ends."""
        ...

    async def aclose(self) -> None:
        """Give the connection back (or drop it when the body was not read to the end)."""
        ...


class UpstreamWebSocket(Protocol):
    """An open WebSocket to the upstream."""

    subprotocol: str | None

    async def receive(self) -> str | bytes | None:
        """The next message, or ``None`` once the upstream closed (see ``close_code``)."""
        ...

    async def send(self, data: str | bytes) -> None: ...

    async def close(self, code: int = 1000) -> None: ...

    @property
    def close_code(self) -> int | None: ...


class UpstreamClient(Protocol):
    """What the forwarder needs from an HTTP client; one instance serves the whole process."""

    async def send(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: AsyncIterable[bytes] | None,
    ) -> UpstreamResponse:
        """Send ``method target`` (an origin-form target: encoded path and query)."""
        ...

    async def connect_websocket(
        self, target: str, headers: Headers, subprotocols: Sequence[str]
    ) -> UpstreamWebSocket:
        """Open a WebSocket to ``target``; handshake headers are generated, not copied."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection (at shutdown)."""
        ...


def _validate(base_url: str, connect: float, read: float, pool: float, size: int) -> str:
    parsed = httpx.URL(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("upstream base_url must be an absolute http:// or https:// URL")
    if parsed.query or parsed.fragment or parsed.path not in ("", "/"):
        raise ValueError("upstream base_url must not carry a path, query or fragment")
    for name, value in (("connect_timeout", connect), ("read_timeout", read)):
        if not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds")
    if not pool > 0:
        raise ValueError("pool_timeout must be a positive number of seconds")
    if size < 1:
        raise ValueError("pool_size must be at least 1")
    return base_url.rstrip("/")


def _ws_headers(headers: Headers) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name.lower() not in _WS_HANDSHAKE_HEADERS
    ]


# --- aiohttp -------------------------------------------------------------------------------


@contextlib.contextmanager
def _aiohttp_errors() -> Iterator[None]:
    """Translate aiohttp's exceptions into the gateway's, at the boundary."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise UpstreamTimeout("upstream_connect_timeout") from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout("upstream_read_timeout") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable("upstream_connect_failed") from exc
    except aiohttp.WSServerHandshakeError as exc:
        if 400 <= exc.status < 500:
            raise WebSocketRejected(exc.status) from exc
        raise UpstreamUnavailable("upstream_websocket_rejected") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable("upstream_protocol_error") from exc


class _AiohttpResponse:
    __slots__ = ("_done", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._done = False
        self.status = response.status
        self.headers = list(response.raw_headers)

    async def stream(self) -> AsyncGenerator[bytes]:
        try:
            with _aiohttp_errors():
                async for chunk in self._response.content.iter_any():
                    yield chunk
            self._done = True
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._done:
            self._response.release()  # back to the pool
        else:
            self._response.close()  # half-read: the connection cannot be reused


class _AiohttpWebSocket:
    __slots__ = ("_ws", "subprotocol")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.subprotocol = ws.protocol

    async def receive(self) -> str | bytes | None:
        while True:
            with _aiohttp_errors():
                message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                return str(message.data)
            if message.type is aiohttp.WSMsgType.BINARY:
                return bytes(message.data)
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                await self._ws.close()
                return None
            # PING/PONG are answered by aiohttp itself (autoping)

    async def send(self, data: str | bytes) -> None:
        with _aiohttp_errors():
            if isinstance(data, str):
                await self._ws.send_str(data)
            else:
                await self._ws.send_bytes(data)

    async def close(self, code: int = 1000) -> None:
        with _aiohttp_errors():
            await self._ws.close(code=code)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code


class AiohttpUpstream:
    """The upstream client on aiohttp (the fast one). The session opens on first use."""

    def __init__(
        self,
        *,
        base_url: str,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        ws_max_message: int = DEFAULT_WS_MAX_MESSAGE,
    ) -> None:
        self._base = _validate(base_url, connect_timeout, read_timeout, pool_timeout, pool_size)
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=pool_timeout + connect_timeout,  # aiohttp: pool wait plus connecting
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._ws_timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=connect_timeout)
        self._pool_size = pool_size
        self._ws_max_message = ws_max_message
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # A ClientSession belongs to the running loop, so it is made on first use, not here.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0),
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_AIOHTTP_SKIP_AUTO,
            trust_env=False,
        )
        return self._session

    async def send(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: AsyncIterable[bytes] | None,
    ) -> UpstreamResponse:
        session = self._session or self._open()
        with _aiohttp_errors():
            response = await session.request(
                method,
                URL(self._base + target, encoded=True),  # the path is sent exactly as given
                headers=[
                    (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
                ],
                data=body,
                allow_redirects=False,
            )
        return _AiohttpResponse(response)

    async def connect_websocket(
        self, target: str, headers: Headers, subprotocols: Sequence[str]
    ) -> UpstreamWebSocket:
        session = self._session or self._open()
        url = URL(self._base.replace("http", "ws", 1) + target, encoded=True)
        with _aiohttp_errors():
            ws = await session.ws_connect(
                url,
                protocols=tuple(subprotocols),
                headers=_ws_headers(headers),
                autoclose=False,
                autoping=True,
                max_msg_size=self._ws_max_message,
                timeout=self._ws_timeout,
                compress=0,
            )
        return _AiohttpWebSocket(ws)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- httpx ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Translate httpx's exceptions into the gateway's, at the boundary."""
    try:
        yield
    except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise UpstreamTimeout("upstream_connect_timeout") from exc
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout("upstream_read_timeout") from exc
    except httpx.ConnectError as exc:
        raise UpstreamUnavailable("upstream_connect_failed") from exc
    except (httpx.HTTPError, httpx.StreamError, OSError) as exc:
        raise UpstreamUnavailable("upstream_protocol_error") from exc


@contextlib.contextmanager
def _websockets_errors() -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamTimeout("upstream_connect_timeout") from exc
    except websockets.exceptions.InvalidStatus as exc:
        if 400 <= exc.response.status_code < 500:
            raise WebSocketRejected(exc.response.status_code) from exc
        raise UpstreamUnavailable("upstream_websocket_rejected") from exc
    except (websockets.exceptions.WebSocketException, OSError) as exc:
        raise UpstreamUnavailable("upstream_connect_failed") from exc


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = list(response.headers.raw)

    async def stream(self) -> AsyncGenerator[bytes]:
        try:
            with _httpx_errors():
                async for chunk in self._response.aiter_raw():
                    yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()


class _WebsocketsWebSocket:
    """An upstream WebSocket on the ``websockets`` package (httpx has no WebSocket client)."""

    __slots__ = ("_ws", "subprotocol")

    def __init__(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        self._ws = ws
        self.subprotocol: str | None = ws.subprotocol

    async def receive(self) -> str | bytes | None:
        try:
            return await self._ws.recv()
        except websockets.exceptions.ConnectionClosed:
            return None

    async def send(self, data: str | bytes) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await self._ws.send(data)

    async def close(self, code: int = 1000) -> None:
        await self._ws.close(code=code)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code


class HttpxUpstream:
    """The upstream client on httpx (kept for comparison; see ``bench/gateway.py``)."""

    def __init__(
        self,
        *,
        base_url: str,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        ws_max_message: int = DEFAULT_WS_MAX_MESSAGE,
    ) -> None:
        self._base = _validate(base_url, connect_timeout, read_timeout, pool_timeout, pool_size)
        self._connect_timeout = connect_timeout
        self._ws_max_message = ws_max_message
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=pool_timeout
            ),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            # No cookie is ever kept: the pool serves every user.
            cookies=http.cookiejar.CookieJar(
                policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
            ),
            follow_redirects=False,
            trust_env=False,
        )

    async def send(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: AsyncIterable[bytes] | None,
    ) -> UpstreamResponse:
        # A Request built directly carries only our headers (no client defaults, no cookies).
        request = httpx.Request(method, self._base + target, headers=list(headers), content=body)
        with _httpx_errors():
            response = await self._client.send(request, stream=True)
        return _HttpxResponse(response)

    async def connect_websocket(
        self, target: str, headers: Headers, subprotocols: Sequence[str]
    ) -> UpstreamWebSocket:
        url = self._base.replace("http", "ws", 1) + target
        with _websockets_errors():
            ws = await websockets.asyncio.client.connect(
                url,
                additional_headers=_ws_headers(headers),
                subprotocols=[websockets.Subprotocol(p) for p in subprotocols] or None,
                open_timeout=self._connect_timeout,
                max_size=self._ws_max_message,
                compression=None,
                user_agent_header=None,
                proxy=None,
            )
        return _WebsocketsWebSocket(ws)

    async def aclose(self) -> None:
        await self._client.aclose()


def create_upstream(
    kind: ClientKind,
    *,
    base_url: str,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> UpstreamClient:
    """The client named by ``kind`` (``"aiohttp"``, the default choice, or ``"httpx"``)."""
    cls: type[AiohttpUpstream | HttpxUpstream]
    if kind == "aiohttp":
        cls = AiohttpUpstream
    elif kind == "httpx":
        cls = HttpxUpstream
    else:
        raise ValueError(f"unknown upstream client {kind!r}: choose 'aiohttp' or 'httpx'")
    return cls(
        base_url=base_url,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        pool_timeout=pool_timeout,
        pool_size=pool_size,
    )
