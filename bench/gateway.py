"""Benchmark the forwarding path with wrk: requests/s and p50/p99 latency per contender.

    .venv/bin/python -m bench.gateway [--duration 5] [--rounds 3] [--connections 1 32 128]
                                      [--app NAME=module:factory ...] [--only NAME ...]
                                      [--opensearch URL] [--no-stages | --stages-only]

Contenders, all in one run, against the same upstream (nginx answering a small JSON body):

    direct         wrk -> nginx                                    (the upstream directly)
    forward-bare   wrk -> uvicorn -> Forward(aiohttp client) -> nginx; GET /activities
                   A bare forwarder behind a stand-in state stage (request id, client IP, the
                   path as the canonical path, an identity): no gateway stage at all. Not the
                   gateway: kept for transparency ("vs bare") and as the client comparison's
                   partner.
    forward-httpx  the same bare forwarder with the httpx client (the client choice of #3)
    forward-only   wrk -> uvicorn -> the real gateway without authentication, authorization
                   and audit: issue #3's baseline ("the gateway forwarding only (no auth, no
                   audit)"). Built by ``create_app`` from the full pipeline's settings
                   (``full_settings()``), so every other stage is the production one with the
                   production options: metrics, errors, https (HSTS, forwarded-header trust),
                   host allow-list, path canonicalisation, dispatch (own endpoints), the mutate
                   stage's header hygiene (hop-by-hop, client identity headers, the session
                   cookie, X-Forwarded-*, X-Request-ID) and the forwarder with the real client
                   and pool; the heap is frozen at start-up as the gateway does. Left out: the
                   OIDC stages (session cookie writer, bearer throttle), authenticate and
                   authorize (with the policy and its audit events), the identity headers and
                   the signed assertion, and the audit worker (an error's audit event goes to
                   a MemorySink). Same request as the full pipeline (path and cookie).
    full-pipeline  wrk -> uvicorn -> the real gateway (gateway._wiring.build): host, path,
                   session cookie (a teacher), Casbin decision with the shipped policy, a
                   personal-data audit event per request (enqueued; the audit worker
                   process spools it and ships it to SQLite, or OpenSearch with
                   --opensearch URL), mutate + identity headers + signed assertion, forward;
                   GET /api/schools/school-a/students
    NAME           wrk -> uvicorn -> your app factory (``--app``)

Until 2026-11-28 the goal was judged against the bare forwarder (then named
``forward-aiohttp``), which has none of the gateway's stages: full/bare was 0.67-0.69 on a
quiet machine, while the issue defines the baseline as the gateway forwarding only. The goal
is now judged against ``forward-only``; full/bare is still printed ("vs bare"). The former
``forward+mutate`` contender (the bare forwarder plus the mutate stage with a stand-in
identity) is gone: ``forward-only`` holds the mutate stage's hygiene, and the in-process stage
cost below separates what authentication, authorization, audit and identity headers add.

Each gateway runs as uvicorn with 1 worker, uvloop and httptools, no access log and no
uvicorn proxy-headers handling (the gateway decides trust itself). An ``--app`` factory takes
no arguments and returns an ASGI app; it reads the upstream's URL from the environment
variable ``GATEWAY_BENCH_UPSTREAM``.

Runs alternate between contenders in rounds (rotating the order each round); the table shows
medians over rounds, and ratios to the direct upstream, to forward-only ("vs fwd") and to the
bare forwarder ("vs bare"), measured in the same run. Non-2xx answers and socket errors are
counted: a contender that answers 502 quickly is not fast. ``cpu us/req`` is the gateway
process's CPU time per request (from /proc), which other work on a shared machine disturbs far
less than requests/s; ``+worker`` is what its child processes (the audit worker,
``audit/_worker.py``) spent per request on top, on the other core. Then the goal of issue #3
is checked per load. Last (unless ``--no-stages``), the stages' own cost is measured in this
process: the full pipeline and the forward-only gateway, each with its forwarder replaced by
the same stub upstream (no network, no HTTP server), in alternating rounds; CPU per request as
the minimum over rounds, which other work on the machine disturbs least, and the difference:
what authentication, authorization, audit and the identity headers cost per request
(``--stages-only`` runs just that, in about 15 s, without wrk or nginx: compare code versions
with it). Every run is bounded (``--duration`` seconds). This machine has 2 cores shared by
wrk, nginx, the gateway and other work, so absolute numbers are noisy; the ratios and CPU per
request are the result.

Needs wrk and nginx from Debian: ``apt-get update && apt-get install -y wrk nginx-light``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from audit import MemorySink
from bench._peers_lib import nginx_config
from gateway._heap import HeapRefreezer
from gateway._upstream import ClientKind, create_upstream
from gateway._wiring import _demo_assertion_key, assertion_signer, build, upstream_probe
from gateway.app import Dispatch, GatewayApp, Lifecycle, create_app
from gateway.authn import AuthenticateStage
from gateway.authz import AuthorizeStage
from gateway.headers import DEFAULT_SESSION_COOKIE, MutateHeaders
from gateway.oidc import (
    BearerThrottleStage,
    Sealer,
    SessionCodec,
    SessionCookieStage,
    decode_key,
    new_key,
)
from gateway.proxy import Forward
from gateway.settings import Settings, load_settings
from gateway.types import (
    ANONYMOUS,
    SCOPE_KEY,
    ASGIApp,
    Decision,
    GatewayState,
    Identity,
    Message,
    Receive,
    Scope,
    Send,
    state,
)

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_ENV = "GATEWAY_BENCH_UPSTREAM"
CLIENT_ENV = "GATEWAY_BENCH_CLIENT"
PATH = "/activities"
JSON_BODY = (
    '{"data":[{"id":"act-1","provider":"org-techniek","title":"Bedrijfsbezoek: robots in de '
    'fabriek","kind":"company_visit","date":"2027-02-11","places":24},{"id":"act-3","provider"'
    ':"org-zorg","title":"Gastles: werken in de zorg","kind":"guest_lesson","date":"2027-02-20"'
    ',"places":30}]}'
)
#: Seconds a gateway may take to start: the full one builds its policy, starts its audit worker
#: process and freezes its heap, which took over 20 s on the shared machine at load 20.
START_TIMEOUT = 60.0
INSTALL_HINT = "apt-get update && apt-get install -y wrk nginx-light"
BENCH_IDENTITY = Identity(
    issuer="https://idp.example",
    subject="bench-teacher",
    roles=frozenset({"teacher"}),
    tenant="school-a",
    method="session",
)


# --- the apps uvicorn serves (factories, imported by import string) ------------------------

#: The full pipeline's request: a teacher reading their own school's pupils, which the real
#: policy allows and which is a personal-data access (one audit event per request).
FULL_PATH = "/api/schools/school-a/students"
SESSION_KEY_ENV = "GATEWAY_BENCH_SESSION_KEY"
STATE_ENV = "GATEWAY_BENCH_STATE"
PORT_ENV = "GATEWAY_BENCH_PORT"
OPENSEARCH_ENV = "GATEWAY_BENCH_OPENSEARCH"
BENCH_IDP = "http://127.0.0.1:9"  # never contacted: sessions need no identity provider


class _StandInState:
    """Writes the GatewayState that the https, path and authenticate stages would write."""

    name = "bench_state"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope[SCOPE_KEY] = GatewayState(
                request_id=uuid.uuid4().hex,
                client_ip=client[0] if client else None,
                scheme="https",
                host="gateway.localhost",
                path=scope["path"],
                identity=BENCH_IDENTITY,
            )
        await self.app(scope, receive, send)


def _forward() -> Forward:
    kind: ClientKind = "httpx" if os.environ.get(CLIENT_ENV) == "httpx" else "aiohttp"
    client = create_upstream(kind, base_url=os.environ[UPSTREAM_ENV], pool_size=256)
    return Forward(client=client, audit=MemorySink())


def forward_app() -> ASGIApp:
    """The bare forwarder (``forward-bare``): stand-in state, then the forwarder."""
    return _StandInState(_forward())


# --- the forward-only gateway: the real one without authentication, authorization, audit ---

#: The stages of the full gateway that the forward-only gateway leaves out: OIDC's stages
#: before authenticate (session cookie writer, bearer throttle), authenticate and authorize.
#: The OIDC ones are simply not passed to ``create_app``; the other two are taken out of the
#: chain ``create_app`` builds (:func:`without_stages`).
LEFT_OUT: tuple[type, ...] = (
    SessionCookieStage,
    BearerThrottleStage,
    AuthenticateStage,
    AuthorizeStage,
)


class _NeverAsked:
    """The authorizer ``create_app`` requires; its stage is taken out, so nothing asks it.
    Were the stage left in by mistake, it would deny everything (and the bench would show
    401s, not a fast forward-only gateway)."""

    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        return Decision(allowed=False, reason="bench_forward_only_never_asks")


class ForwardOnlyMutate(MutateHeaders):
    """The mutate stage's header hygiene without identity headers and assertion.

    Everything the client must not decide is removed as in the gateway (hop-by-hop headers,
    identity and forwarding headers in any spelling, the gateway's cookies) and X-Forwarded-*
    and X-Request-ID are added; nothing says who the caller is, because nobody authenticated
    them. ``MutateHeaders.rewrite`` reads the identity (the authenticate stage's result, a
    :class:`~gateway.types.StageMissing` without it): here it reads the anonymous one, and
    the identity headers it would add for it are not added.
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        if not callable(getattr(MutateHeaders, "_identity_headers", None)):
            # The override below is what keeps identity headers out: fail loudly, not silently.
            raise RuntimeError("MutateHeaders._identity_headers is gone: update bench/gateway.py")
        super().__init__(app, **options)

    def rewrite(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        gateway = state(scope)
        if gateway.identity is None:
            gateway.identity = ANONYMOUS
        return super().rewrite(scope)

    def _identity_headers(self, who: Identity) -> list[tuple[bytes, bytes]]:
        return []


def stage_chain(app: GatewayApp) -> list[ASGIApp]:
    """The stages of ``app`` from the outermost one to the forwarder: each stage up to
    Dispatch (followed by ``.app``), then what Dispatch forwards to, down the same way."""
    chain: list[ASGIApp] = []
    node: Any = app.pipeline
    while node is not None:
        chain.append(node)
        node = node.forward if isinstance(node, Dispatch) else getattr(node, "app", None)
    return chain


def _inner(stage: Any) -> Any:
    """The app a stage passes requests to."""
    return stage.app


def without_stages(app: GatewayApp, left_out: tuple[type, ...]) -> GatewayApp:
    """``app`` with every stage of a ``left_out`` class taken out of its chain (relinked:
    the stage before one points to the one after it); raises when none was found."""
    removed = 0
    outer: Any = app.pipeline
    while isinstance(outer, left_out):
        outer = _inner(outer)
        removed += 1
    app.pipeline = outer
    node: Any = outer
    while not isinstance(node, Dispatch):
        inner: Any = node.app
        while isinstance(inner, left_out):
            inner = _inner(inner)
            removed += 1
        node.app = inner
        node = inner
    if removed == 0:
        raise ValueError(f"none of {[cls.__name__ for cls in left_out]} in the pipeline")
    return app


def forward_only_gateway(settings: Settings) -> tuple[GatewayApp, ForwardOnlyMutate]:
    """The forward-only gateway from ``settings`` (see the module docstring) and its mutate
    stage (whose ``app`` is the forwarder; the in-process measurement replaces it).

    Assembled as ``gateway._wiring.build`` assembles the gateway, minus :data:`LEFT_OUT`, the
    identity headers and the audit worker: the forwarder and its client from the same
    settings, ``create_app`` with the same settings, the heap frozen at start-up.
    """
    errors_only = MemorySink()  # errors (502/504/500) only: the allowed path emits nothing
    client = create_upstream(
        settings.upstream.client,
        base_url=settings.upstream.url,
        connect_timeout=float(settings.upstream.connect_timeout),
        read_timeout=float(settings.upstream.read_timeout),
        pool_size=settings.upstream.pool_size,
    )
    forward = Forward(client=client, audit=errors_only, methods=settings.upstream.methods)
    mutate = ForwardOnlyMutate(
        forward, signer=assertion_signer(settings), session_cookie=settings.session.cookie_name
    )
    lifecycle = Lifecycle()
    heap = HeapRefreezer()
    lifecycle.shutdown.append(forward.aclose)
    lifecycle.shutdown.append(heap.stop)
    lifecycle.startup.append(heap.start)  # last: everything built at start-up is frozen
    app = create_app(
        settings,
        authorizer=_NeverAsked(),
        sink=errors_only,
        forward=mutate,
        readiness={"upstream": upstream_probe(settings.upstream.url)},
        lifecycle=lifecycle,
    )
    return without_stages(app, LEFT_OUT), mutate


def forward_only_app() -> ASGIApp:
    """``forward-only``: the real gateway without authentication, authorization and audit."""
    return forward_only_gateway(full_settings())[0]


# --- the stages' own cost, in this process ----------------------------------------------------

#: What the stub upstream answers (nginx's headers for the small JSON body).
_STUB_HEADERS = (
    (b"server", b"nginx/1.22.1"),
    (b"date", b"Sat, 28 Nov 2026 18:00:00 GMT"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(JSON_BODY)).encode()),
    (b"connection", b"keep-alive"),
)
STAGE_REQUESTS = 2000
STAGE_ROUNDS = 11
#: Seconds allowed for the audit worker to store a round's events before the next round.
STAGE_DRAIN_TIMEOUT = 30.0


async def _stub_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": list(_STUB_HEADERS)})
    await send({"type": "http.response.body", "body": JSON_BODY.encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@contextlib.asynccontextmanager
async def _serving(app: GatewayApp) -> AsyncIterator[None]:
    """``app``'s lifespan: started on entry (or SystemExit), shut down on exit."""
    lifespan: asyncio.Queue[Message] = asyncio.Queue()
    answers: asyncio.Queue[Message] = asyncio.Queue()
    running = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan.get, answers.put)
    )
    await lifespan.put({"type": "lifespan.startup"})
    answer = await answers.get()
    if answer["type"] != "lifespan.startup.complete":
        await running
        raise SystemExit(f"the gateway did not start: {answer}")
    try:
        yield
    finally:
        await lifespan.put({"type": "lifespan.shutdown"})
        await running


@dataclass
class StageCost:
    """CPU µs per request of every round, per gateway, and how many answers were not 200."""

    full: list[float] = field(default_factory=list)
    forward_only: list[float] = field(default_factory=list)
    failed: int = 0


def _stubbed_full(settings: Settings) -> tuple[GatewayApp, Any]:
    """The full gateway with its forwarder replaced by the stub upstream, and its audit worker."""
    gateway = build(settings)
    mutate = stage_chain(gateway.app)[-2]
    if not isinstance(mutate, MutateHeaders):
        raise SystemExit(f"unexpected pipeline: {type(mutate).__name__} before the forwarder")
    mutate.app = _stub_upstream  # the forwarder's place: everything before it runs as served
    return gateway.app, gateway.audit


async def _stage_cost(cookie: bytes, requests: int, rounds: int) -> StageCost:
    settings = full_settings()
    full, audit = _stubbed_full(settings)
    forward_only, mutate = forward_only_gateway(settings)
    mutate.app = _stub_upstream
    port = int(os.environ[PORT_ENV])
    # The same request to both: the forward-only gateway drops the cookie unread.
    headers = [(b"host", f"127.0.0.1:{port}".encode()), (b"cookie", cookie)]
    cost = StageCost()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            cost.failed += 1

    async def one(app: ASGIApp) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "server": ("127.0.0.1", port),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "GET",
            "root_path": "",
            "path": FULL_PATH,
            "raw_path": FULL_PATH.encode(),
            "query_string": b"",
            "headers": list(headers),
        }
        await app(scope, receive, send)

    async def measure(app: ASGIApp) -> float:
        started = time.process_time()
        for _ in range(requests):
            await one(app)
        return (time.process_time() - started) / requests * 1e6

    async with _serving(full), _serving(forward_only):
        for app in (full, forward_only):
            for _ in range(200):  # warm up every cache the way a client's first requests do
                await one(app)
        for round_no in range(rounds):
            # Let the audit worker store the last round first: a full queue would answer 503.
            await asyncio.to_thread(audit.wait_idle, STAGE_DRAIN_TIMEOUT)
            if round_no % 2 == 0:  # alternate which one goes first
                cost.full.append(await measure(full))
                cost.forward_only.append(await measure(forward_only))
            else:
                cost.forward_only.append(await measure(forward_only))
                cost.full.append(await measure(full))
    return cost


