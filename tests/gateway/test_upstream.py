"""gateway/_upstream.py: both upstream clients against a real upstream served by uvicorn."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway._upstream import ClientKind, UpstreamClient, WebSocketRejected, create_upstream
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from tests.gateway._apps import upstream_app
from tests.gateway._servers import refused_url, serve_thread

KINDS: list[ClientKind] = ["aiohttp", "httpx"]


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_thread(upstream_app()) as url:
        yield url


@pytest.fixture(params=KINDS)
async def client(
    request: pytest.FixtureRequest, upstream_url: str
) -> AsyncIterator[UpstreamClient]:
    made = create_upstream(request.param, base_url=upstream_url, read_timeout=1.0, pool_size=2)
    yield made
    await made.aclose()


async def _body(
    client: UpstreamClient, method: str, target: str, **kw: object
) -> tuple[int, bytes]:
    response = await client.send(method, target, kw.get("headers", []), kw.get("body"))  # type: ignore[arg-type]
    data = b"".join([chunk async for chunk in response.stream()])
    return response.status, data


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _headers(echoed: bytes) -> dict[str, str]:
    return {k: v for k, v in json.loads(echoed)["headers"]}


class TestRequests:
    async def test_get_without_body_sends_no_framing(self, client: UpstreamClient) -> None:
        """A GET without a body carries neither Transfer-Encoding nor Content-Length."""
        status, data = await _body(client, "GET", "/echo")
        assert status == 200
        headers = _headers(data)
        assert "transfer-encoding" not in headers
        assert "content-length" not in headers

    async def test_only_our_headers_are_sent(self, client: UpstreamClient) -> None:
        """The library adds no Accept, Accept-Encoding or User-Agent; Host is the upstream's."""
        status, data = await _body(client, "GET", "/echo", headers=[(b"x-probe", b"1")])
        assert status == 200
        headers = _headers(data)
        assert set(headers) == {"host", "x-probe"}
        assert headers["host"].startswith("127.0.0.1:")

    async def test_streamed_body_with_length(self, client: UpstreamClient) -> None:
        """A streamed body with the client's Content-Length is sent with that length, unchunked."""
        status, data = await _body(
            client,
            "POST",
            "/echo",
            headers=[(b"content-length", b"11")],
            body=_chunks(b"hello ", b"world"),
        )
        echoed = json.loads(data)
        assert status == 200
        assert echoed["body"] == "hello world"
        assert _headers(data).get("content-length") == "11"
        assert "transfer-encoding" not in _headers(data)

    async def test_streamed_body_without_length_is_chunked(self, client: UpstreamClient) -> None:
        """Without a length the body goes chunked and arrives whole."""
        status, data = await _body(client, "PUT", "/echo", body=_chunks(b"a", b"b", b"c"))
        assert status == 200
        assert json.loads(data)["body"] == "abc"
        assert _headers(data).get("transfer-encoding") == "chunked"

    async def test_target_sent_verbatim(self, client: UpstreamClient) -> None:
        """The encoded path and the query string reach the upstream byte for byte."""
        target = "/echo/a%20b/%C3%A9?x=%41&y=a+b&z"
        status, data = await _body(client, "GET", target)
        echoed = json.loads(data)
        assert status == 200
        assert echoed["raw_path"] == "/echo/a%20b/%C3%A9"
        assert echoed["query"] == "x=%41&y=a+b&z"

    @pytest.mark.parametrize("kind", KINDS)
    async def test_no_cookie_is_kept_between_requests(
        self, kind: ClientKind, upstream_url: str
    ) -> None:
        """A cookie set by the upstream for one user is never sent on another request."""
        # A host name, not an IP: cookie jars refuse cookies for IP addresses anyway.
        client = create_upstream(kind, base_url=upstream_url.replace("127.0.0.1", "localhost"))
        try:
            status, _ = await _body(client, "GET", "/set-cookie")
            assert status == 200
            _, data = await _body(client, "GET", "/echo")
        finally:
            await client.aclose()
        assert "cookie" not in _headers(data)

    async def test_redirects_are_not_followed(self, client: UpstreamClient) -> None:
        """A redirect is the upstream's answer to pass on, not something to follow."""
        response = await client.send("GET", "/redirect", [], None)
        await response.aclose()
        assert response.status == 302
        assert (b"location", b"/echo") in [(k.lower(), v) for k, v in response.headers]

    async def test_connections_are_reused(self, client: UpstreamClient) -> None:
        """Sequential requests travel over one pooled keep-alive connection."""
        ports = set()
        for _ in range(3):
            _, data = await _body(client, "GET", "/echo")
            ports.add(json.loads(data)["peer_port"])
        assert len(ports) == 1

    async def test_abandoned_streams_return_their_connections(self, client: UpstreamClient) -> None:
        """Half-read responses closed early do not exhaust a pool of two connections."""
        for _ in range(6):
            response = await client.send("GET", "/download?n=1000000", [], None)
            stream = response.stream()
            await anext(stream)
            await stream.aclose()  # the finally inside closes the upstream response
        status, data = await _body(client, "GET", "/download?n=10")
        assert (status, data) == (200, b"x" * 10)


