"""Real servers for forwarding tests: uvicorn in a thread, or in a subprocess of its own."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import uvicorn

from gateway.types import ASGIApp

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A port free right now, for a server started next (it may be taken again later)."""
    with contextlib.closing(_socket()) as sock:
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """A URL where connections are refused: its port stays bound (not listening) meanwhile,
    so no server started in the test, the gateway under test included, can get it (no
    SO_REUSEADDR here: nobody can share the port)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def serve_thread(
    app: ASGIApp, *, lifespan: Literal["auto", "on", "off"] = "off", server_header: bool = True
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields its base URL.

    ``server_header=False`` serves as ``gateway.server`` does: without uvicorn's own
    ``Server`` header, so a test sees only what the app sends. uvicorn's forwarded-header
    handling is off, as in ``gateway.server``: with it on, uvicorn trusts 127.0.0.1 and a test
    client's ``X-Forwarded-For`` would rewrite ``scope["client"]`` before the app sees it.
    """
    sock = _socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan=lifespan,
        log_level="warning",
        ws="websockets-sansio",
        loop="asyncio",
        server_header=server_header,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start in a thread")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def serve_process(
    factory: str, *, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve the app factory ``module:function`` with uvicorn in a subprocess."""
    sock = _socket()
    port = sock.getsockname()[1]
    sock.listen(128)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--fd",
            str(sock.fileno()),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        pass_fds=[sock.fileno()],
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    sock.close()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, process)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    host, port = url.removeprefix("http://").split(":")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def rss_kib(pid: int) -> tuple[int, int]:
    """(current resident set, peak resident set) of ``pid`` in KiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