def stage_cost(session_key: str, requests: int = STAGE_REQUESTS, rounds: int = STAGE_ROUNDS) -> str:
    """The stages measured in this process: the gateway's CPU per request (this process's
    threads, so the audit enqueue and its flusher thread count) for the full pipeline and the
    forward-only gateway, each with its forwarder replaced by the same stub upstream (no
    network, no HTTP server), in alternating rounds. The minimum over rounds is what the code
    costs when nothing else disturbs it; the difference of the minimums is what
    authentication, authorization, audit and the identity headers add per request."""
    cost = uvloop.run(  # the loop the gateway is served on
        _stage_cost(session_cookie(session_key).encode(), requests, rounds)
    )
    full, fwd = min(cost.full), min(cost.forward_only)
    paired = statistics.median(a - b for a, b in zip(cost.full, cost.forward_only, strict=True))
    lines = [
        f"stage cost in-process (stub upstream, {rounds} alternating rounds x {requests} "
        "requests; us CPU per request, min / median over rounds):",
        f"  full pipeline  {full:6.1f} / {statistics.median(cost.full):6.1f}",
        f"  forward-only   {fwd:6.1f} / {statistics.median(cost.forward_only):6.1f}",
        f"  difference     {full - fwd:6.1f} (median of the rounds' differences {paired:.1f})",
        "    = authentication + authorization + audit + identity headers, us CPU per request",
    ]
    if cost.failed:
        lines.append(f"  {cost.failed} answers were not 200 (the figures do not count)")
    return "\n".join(lines)


