"""Run the gateway's listeners in one process: HTTPS, the plain-HTTP redirect, and metrics.

Each listener is a uvicorn server; they share one event loop and stop together. On SIGTERM or
SIGINT every listener stops accepting, in-flight requests are drained (up to
``server.graceful_timeout``), and then the gateway's lifespan shutdown runs (which flushes the
audit queue). A second SIGINT forces the exit.

uvicorn's own forwarded-header handling is off (``proxy_headers=False``): the https stage
decides whom to believe. The ``Server`` header is not sent.

Several workers (``server.workers``): :func:`bind_reuseport` binds one SO_REUSEPORT socket per
worker and listener in the starting process, so a port in use fails the start at once and no
worker can come up on a port another program holds; :func:`supervise` then forks the workers,
each building its own gateway and serving its own sockets (the kernel spreads connections over
them), passes SIGTERM, SIGINT and SIGHUP on to every worker, and when one worker exits on its
own it stops the others and exits with that worker's status (the service manager restarts).
Workers get SIGTERM when the supervisor dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``): no
orphan keeps serving the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.hosts import REQUEST_TARGET_KEY
from gateway.types import ASGIApp

logger = logging.getLogger("gateway")


@dataclass(frozen=True)
class Listener:
    """One socket the gateway serves: ``app`` on ``host:port``, with TLS when ``ssl`` is set."""

    name: str
    app: ASGIApp
    host: str
    port: int
    ssl: Callable[[], ssl.SSLContext] | None = None
    lifespan: bool = False

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


DEFAULT_HEAD_TIMEOUT = 10.0


class _GatewayProtocol(HttpToolsProtocol):
    """httptools, keeping the request target as sent, with a request-head timeout.

    uvicorn's httptools protocol reduces an absolute-form target (``GET https://host/p``) to
    its path before any stage runs; the host stage needs the authority to refuse a target that
    names another host than ``Host`` (RFC 9112 §3.2.2). And uvicorn has no timeout for reading
    a request head (its keep-alive timeout runs only between requests): a client that connects
    and trickles or never finishes its head is closed after ``head_timeout`` (slowloris,
    CWE-400; nginx's client_header_timeout, Go's ReadHeaderTimeout).
    """

    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self.scope[REQUEST_TARGET_KEY] = bytes(self.url)  # type: ignore[literal-required]
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(
    listener: Listener,
    graceful_timeout: float,
    log_level: str,
    *,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
) -> uvicorn.Config:
    factory = None
    if listener.ssl is not None:
        make_context = listener.ssl

        def factory(
            _config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]
        ) -> ssl.SSLContext:
            return make_context()

    return uvicorn.Config(
        listener.app,
        host=listener.host,
        port=listener.port,
        ssl_context_factory=factory,
        lifespan="on" if listener.lifespan else "off",
        proxy_headers=False,
        server_header=False,
        date_header=False,  # forwarded responses carry the upstream's Date; never two
        timeout_graceful_shutdown=int(graceful_timeout),
        log_level=log_level,
        access_log=False,
        http=type("GatewayProtocol", (_GatewayProtocol,), {"head_timeout": head_timeout}),
        loop="uvloop",
        ws="websockets-sansio",
    )


async def serve(
    listeners: Sequence[Listener],
    *,
    graceful_timeout: float = 30.0,
    log_level: str = "info",
    started: Callable[[], None] | None = None,
    on_hangup: Callable[[], None] | None = None,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    sockets: Mapping[str, socket.socket] | None = None,
) -> None:
    """Serve every listener until a signal (or one of them failing) stops them all.

    SIGHUP calls ``on_hangup`` (the gateway reloads its policy) when given. A listener whose
    name is in ``sockets`` serves that bound socket instead of binding its own.
    """
    sockets = sockets or {}
    servers = [
        _Server(_config(item, graceful_timeout, log_level, head_timeout=head_timeout))
        for item in listeners
    ]
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        for server in servers:
            if server.should_exit and signum == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    if on_hangup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    tasks = [
        asyncio.create_task(
            server.serve(sockets=[sockets[item.name]] if item.name in sockets else None),
            name=item.name,
        )
        for server, item in zip(servers, listeners, strict=True)
    ]
    try:
        if started is not None:
            while not all(server.started for server in servers):
                if any(task.done() for task in tasks):
                    break
                await asyncio.sleep(0.05)
            if all(server.started for server in servers):
                started()
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if not all(server.started for server in servers):
            raise RuntimeError("a listener failed to start (see the log above)")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def run(
    listeners: Sequence[Listener],
    *,
    graceful_timeout: float = 30.0,
    log_level: str = "info",
    started: Callable[[], None] | None = None,
    on_hangup: Callable[[], None] | None = None,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    sockets: Mapping[str, socket.socket] | None = None,
) -> None:
    """Serve on a uvloop event loop until stopped by a signal."""
    import uvloop  # noqa: PLC0415 - only the process that serves needs it

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            serve(
                listeners,
                graceful_timeout=graceful_timeout,
                log_level=log_level,
                started=started,
                on_hangup=on_hangup,
                head_timeout=head_timeout,
                sockets=sockets,
            )
        )


# --- several workers -------------------------------------------------------------------------

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
LISTEN_BACKLOG = 2048


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other SO_REUSEPORT sockets may share.

    Raises OSError when the port is held by a socket without SO_REUSEPORT (another program).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def supervise(workers: int, serve_worker: Callable[[int], int]) -> int:
    """Fork ``workers`` processes running ``serve_worker(index)``; wait for them all.

    Signals SIGTERM, SIGINT and SIGHUP are passed on to every worker. A worker that exits while
    no stop was asked for stops the others (SIGTERM); the status returned is the first
    non-zero one of a worker (a signal N counts as 128 + N), else 0.
    """
    children: dict[int, int] = {}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    supervisor = os.getpid()
    status = 0
    try:
        try:
            for index in range(workers):
                pid = os.fork()
                if pid == 0:  # the worker
                    _worker(index, serve_worker, supervisor)
                children[pid] = index
        except BaseException:  # a failed fork: stop the workers already running
            stopping = True
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            for pid in children:
                os.waitpid(pid, 0)
            raise
        while children:
            pid, wait_status = os.wait()
            index = children.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            code = 128 - code if code < 0 else code
            if code and not status:
                status = code
            if not stopping:
                logger.error("worker %d exited (status %d): stopping the others", index, code)
                stopping = True
                for other in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGTERM)
                status = status or 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the supervisor dies, even by SIGKILL (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _worker(index: int, serve_worker: Callable[[int], int], parent: int) -> None:
    """The forked worker: default signal handling, SIGTERM when the supervisor dies, serve,
    and leave without the parent's exit handlers."""
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    _die_with_parent(parent)
    code = 1
    try:
        code = serve_worker(index)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        logger.exception("worker %d failed", index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
