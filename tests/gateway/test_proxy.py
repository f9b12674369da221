"""gateway/proxy.py: the forwarder, served by uvicorn, against a real upstream served by uvicorn."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client

from audit import AuditUnavailable, MemorySink
from gateway._upstream import ClientKind, Headers, UpstreamResponse, UpstreamWebSocket
from gateway.paths import encode_path
from gateway.proxy import Forward
from gateway.types import SCOPE_KEY, GatewayState, Identity, Message, StageMissing
from tests.gateway._apps import ENDLESS_STOPPED, upstream_app
from tests.gateway._gateway import gateway_app
from tests.gateway._servers import REPO, refused_url, rss_kib, serve_process, serve_thread

TEACHER = Identity(
    issuer="https://idp.example",
    subject="t-1",
    roles=frozenset({"teacher"}),
    tenant="school-a",
    method="session",
)


@dataclass
class Gateway:
    url: str
    audit: MemorySink

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_thread(upstream_app()) as url:
        yield url


@pytest.fixture(scope="module", params=["aiohttp", "httpx"])
def gateway(request: pytest.FixtureRequest, upstream_url: str) -> Iterator[Gateway]:
    sink = MemorySink()
    kind: ClientKind = request.param
    app = gateway_app(upstream_url, kind=kind, audit=sink, who=TEACHER, read_timeout=1.0)
    with serve_thread(app, lifespan="on") as url:
        yield Gateway(url, sink)


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    gateway.audit.events.clear()
    return gateway


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.json()["headers"]}


class TestForwarding:
    def test_path_and_query_forwarded(self, gw: Gateway) -> None:
        """The canonical path arrives percent-encoded and the query string exactly as sent."""
        with gw.client() as client:
            response = client.get("/echo/a%20b/%C3%A9?q=%41%2F&x")
        assert response.status_code == 200
        assert response.json()["raw_path"] == "/echo/a%20b/%C3%A9"
        assert response.json()["query"] == "q=%41%2F&x"

    def test_get_forwarded_without_body_framing(self, gw: Gateway) -> None:
        """A GET reaches the upstream with neither Transfer-Encoding nor Content-Length."""
        with gw.client() as client:
            headers = _headers(client.get("/echo"))
        assert "transfer-encoding" not in headers
        assert "content-length" not in headers

    def test_chunked_upload_forwarded(self, gw: Gateway) -> None:
        """A body sent without a length arrives whole."""
        with gw.client() as client:
            response = client.post("/echo", content=iter([b"a" * 70_000, b"b" * 70_000]))
        assert response.json()["body"] == "a" * 70_000 + "b" * 70_000

    def test_request_body_forwarded(self, gw: Gateway) -> None:
        """A POST body reaches the upstream with its Content-Length."""
        with gw.client() as client:
            response = client.post("/echo", content=b"payload=1")
        assert response.json()["body"] == "payload=1"
        assert _headers(response)["content-length"] == "9"

    def test_status_and_headers_returned(self, gw: Gateway) -> None:
        """The upstream's status, headers and body come back unchanged."""
        with gw.client() as client:
            response = client.get("/status/418")
        assert response.status_code == 418
        assert response.content == b"upstream says no"
        assert gw.audit.events == []

    def test_redirect_passed_on(self, gw: Gateway) -> None:
        """The gateway returns the upstream's redirect instead of following it."""
        with gw.client() as client:
            response = client.get("/redirect")
        assert response.status_code == 302
        assert response.headers["location"] == "/echo"

    def test_head_has_no_body(self, gw: Gateway) -> None:
        """HEAD is forwarded as HEAD and answered without a body."""
        with gw.client() as client:
            response = client.head("/download?n=100")
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-length"] == "100"

    def test_hop_by_hop_request_headers_dropped(self, gw: Gateway) -> None:
        """Keep-Alive, Proxy-Authorization and headers named in Connection are not forwarded."""
        with gw.client() as client:
            response = client.get(
                "/echo",
                headers={
                    "Connection": "keep-alive, X-Secret-Hop",
                    "Keep-Alive": "timeout=5",
                    "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                    "X-Secret-Hop": "1",
                    "X-Kept": "1",
                },
            )
        headers = _headers(response)
        assert "x-kept" in headers
        for name in ("connection", "keep-alive", "proxy-authorization", "x-secret-hop"):
            assert name not in headers

    @pytest.mark.parametrize("method", ["TRACE", "PROPFIND"])
    def test_unlisted_methods_not_forwarded(self, gw: Gateway, method: str) -> None:
        """TRACE and other unlisted methods are answered 400 by the gateway itself."""
        with gw.client() as client:
            response = client.request(method, "/echo", headers={"accept": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"] == "bad_request"
        assert "x-upstream" not in response.headers

    def test_streamed_download(self, gw: Gateway) -> None:
        """A body larger than any buffer arrives whole."""
        with gw.client() as client, client.stream("GET", "/download?n=3000000") as response:
            total = sum(len(chunk) for chunk in response.iter_raw())
        assert total == 3_000_000


class TestClientGoesAway:
    def test_download_abandoned_stops_upstream(self, gw: Gateway) -> None:
        """When the client drops a long download, the gateway stops reading the upstream."""
        ENDLESS_STOPPED.clear()
        with gw.client() as client, client.stream("GET", "/endless") as response:
            received = 0
            for chunk in response.iter_raw():
                received += len(chunk)
                if received > 1_000_000:
                    break
        assert ENDLESS_STOPPED.wait(timeout=10), "the upstream kept streaming"
        assert gw.audit.events == []

    def test_upload_abandoned_is_not_an_upstream_error(self, gw: Gateway) -> None:
        """A client that disconnects mid-upload causes no 502 audit event."""
        host, port = gw.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
                + b"u" * 100_000
            )
            time.sleep(0.3)
        time.sleep(0.5)
        assert gw.audit.events == []


class TestFailures:
    def test_upstream_5xx_passed_through_and_audited(self, gw: Gateway) -> None:
        """An upstream 503 reaches the client as is and is recorded as an upstream error."""
        with gw.client() as client:
            response = client.get("/status/503")
        assert response.status_code == 503
        assert response.content == b"upstream says no"
        (event,) = gw.audit.events
        assert event["event.action"] == "upstream_error"
        assert event["http.response.status_code"] == 503
        assert event["user.id"] == "https://idp.example|t-1"
        assert event["url.path"] == "/status/503"

    def test_timeout_is_504_with_audit_event(self, gw: Gateway) -> None:
        """No answer within the read timeout gives a generic 504 and an upstream_timeout event."""
        with gw.client() as client:
            response = client.get("/slow?s=3", headers={"accept": "application/json"})
        assert response.status_code == 504
        body = response.json()
        assert body["error"] == "upstream_timeout"
        assert body["request_id"] == response.headers["x-request-id"]
        (event,) = gw.audit.events
        assert event["event.action"] == "upstream_timeout"
        assert event["event.outcome"] == "failure"
        assert event["event.category"] == ["web"]
        assert event["error.type"] == "upstream_timeout"
        assert event["trace.id"] == body["request_id"]
        assert event["http.request.method"] == "GET"
        assert event["url.path"] == "/slow"
        assert event["source.ip"] == "192.0.2.10"
        assert event["http.response.status_code"] == 504

    def test_timeout_mid_body_truncates(self, gw: Gateway) -> None:
        """A body that stalls after the status was sent is cut off, never completed, and audited."""
        with (
            gw.client() as client,
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("GET", "/slow-body?s=3") as response,
        ):
            response.read()
        (event,) = gw.audit.events
        assert event["event.action"] == "upstream_timeout"
        assert "http.response.status_code" not in event
        assert "after the response started" in event["error.message"]


class _BlockingSink:
    """An audit sink that can record nothing and must not drop (policy ``block``)."""

    def emit(self, event: Any) -> None:
        raise AuditUnavailable


class TestAuditUnavailable:
    def test_unreachable_upstream_is_503(self) -> None:
        """When the 502's audit event cannot be recorded, the client gets 503 (fail closed)."""
        with refused_url() as upstream:
            app = gateway_app(upstream, audit=_BlockingSink(), who=TEACHER)
            with serve_thread(app, lifespan="on") as url, httpx.Client(base_url=url) as client:
                response = client.get("/echo", headers={"accept": "application/json"})
        assert response.status_code == 503
        assert response.json()["error"] == "service_unavailable"

    def test_upstream_5xx_replaced_by_503(self, upstream_url: str) -> None:
        """An upstream 500 that cannot be audited is not passed on; the client gets 503."""
        app = gateway_app(upstream_url, audit=_BlockingSink(), who=TEACHER)
        with serve_thread(app, lifespan="on") as url, httpx.Client(base_url=url) as client:
            response = client.get("/status/500", headers={"accept": "application/json"})
            ok = client.get("/status/404")
        assert response.status_code == 503
        assert "upstream says no" not in response.text
        assert ok.status_code == 404


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
class TestUnreachable:
    def test_502_with_generic_body_and_audit(self, kind: ClientKind) -> None:
        """A refused connection is a 502 naming no address, and an upstream_error event."""
        sink = MemorySink()
        with refused_url() as upstream:
            port = upstream.rsplit(":", 1)[1]
            app = gateway_app(upstream, kind=kind, audit=sink, who=TEACHER)
            with serve_thread(app, lifespan="on") as url, httpx.Client(base_url=url) as client:
                response = client.get("/api/me?token=secret", headers={"accept": "text/html"})
        assert response.status_code == 502
        assert "Dienst niet bereikbaar" in response.text
        assert str(port) not in response.text
        assert "127.0.0.1" not in response.text
        (event,) = sink.events
        assert event["event.action"] == "upstream_error"
        assert event["event.reason"] == "upstream_connect_failed"
        assert event["error.type"] == "upstream_unavailable"
        assert event["url.path"] == "/api/me"
        assert str(port) not in json.dumps(event)
        assert "secret" not in json.dumps(event)
        assert event["organization.id"] == "school-a"

    def test_websocket_to_unreachable_upstream(self, kind: ClientKind) -> None:
        """A WebSocket upgrade the gateway cannot forward is refused with 502 and audited."""
        sink = MemorySink()
        with (
            refused_url() as upstream,
            serve_thread(
                gateway_app(upstream, kind=kind, audit=sink, who=TEACHER), lifespan="on"
            ) as url,
            pytest.raises(websockets.exceptions.InvalidStatus) as caught,
        ):
            websockets.sync.client.connect(url.replace("http", "ws") + "/ws", open_timeout=5)
        assert caught.value.response.status_code == 502
        (event,) = sink.events
        assert event["event.action"] == "upstream_error"
        assert event["labels"] == {"protocol": "websocket"}


class TestWebSocket:
    def test_messages_pass_both_ways(self, gw: Gateway) -> None:
        """Text and binary messages and the chosen subprotocol pass through the gateway."""
        ws_url = gw.url.replace("http", "ws") + "/ws"
        with websockets.sync.client.connect(ws_url, subprotocols=["chat.v1"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat.v1"
            ws.send("hallo")
            assert ws.recv(timeout=5) == "echo:hallo"
            ws.send(b"\x00\xff")
            assert ws.recv(timeout=5) == b"echo:\x00\xff"

    def test_refused_upgrade_passed_on_not_audited(self, gw: Gateway) -> None:
        """An upgrade the upstream refuses with 403 reaches the client as 403, with no event."""
        ws_url = gw.url.replace("http", "ws") + "/echo"
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            websockets.sync.client.connect(ws_url, open_timeout=5)
        assert caught.value.response.status_code == 403
        assert gw.audit.events == []

    def test_upstream_close_code_reaches_client(self, gw: Gateway) -> None:
        """When the upstream closes with a code, the client's connection closes with it."""
        ws_url = gw.url.replace("http", "ws") + "/ws"
        with websockets.sync.client.connect(ws_url) as ws:
            ws.send("close-please")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as caught:
                ws.recv(timeout=5)
        assert caught.value.rcvd is not None
        assert caught.value.rcvd.code == 4001


class _RecordingClient:
    """An UpstreamClient that records aclose(); requests are not its business here."""

    def __init__(self) -> None:
        self.closed = False

    async def send(self, method: str, target: str, headers: Headers, body: Any) -> UpstreamResponse:
        raise NotImplementedError

    async def connect_websocket(
        self, target: str, headers: Headers, subprotocols: Any
    ) -> UpstreamWebSocket:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.closed = True


class TestAsgi:
    @pytest.mark.parametrize("methods", [[], ["get"], ["GET", "X-Y"]])
    def test_bad_method_list(self, methods: list[str]) -> None:
        """The method list is checked when the forwarder is built."""
        with pytest.raises(ValueError, match="methods"):
            Forward(client=_RecordingClient(), audit=MemorySink(), methods=methods)

    async def test_lifespan_shutdown_closes_the_pool(self) -> None:
        """As the outermost app the forwarder answers lifespan and closes its client at shutdown."""
        client = _RecordingClient()
        app = Forward(client=client, audit=MemorySink())
        incoming: asyncio.Queue[Message] = asyncio.Queue()
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        for kind in ("lifespan.startup", "lifespan.shutdown"):
            incoming.put_nowait({"type": kind})
        await app({"type": "lifespan"}, incoming.get, send)
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        assert client.closed

    async def test_missing_state_raises(self) -> None:
        """Without the earlier stages the forwarder refuses to run instead of forwarding."""
        app = Forward(client=_RecordingClient(), audit=MemorySink())

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            raise AssertionError("nothing may be sent")

        scope: dict[str, Any] = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [],
            "query_string": b"",
        }
        with pytest.raises(StageMissing):
            await app(scope, receive, send)
        scope[SCOPE_KEY] = GatewayState(request_id="r", client_ip=None)  # no canonical path
        with pytest.raises(StageMissing, match="path stage"):
            await app(scope, receive, send)


class TestEncodePath:
    @pytest.mark.parametrize(
        ("path", "wire"),
        [
            ("/activities/12", "/activities/12"),
            ("/a b", "/a%20b"),
            ("/é", "/%C3%A9"),
            ("/100%", "/100%25"),
            ("/what?", "/what%3F"),
            ("/x#y", "/x%23y"),
            ("/a:b@c;d=e,f+g", "/a:b@c%3Bd=e,f+g"),
        ],
    )
    def test_encoding(self, path: str, wire: str) -> None:
        """The decoded canonical path is encoded so the upstream decodes it back to itself."""
        assert encode_path(path) == wire


LARGE = 200 * 1024 * 1024
MEMORY_BUDGET_KIB = 50 * 1024


def _reset_peak(pid: int) -> None:
    """Set the process's peak resident size (VmHWM) back to its current size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _upload_chunks() -> Iterator[bytes]:
    block = b"u" * (256 * 1024)
    for _ in range(LARGE // len(block)):
        yield block


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
class TestLargeBodies:
    def test_200mb_each_way_in_bounded_memory(self, kind: ClientKind) -> None:
        """A 200 MB upload and download pass while the gateway's resident memory grows < 50 MB."""
        upstream_env = {"PYTHONPATH": str(REPO)}
        with serve_process("tests.gateway._apps:upstream_app", env=upstream_env) as (up, _):
            env = {"TEST_UPSTREAM": up, "TEST_CLIENT": kind, "PYTHONPATH": str(REPO)}
            with (
                serve_process("tests.gateway._gateway:gateway_from_env", env=env) as (url, proc),
                httpx.Client(base_url=url, timeout=60) as client,
            ):
                # Warm up both directions, then measure from here.
                assert client.post("/upload", content=b"w" * 100_000).json() == {
                    "received": 100_000
                }
                assert len(client.get("/download?n=100000").content) == 100_000
                before, _ = rss_kib(proc.pid)
                _reset_peak(proc.pid)

                uploaded = client.post("/upload", content=_upload_chunks())
                with client.stream("GET", f"/download?n={LARGE}") as response:
                    downloaded = sum(len(chunk) for chunk in response.iter_raw())

                _, peak = rss_kib(proc.pid)
        assert uploaded.json() == {"received": LARGE}
        assert downloaded == LARGE
        assert peak - before < MEMORY_BUDGET_KIB, f"grew {(peak - before) // 1024} MB"