# --- processes -----------------------------------------------------------------------------


def full_settings() -> Settings:
    """The real gateway's settings for the benchmark: plain HTTP on loopback (TLS is not what
    is measured), the shipped policy, the audit pipeline (SQLite, or OpenSearch when
    GATEWAY_BENCH_OPENSEARCH is set), the signed assertion and OIDC sessions."""
    state = Path(os.environ[STATE_ENV])
    environ = {
        "GATEWAY_SERVER__PUBLIC_HOSTS": "127.0.0.1",
        "GATEWAY_SERVER__ALLOW_PLAIN_HTTP": "true",
        "GATEWAY_SERVER__HTTP_PORT": os.environ[PORT_ENV],
        "GATEWAY_ASSERTION__KEY_FILES": str(_demo_assertion_key(state)),
        "GATEWAY_UPSTREAM__URL": os.environ[UPSTREAM_ENV],
        "GATEWAY_UPSTREAM__CLIENT": os.environ.get(CLIENT_ENV, "aiohttp"),
        "GATEWAY_AUDIT__SQLITE_PATH": str(state / "audit.db"),
        "GATEWAY_AUDIT__SPOOL_DIR": str(state / f"spool-{os.getpid()}"),
        "GATEWAY_POLICY__WATCH": "false",
        "GATEWAY_OIDC__ISSUERS__BENCH__DISCOVERY_URL": BENCH_IDP
        + "/.well-known/openid-configuration",
        "GATEWAY_OIDC__ISSUERS__BENCH__CLIENT_ID": "bench",
        "GATEWAY_OIDC__ISSUERS__BENCH__CLAIMS": "devidp",
        "GATEWAY_SESSION__KEYS": os.environ[SESSION_KEY_ENV],
        "GATEWAY_SESSION__REFRESH_INTERVAL": "12h",
        "GATEWAY_SESSION__IDLE_TIMEOUT": "12h",
    }
    if os.environ.get(OPENSEARCH_ENV):
        environ["GATEWAY_AUDIT__STORE"] = "opensearch"
        environ["GATEWAY_AUDIT__OPENSEARCH_URLS"] = os.environ[OPENSEARCH_ENV]
        environ["GATEWAY_AUDIT__INDEX_PREFIX"] = "bench-"
        environ["GATEWAY_AUDIT__REPLICAS"] = "0"
    return load_settings(environ=environ)


