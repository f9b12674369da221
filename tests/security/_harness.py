"""The gateway as deployed, for attack tests: ``build(demo_settings(...))`` served by uvicorn
with the gateway's own listener configuration (TLS, ``proxy_headers=False``, httptools), the
plain-HTTP redirect listener, the dev identity provider, and an upstream that echoes exactly
what crossed the wire (raw path, query, every header). All on 127.0.0.1.

Tests talk to it with httpx (a browser) or, for request targets httpx would normalise, with
raw bytes over a TLS socket (:meth:`Deployment.raw`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import uvicorn

from devidp import PEOPLE, Person, for_gateway
from gateway._wiring import build, demo_settings
from gateway.server import _config
from gateway.settings import Settings
from gateway.types import Receive, Scope, Send

START_TIMEOUT = 20.0
RAW_TIMEOUT = 10.0
HOST = "localhost"


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _free_port() -> int:
    with contextlib.closing(_listening_socket()) as sock:
        return int(sock.getsockname()[1])


async def echo_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """Any method, any path: answers with what it received, as JSON."""
    if scope["type"] != "http":
        return
    more = True
    body = b""
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = {
        "method": scope["method"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


class CountingApp:
    """Wraps an ASGI app and counts requests per path (how often the gateway calls the IdP)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hits: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.hits[scope["path"]] = self.hits.get(scope["path"], 0) + 1
        await self.app(scope, receive, send)