@contextlib.contextmanager
def _raw_server(answer: bytes) -> Iterator[str]:
    """A TCP server that reads a request, writes ``answer`` and closes the connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


class TestFailures:
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize(
        "answer",
        [b"", b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"],
    )
    async def test_broken_upstream_is_unavailable(self, kind: ClientKind, answer: bytes) -> None:
        """A closed connection, a garbage answer or a cut-off body is UpstreamUnavailable."""
        with _raw_server(answer) as url:
            client = create_upstream(kind, base_url=url)
            try:
                with pytest.raises(UpstreamUnavailable) as caught:
                    response = await client.send("GET", "/", [], None)
                    async for _ in response.stream():
                        pass
            finally:
                await client.aclose()
        assert caught.value.reason == "upstream_protocol_error"

    @pytest.mark.parametrize("kind", KINDS)
    async def test_unreachable_is_unavailable(self, kind: ClientKind) -> None:
        """A refused connection becomes UpstreamUnavailable without the address in its text."""
        with refused_url() as url:
            port = url.rsplit(":", 1)[1]
            client = create_upstream(kind, base_url=url)
            try:
                with pytest.raises(UpstreamUnavailable) as caught:
                    await client.send("GET", "/", [], None)
            finally:
                await client.aclose()
        assert caught.value.reason == "upstream_connect_failed"
        assert str(port) not in str(caught.value)

    async def test_slow_headers_time_out(self, client: UpstreamClient) -> None:
        """No status line within the read timeout is an UpstreamTimeout."""
        with pytest.raises(UpstreamTimeout) as caught:
            await client.send("GET", "/slow?s=3", [], None)
        assert caught.value.reason == "upstream_read_timeout"

    async def test_slow_body_times_out_while_streaming(self, client: UpstreamClient) -> None:
        """A body that stalls past the read timeout raises UpstreamTimeout from the stream."""
        response = await client.send("GET", "/slow-body?s=3", [], None)
        with pytest.raises(UpstreamTimeout):
            async for _ in response.stream():
                pass


class TestWebSocket:
    async def test_echo_with_subprotocol(self, client: UpstreamClient) -> None:
        """Text and binary messages go both ways; the upstream's subprotocol choice is reported."""
        ws = await client.connect_websocket("/ws", [(b"x-probe", b"1")], ["chat.v1", "chat.v0"])
        try:
            assert ws.subprotocol == "chat.v1"
            await ws.send("hi")
            assert await ws.receive() == "echo:hi"
            await ws.send(b"\x00\x01")
            assert await ws.receive() == b"echo:\x00\x01"
            await ws.send("close-please")
            assert await ws.receive() is None
            assert ws.close_code == 4001
        finally:
            await ws.close()

    async def test_handshake_headers_are_not_copied(self, client: UpstreamClient) -> None:
        """The client's own Sec-WebSocket-Key is never forwarded; the library makes a fresh one."""
        ws = await client.connect_websocket(
            "/ws-headers",
            [(b"sec-websocket-key", b"Y2xpZW50LWtleS0xMjM0NQ=="), (b"x-probe", b"1")],
            [],
        )
        try:
            received = await ws.receive()
        finally:
            await ws.close()
        assert isinstance(received, str)
        headers = dict((k, v) for k, v in json.loads(received))
        assert headers["x-probe"] == "1"
        assert headers["sec-websocket-key"] != "Y2xpZW50LWtleS0xMjM0NQ=="

    async def test_refused_upgrade(self, client: UpstreamClient) -> None:
        """An upgrade the upstream refuses with 403 is WebSocketRejected carrying the status."""
        with pytest.raises(WebSocketRejected) as caught:
            await client.connect_websocket("/echo", [], [])
        assert caught.value.status == 403

    @pytest.mark.parametrize("kind", KINDS)
    async def test_unreachable_websocket(self, kind: ClientKind) -> None:
        """A WebSocket to an upstream that is not there is UpstreamUnavailable."""
        with refused_url() as url:
            client = create_upstream(kind, base_url=url)
            try:
                with pytest.raises(UpstreamUnavailable):
                    await client.connect_websocket("/ws", [], [])
            finally:
                await client.aclose()


class TestConstruction:
    @pytest.mark.parametrize(
        "options",
        [
            {"base_url": "ftp://127.0.0.1"},
            {"base_url": "http://127.0.0.1/prefix"},
            {"base_url": "http://127.0.0.1?x=1"},
            {"base_url": "http://127.0.0.1", "read_timeout": 0},
            {"base_url": "http://127.0.0.1", "connect_timeout": -1},
            {"base_url": "http://127.0.0.1", "pool_size": 0},
        ],
    )
    @pytest.mark.parametrize("kind", KINDS)
    def test_bad_options_fail_at_start(self, kind: ClientKind, options: dict[str, object]) -> None:
        """Bad settings are refused when the client is built, not on the first request."""
        with pytest.raises(ValueError):
            create_upstream(kind, **options)  # type: ignore[arg-type]

    def test_unknown_kind(self) -> None:
        """Only the two measured clients can be chosen."""
        with pytest.raises(ValueError, match="unknown upstream client"):
            create_upstream("requests", base_url="http://127.0.0.1")  # type: ignore[arg-type]