def full_app() -> ASGIApp:
    """Every stage: https, host, path, session authentication, the Casbin decision with a
    personal-data audit event, the mutate stage with a signed assertion, and the forwarder."""
    return build(full_settings()).app


def session_cookie(key: str) -> str:
    """A teacher's session cookie for school-a, sealed with ``key`` as a login would."""
    codec = SessionCodec(
        sealer=Sealer(keys=[decode_key(key)]),
        cookie_name=DEFAULT_SESSION_COOKIE,
        idle_timeout=12 * 3600,
        absolute_timeout=12 * 3600,
        refresh_interval=12 * 3600,
    )
    session = codec.new(
        idp="bench",
        issuer=BENCH_IDP,
        subject="bench-teacher",
        roles=frozenset({"teacher"}),
        tenant="school-a",
    )
    return f"{DEFAULT_SESSION_COOKIE}={codec.encode(session)}"


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not start within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def nginx(workdir: Path) -> Iterator[str]:
    """nginx answering every path with JSON_BODY; yields its base URL."""
    port = _free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir=workdir, port=port, body=JSON_BODY))
    process = subprocess.Popen(
        ["nginx", "-p", str(workdir), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, process, "nginx")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


@contextlib.contextmanager
def gateway(
    factory: str, upstream: str, client: ClientKind = "aiohttp", env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """uvicorn (1 worker, uvloop, httptools) serving ``factory``; yields its URL and pid."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--no-server-header",
            "--no-proxy-headers",  # the gateway decides whom to trust, not uvicorn
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env={
            **os.environ,
            **(env or {}),
            UPSTREAM_ENV: upstream,
            CLIENT_ENV: client,
            PORT_ENV: str(port),
            "PYTHONPATH": str(REPO),
        },
    )
    try:
        _wait_port(port, process, f"uvicorn {factory}")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        _stop(process)


# --- wrk -----------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float | None = None  # the gateway process's CPU time per request
    helper_cpu_us: float | None = None  # its child processes' (the audit worker's)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (from /proc; Linux only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (started by any of its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _children_cpu(pids: list[int]) -> float:
    total = 0.0
    for child in pids:
        with contextlib.suppress(OSError):
            total += _cpu_seconds(child)
    return total


@dataclass
class Contender:
    name: str
    factory: str | None  # None: the upstream itself
    client: ClientKind = "aiohttp"
    path: str = PATH
    headers: tuple[str, ...] = ()
    url: str = ""
    pid: int | None = None
    runs: dict[int, list[Run]] = field(default_factory=dict)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(output: str, percentile: str) -> float:
    found = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if found is None:
        raise ValueError(f"no {percentile}% latency in wrk output:\n{output}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def wrk(
    url: str,
    connections: int,
    duration: float,
    pid: int | None = None,
    *,
    path: str = PATH,
    headers: tuple[str, ...] = (),
) -> Run:
    """One bounded wrk run; latency from wrk's --latency distribution.

    With ``pid``, also the CPU time that process spent per request: the figure that the
    other work on a shared machine disturbs least.
    """
    cpu_before = _cpu_seconds(pid) if pid is not None else 0.0
    helpers = _children(pid) if pid is not None else []
    helpers_before = _children_cpu(helpers)
    threads = 1 if connections < 2 else 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        *(arg for header in headers for arg in ("-H", header)),
        url + path,
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    run = Run(float(rps.group(1)), _latency(output, "50"), _latency(output, "99"), errors)
    done = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    if pid is not None and done is not None and int(done.group(1)) > 0:
        run.cpu_us = (_cpu_seconds(pid) - cpu_before) / int(done.group(1)) * 1e6
        if helpers:
            spent = _children_cpu(helpers) - helpers_before
            run.helper_cpu_us = spent / int(done.group(1)) * 1e6
    return run


# --- the run -------------------------------------------------------------------------------


#: The contender the goal is judged against (issue #3's "gateway forwarding only")...
FORWARD_ONLY = "forward-only"
#: ...and the bare forwarder, shown beside it for transparency.
FORWARD_BARE = "forward-bare"
FULL = "full-pipeline"


def _contenders(args: argparse.Namespace) -> list[Contender]:
    # forward-only and the full pipeline get the same request: path and session cookie.
    cookie = (f"Cookie: {session_cookie(args.session_key)}",)
    found = [
        Contender("direct", None),
        Contender(FORWARD_BARE, "bench.gateway:forward_app", "aiohttp"),
        Contender("forward-httpx", "bench.gateway:forward_app", "httpx"),
        Contender(FORWARD_ONLY, "bench.gateway:forward_only_app", path=FULL_PATH, headers=cookie),
        Contender(FULL, "bench.gateway:full_app", path=FULL_PATH, headers=cookie),
    ]
    for spec in args.app:
        name, sep, factory = spec.partition("=")
        if not sep or not name or ":" not in factory:
            raise SystemExit(f"--app wants NAME=module:factory, got {spec!r}")
        found.append(Contender(name, factory, "aiohttp"))
    if args.only:
        keep = {"direct", *args.only}
        found = [c for c in found if c.name in keep]
    return found


def _median(runs: list[Run], attr: str) -> float:
    return float(statistics.median(float(getattr(run, attr)) for run in runs))


def _named(contenders: list[Contender], name: str) -> Contender | None:
    return next((c for c in contenders if c.name == name), None)


def _ratio_text(rps: float, base: Contender | None, c: Contender, conns: int, width: int) -> str:
    if base is None or c.factory is None:
        return f"{'':>{width}}"
    return f"{rps / _median(base.runs[conns], 'rps'):{width}.2f}"


def _table(contenders: list[Contender], connections: list[int]) -> str:
    """One line per contender and load; "vs fwd" is against forward-only (the goal's
    baseline), "vs bare" against the bare forwarder."""
    direct = contenders[0]
    forward = _named(contenders, FORWARD_ONLY)
    bare = _named(contenders, FORWARD_BARE)
    lines = [
        f"{'contender':<14} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'vs direct':>9} {'vs fwd':>7} {'vs bare':>7} {'cpu us/req':>10} "
        f"{'+worker':>7}"
    ]
    for conns in connections:
        base = _median(direct.runs[conns], "rps")
        for c in contenders:
            rps = _median(c.runs[conns], "rps")
            errors = sum(run.errors for run in c.runs[conns])
            vs_fwd = _ratio_text(rps, forward, c, conns, 7)
            vs_bare = _ratio_text(rps, bare, c, conns, 7)
            cpu = [run.cpu_us for run in c.runs[conns] if run.cpu_us is not None]
            cpu_text = f"{statistics.median(cpu):10.0f}" if cpu else f"{'-':>10}"
            helper = [run.helper_cpu_us for run in c.runs[conns] if run.helper_cpu_us is not None]
            cpu_text += f" {statistics.median(helper):7.0f}" if helper else f" {'-':>7}"
            p50, p99 = _median(c.runs[conns], "p50_ms"), _median(c.runs[conns], "p99_ms")
            lines.append(
                f"{c.name:<14} {conns:>5} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f} {errors:>6} "
                f"{rps / base:>9.3f} {vs_fwd} {vs_bare} {cpu_text}"
            )
        lines.append("")
    return "\n".join(lines)


#: The goal of issue #3: the full pipeline keeps this share of forward-only throughput...
GOAL_RATIO = 0.80
#: ...and one worker serves this many small GETs per second with the full pipeline.
GOAL_RPS = 2000.0


def goal_check(contenders: list[Contender], connections: list[int]) -> str:
    """The issue's goal, per load: full/forward-only ratio and full-pipeline req/s (1 worker);
    full/bare beside it when the bare forwarder ran."""
    full = _named(contenders, FULL)
    forward = _named(contenders, FORWARD_ONLY)
    bare = _named(contenders, FORWARD_BARE)
    if full is None or forward is None:
        return f"goal check: needs the {FORWARD_ONLY} and {FULL} contenders"
    lines = [
        f"goal: full pipeline >= {GOAL_RATIO:.0%} of forward-only req/s, and "
        f">= {GOAL_RPS:,.0f} req/s with 1 worker"
    ]
    ratio_met = rps_met = 0
    for conns in connections:
        rps = _median(full.runs[conns], "rps")
        ratio = rps / _median(forward.runs[conns], "rps")
        ratio_met += ratio >= GOAL_RATIO
        rps_met += rps >= GOAL_RPS
        vs_bare = f", full/bare {rps / _median(bare.runs[conns], 'rps'):4.2f}" if bare else ""
        lines.append(
            f"  {conns:>4} conns: full/forward-only {ratio:5.2f} "
            f"({'met' if ratio >= GOAL_RATIO else 'missed'}), full {rps:7.0f} req/s "
            f"({'met' if rps >= GOAL_RPS else 'missed'}){_cpu_ratio(forward, full, conns)}"
            f"{vs_bare}"
        )
    lines.append(
        f"  ratio goal met at {ratio_met}/{len(connections)} loads; "
        f"req/s goal met at {rps_met}/{len(connections)} loads"
    )
    lines.append(
        "  (cpu: forward-only/full CPU per request of the gateway process, the ratio a saturated "
        "core would give;\n   on a busy machine req/s favours the full pipeline, whose audit "
        "worker is a second process;\n   full/bare: against the bare forwarder, the baseline "
        "before 2026-11-28, for comparison)"
    )
    return "\n".join(lines)


def _cpu_ratio(forward: Contender, full: Contender, conns: int) -> str:
    fwd = [run.cpu_us for run in forward.runs[conns] if run.cpu_us]
    own = [run.cpu_us for run in full.runs[conns] if run.cpu_us]
    if not fwd or not own:
        return ""
    return f", cpu {statistics.median(fwd) / statistics.median(own):4.2f}"


def _stages_only() -> int:
    """The stages' cost alone: the stub upstream answers, so nothing is started or contacted."""
    session_key = new_key()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        os.environ.update(
            {
                SESSION_KEY_ENV: session_key,
                STATE_ENV: str(Path(tmp) / "state-stages"),
                UPSTREAM_ENV: BENCH_IDP,  # never contacted: the stub answers in its place
                PORT_ENV: str(_free_port()),
            }
        )
        print(stage_cost(session_key))
    return 0


def _usable(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Exits on bad arguments; False (and says what to install) when wrk or nginx is missing."""
    if not 0 < args.duration <= 60 or not 1 <= args.rounds <= 20:
        parser.error("--duration must be in (0, 60] and --rounds in [1, 20]")
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        print(f"missing: {', '.join(missing)}. Install them with:\n    {INSTALL_HINT}")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender and load")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument(
        "--app", action="append", default=[], metavar="NAME=module:factory", help="add a contender"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (and direct)")
    parser.add_argument(
        "--opensearch", metavar="URL", help="the full pipeline's audit store (default: SQLite)"
    )
    parser.add_argument(
        "--no-stages",
        dest="stages",
        action="store_false",
        help="skip the in-process measurement of the stages' cost (stub upstream)",
    )
    parser.add_argument(
        "--stages-only",
        action="store_true",
        help="only the in-process measurement of the stages' cost (no wrk, no nginx; seconds)",
    )
    args = parser.parse_args(argv)
    if args.stages_only:
        return _stages_only()
    if not _usable(parser, args):
        return 2

    args.session_key = new_key()
    contenders = _contenders(args)
    with (
        tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        bench_env = {SESSION_KEY_ENV: args.session_key, STATE_ENV: str(Path(tmp) / "state")}
        if args.opensearch:
            bench_env[OPENSEARCH_ENV] = args.opensearch
        upstream = upstream_url = stack.enter_context(nginx(Path(tmp)))
        for c in contenders:
            if c.factory is None:
                c.url = upstream
            else:
                c.url, c.pid = stack.enter_context(
                    gateway(c.factory, upstream, c.client, bench_env)
                )
            warm = wrk(c.url, 8, 1, path=c.path, headers=c.headers)
            if warm.errors:
                print(f"warning: {c.name} answered {warm.errors} errors while warming up")
        total = len(contenders) * len(args.connections) * args.rounds * args.duration
        print(
            f"{len(contenders)} contenders x {len(args.connections)} loads x {args.rounds} rounds"
            f" x {args.duration:g} s = about {total / 60:.1f} min; GET {PATH} (bare, httpx) or "
            f"{FULL_PATH} with a session cookie (forward-only, full); {len(JSON_BODY)} byte "
            "JSON from nginx",
            flush=True,
        )
        for round_no in range(args.rounds):
            order = (
                contenders[round_no % len(contenders) :] + contenders[: round_no % len(contenders)]
            )
            for conns in args.connections:
                for c in order:
                    run = wrk(c.url, conns, args.duration, c.pid, path=c.path, headers=c.headers)
                    c.runs.setdefault(conns, []).append(run)
            print(f"round {round_no + 1}/{args.rounds} done", flush=True)
        if args.stages:
            os.environ.update(
                {
                    **bench_env,
                    STATE_ENV: str(Path(tmp) / "state-stages"),
                    UPSTREAM_ENV: upstream_url,
                    PORT_ENV: str(_free_port()),
                }
            )
            stages = stage_cost(args.session_key)
    print()
    print(_table(contenders, args.connections))
    print(goal_check(contenders, args.connections))
    if args.stages:
        print()
        print(stages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