@contextlib.contextmanager
def _serve(server: uvicorn.Server, sock: socket.socket | None = None) -> Iterator[None]:
    kwargs = {"sockets": [sock]} if sock is not None else {}
    thread = threading.Thread(target=server.run, kwargs=kwargs, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("a server did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _plain(app: Any) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))


@dataclass
class Deployment:
    """The running gateway and its neighbours."""

    settings: Settings
    https_port: int
    http_port: int
    idp_url: str
    ssl_context: ssl.SSLContext
    idp_hits: dict[str, int]

    @property
    def base(self) -> str:
        return f"https://{HOST}:{self.https_port}"

    def client(self) -> httpx.Client:
        """A fresh browser: its own cookie jar, no redirects followed."""
        return httpx.Client(
            base_url=self.base, verify=self.ssl_context, follow_redirects=False, timeout=20
        )

    def log_in(self, browser: httpx.Client, person: Person, next_path: str = "/") -> None:
        """The authorization code flow through the dev identity provider."""
        to_idp = browser.get("/_gateway/login", params={"next": next_path})
        assert to_idp.status_code == 303, to_idp.text
        authorize = to_idp.headers["location"]
        assert authorize.startswith(self.idp_url)
        chosen = httpx.post(authorize, data={"person": person.subject})
        assert chosen.status_code == 302, chosen.text
        back = urlsplit(chosen.headers["location"])
        done = browser.get(f"{back.path}?{back.query}")
        assert done.status_code == 303, done.text

    def raw(self, request: bytes, *, tls: bool = True) -> tuple[int, bytes]:
        """Send ``request`` as bytes (TLS to the HTTPS listener, or plain to the redirect one);
        (status, whole response)."""
        port = self.https_port if tls else self.http_port
        plain = socket.create_connection(("127.0.0.1", port), timeout=RAW_TIMEOUT)
        sock = self.ssl_context.wrap_socket(plain, server_hostname=HOST) if tls else plain
        received = b""
        with contextlib.closing(plain), contextlib.closing(sock):
            sock.sendall(request)
            while True:
                try:
                    chunk = sock.recv(65536)
                except (TimeoutError, ConnectionResetError, ssl.SSLError):
                    break
                if not chunk:
                    break
                received += chunk
        status_line = received.split(b"\r\n", 1)[0]
        parts = status_line.split(b" ")
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return status, received

    def raw_get(self, target: bytes, *, extra: bytes = b"", cookie: str | None = None) -> bytes:
        """A GET request for ``target`` exactly as given, as bytes."""
        request = b"GET " + target + b" HTTP/1.1\r\nHost: " + HOST.encode()
        request += b":" + str(self.https_port).encode() + b"\r\n"
        if cookie is not None:
            request += b"Cookie: " + cookie.encode() + b"\r\n"
        return request + extra + b"Connection: close\r\n\r\n"


def body_json(response: bytes) -> dict[str, Any]:
    """The JSON body of a raw response (``Connection: close``, no chunking from the gateway
    assumed; chunked bodies are joined)."""
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        joined = b""
        while body:
            size_text, _, rest = body.partition(b"\r\n")
            size = int(size_text.split(b";")[0], 16)
            if size == 0:
                break
            joined += rest[:size]
            body = rest[size + 2 :]
        body = joined
    result: dict[str, Any] = json.loads(body)
    return result


def upstream_headers(seen: dict[str, Any]) -> list[tuple[str, str]]:
    """The echo upstream's header list as (lower-case name, value) pairs."""
    return [(name.lower(), value) for name, value in seen["headers"]]


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def idp_tokens(deployment: Deployment) -> dict[str, str]:
    """The dev IdP's token response (access and ID token) for a student, obtained as the
    gateway's client (code flow with PKCE)."""
    secret = deployment.settings.oidc.issuers["devidp"].client_secret
    assert secret is not None
    verifier = secrets.token_urlsafe(48)
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    redirect_uri = f"{deployment.base}/_gateway/callback"
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "gateway",
            "redirect_uri": redirect_uri,
            "scope": "openid profile",
            "state": secrets.token_urlsafe(16),
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    chosen = httpx.post(
        f"{deployment.idp_url}/authorize?{query}", data={"person": person("student").subject}
    )
    assert chosen.status_code == 302, chosen.text
    code = parse_qs(urlsplit(chosen.headers["location"]).query)["code"][0]
    answer = httpx.post(
        f"{deployment.idp_url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=("gateway", secret.reveal()),
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, str] = answer.json()
    return data


def person(role: str) -> Person:
    """The first demo person with ``role``."""
    return next(p for p in PEOPLE if p.roles[0] == role)


@contextlib.contextmanager
def deployed(
    state: Path,
    environ: dict[str, str] | None = None,
    *,
    idp_up: bool = True,
    upstream_up: bool = True,
) -> Iterator[Deployment]:
    """The whole deployment under ``state`` (``environ``: extra settings); stopped on exit.

    ``idp_up``/``upstream_up`` False leave that port bound but not listening (connections
    are refused), for fail-closed tests."""
    idp_sock, upstream_sock = _listening_socket(), _listening_socket()
    # The gateway's own ports are bound here and handed to uvicorn, not picked and released:
    # another test's server could take a released port before uvicorn binds it.
    https_sock, http_sock = _listening_socket(), _listening_socket()
    https_port, http_port = https_sock.getsockname()[1], http_sock.getsockname()[1]
    settings = demo_settings(
        None,
        environ={
            "GATEWAY_DEMO__STATE_DIR": str(state),
            "GATEWAY_DEMO__IDP_PORT": str(idp_sock.getsockname()[1]),
            "GATEWAY_DEMO__UPSTREAM_PORT": str(upstream_sock.getsockname()[1]),
            "GATEWAY_POLICY__WATCH": "false",
            "GATEWAY_SERVER__REQUEST_HEAD_TIMEOUT": "2s",
            "GATEWAY_SERVER__HTTPS_PORT": str(https_port),
            "GATEWAY_SERVER__HTTP_PORT": str(http_port),
            "GATEWAY_SERVER__METRICS_PORT": str(_free_port()),
            **(environ or {}),
        },
    )
    secret = settings.oidc.issuers["devidp"].client_secret
    assert secret is not None
    idp_url = f"http://127.0.0.1:{idp_sock.getsockname()[1]}"
    idp = CountingApp(
        for_gateway(
            port=idp_sock.getsockname()[1],
            gateway_origins=[f"https://{HOST}:{https_port}"],
            client_secret=secret.reveal(),
            mode="test",
        )
    )
    gateway = build(settings)
    by_name = {listener.name: listener for listener in gateway.listeners}
    head = float(settings.server.request_head_timeout)
    https = uvicorn.Server(_config(by_name["https"], 5.0, "warning", head_timeout=head))
    redirect = uvicorn.Server(_config(by_name["http-redirect"], 5.0, "warning", head_timeout=head))
    context = ssl.create_default_context(cafile=str(settings.server.tls_cert_file))
    with (
        _serve(_plain(idp), idp_sock) if idp_up else contextlib.closing(idp_sock),
        _serve(_plain(echo_upstream), upstream_sock)
        if upstream_up
        else contextlib.closing(upstream_sock),
        _serve(https, https_sock),
        _serve(redirect, http_sock),
    ):
        yield Deployment(settings, https_port, http_port, idp_url, context, idp.hits)
