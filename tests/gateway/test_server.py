"""gateway/server.py and gateway/tls.py: real listeners, TLS 1.2+, redirect, graceful stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.server import bind_reuseport
from gateway.tls import TLS12_CIPHERS, build_ssl_context, ensure_self_signed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[str]
    cert: Path
    https: int
    http: int
    metrics: int
    lines: list[str]

    def client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(verify=context, timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    cert, key = ensure_self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"])
    ports = [free_port() for _ in range(3)]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway._served_app", str(cert), str(key), *map(str, ports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 30
    while "READY" not in lines:
        assert process.poll() is None, "\n".join(lines)
        assert time.monotonic() < deadline, "\n".join(lines)
        time.sleep(0.05)
    yield Served(process, cert, ports[0], ports[1], ports[2], lines)
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


class TestTLS:
    def test_context_is_tls12_minimum(self, tmp_path: Path) -> None:
        """The server context refuses anything older than TLS 1.2."""
        cert, key = ensure_self_signed(tmp_path, ["localhost"])
        context = build_ssl_context(cert, key)
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.maximum_version == ssl.TLSVersion.TLSv1_3
        tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert tls12 <= set(TLS12_CIPHERS.split(":"))

    def test_bad_key_names_the_file(self, tmp_path: Path) -> None:
        """A certificate that does not match its key is a clear start-up error."""
        cert, _ = ensure_self_signed(tmp_path / "a", ["localhost"])
        _, other_key = ensure_self_signed(tmp_path / "b", ["localhost"])
        with pytest.raises(ValueError, match="cannot load the TLS certificate"):
            build_ssl_context(cert, other_key)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing certificate file is named."""
        with pytest.raises(ValueError, match="not found"):
            build_ssl_context(tmp_path / "nope.pem", tmp_path / "nokey.pem")

    def test_self_signed_is_reused(self, tmp_path: Path) -> None:
        """The demo certificate is made once and reused while valid for the same hosts."""
        first = ensure_self_signed(tmp_path, ["localhost"])
        content = first[0].read_bytes()
        assert ensure_self_signed(tmp_path, ["localhost"])[0].read_bytes() == content
        assert ensure_self_signed(tmp_path, ["localhost", "other"])[0].read_bytes() != content
        assert first[1].stat().st_mode & 0o077 == 0

    @pytest.mark.parametrize(
        ("maximum", "expected"),
        [(ssl.TLSVersion.TLSv1_3, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")],
    )
    def test_handshake_versions(
        self, served: Served, maximum: ssl.TLSVersion, expected: str
    ) -> None:
        """Clients speaking TLS 1.3 or 1.2 connect, with an allowed cipher."""
        context = ssl.create_default_context(cafile=str(served.cert))
        context.maximum_version = maximum
        with (
            socket.create_connection(("127.0.0.1", served.https)) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() == expected
            cipher = tls.cipher()
            assert cipher is not None
            if expected == "TLSv1.2":
                assert cipher[0] in TLS12_CIPHERS.split(":")

    def test_tls11_refused(self, served: Served) -> None:
        """A client that offers at most TLS 1.1 cannot connect."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with warnings.catch_warnings():  # we are deliberately building an outdated client
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
        with (
            socket.create_connection(("127.0.0.1", served.https)) as raw,
            pytest.raises(ssl.SSLError),
        ):
            context.wrap_socket(raw, server_hostname="localhost")


class TestListeners:
    def test_https_response_has_hsts(self, served: Served) -> None:
        """Through the real listener the request is forwarded, with HSTS and a request id."""
        with served.client() as client:
            response = client.get(f"https://localhost:{served.https}/x")
        assert response.status_code == 200
        assert response.text == "upstream says hi"
        assert "max-age=31536000" in response.headers["strict-transport-security"]
        assert len(response.headers["x-request-id"]) == 32
        assert "server" not in response.headers

    def test_http_listener_only_redirects(self, served: Served) -> None:
        """The plain-HTTP port answers every request with 308 to HTTPS."""
        response = httpx.post(
            f"http://127.0.0.1:{served.http}/api/me?x=1", headers={"host": "evil.example"}
        )
        assert response.status_code == 308
        assert response.headers["location"] == f"https://localhost:{served.https}/api/me?x=1"

    def test_metrics_listener(self, served: Served) -> None:
        """The metrics listener serves Prometheus text with the request counter."""
        with served.client() as client:
            client.get(f"https://localhost:{served.https}/activities")
        text = httpx.get(f"http://127.0.0.1:{served.metrics}/metrics").text
        assert 'gateway_requests_total{decision="allowed",family="catalogue",status="200"}' in text
        assert httpx.get(f"http://127.0.0.1:{served.metrics}/other").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{served.metrics}/health").json() == {"status": "ok"}

    def test_graceful_shutdown_drains_in_flight_requests(self, served: Served) -> None:
        """SIGTERM lets a running request finish, then runs the shutdown hooks and exits 0."""
        result: dict[str, object] = {}

        def slow_request() -> None:
            with served.client() as client:
                result["response"] = client.get(f"https://localhost:{served.https}/x?sleep=1.5")

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.5)
        served.process.send_signal(signal.SIGTERM)
        worker.join(timeout=20)
        assert served.process.wait(timeout=20) == 0
        response = result["response"]
        assert isinstance(response, httpx.Response)
        assert response.status_code == 200
        assert "LIFESPAN STOPPED" in served.lines
        assert served.lines.index("LIFESPAN STOPPED") < served.lines.index("EXITED CLEANLY")

    def test_new_connections_refused_after_stop(self, served: Served) -> None:
        """After SIGTERM the process ends and its ports close."""
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=20) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{served.http}/")


def _raw_tls(served: Served, request: bytes) -> bytes:
    context = ssl.create_default_context(cafile=str(served.cert))
    with (
        socket.create_connection(("127.0.0.1", served.https), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        return tls.recv(65536)


class TestRequestLine:
    def test_absolute_form_naming_another_host_is_refused(self, served: Served) -> None:
        """The listener keeps the request target: an absolute-form target for another host
        is a 400 (uvicorn's httptools alone would reduce it to its path)."""
        port = served.https
        evil = f"GET https://evil.example/x HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
        ours = f"GET https://localhost:{port}/x HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
        assert _raw_tls(served, evil.encode()).startswith(b"HTTP/1.1 400")
        assert _raw_tls(served, ours.encode()).startswith(b"HTTP/1.1 200")

    def test_two_host_lines_are_refused(self, served: Served) -> None:
        """RFC 9112 §3.2: a request with two Host lines is a 400."""
        port = served.https
        request = f"GET /x HTTP/1.1\r\nHost: localhost:{port}\r\nHost: evil.example\r\n\r\n"
        assert _raw_tls(served, request.encode()).startswith(b"HTTP/1.1 400")


class TestBindReusePort:
    def test_two_sockets_share_a_port(self) -> None:
        """Two SO_REUSEPORT sockets listen on the same port (one per worker)."""
        first = bind_reuseport("127.0.0.1", 0)
        port = first.getsockname()[1]
        second = bind_reuseport("127.0.0.1", port)
        try:
            assert second.getsockname()[1] == port
        finally:
            first.close()
            second.close()

    def test_port_held_by_another_program(self) -> None:
        """A port bound without SO_REUSEPORT (another program) cannot be shared."""
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            with pytest.raises(OSError):
                bind_reuseport("127.0.0.1", other.getsockname()[1])


SUPERVISED = """
import os, signal, sys, time
from pathlib import Path
from gateway.server import supervise

out = Path(sys.argv[1])

def worker(index: int) -> int:
    (out / f"worker-{index}").write_text(str(os.getpid()))
    if sys.argv[2] == "fail" and index == 1:
        first = out / "worker-0"
        while not (first.exists() and first.read_text()):  # fail once worker 0 is up
            time.sleep(0.01)
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(0.05)

sys.exit(supervise(2, worker))
"""


def _supervisor(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SUPERVISED, str(tmp_path), mode])


def _worker_pids(tmp_path: Path) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        files = [tmp_path / "worker-0", tmp_path / "worker-1"]
        if all(path.exists() and path.read_text() for path in files):
            return [int(path.read_text()) for path in files]
        time.sleep(0.05)
    raise AssertionError("the workers did not start")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class TestSupervise:
    def test_sigterm_reaches_every_worker(self, tmp_path: Path) -> None:
        """SIGTERM to the supervisor stops both workers; it exits 0 when they did."""
        process = _supervisor(tmp_path, "serve")
        try:
            pids = _worker_pids(tmp_path)
            assert len(set(pids)) == 2
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
            assert all(_gone(pid) for pid in pids)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    def test_a_failing_worker_stops_the_others(self, tmp_path: Path) -> None:
        """A worker exiting on its own stops the rest; its status is the supervisor's."""
        process = _supervisor(tmp_path, "fail")
        try:
            pids = _worker_pids(tmp_path)
            assert process.wait(timeout=20) == 3
            assert _gone(pids[0])
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    def test_workers_die_with_a_killed_supervisor(self, tmp_path: Path) -> None:
        """SIGKILL to the supervisor (which can pass nothing on) still stops every worker."""
        process = _supervisor(tmp_path, "serve")
        pids = _worker_pids(tmp_path)
        try:
            process.kill()
            process.wait()
            deadline = time.monotonic() + 20
            while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert all(_gone(pid) for pid in pids)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def test_a_killed_worker_stops_the_others(self, tmp_path: Path) -> None:
        """A worker killed by a signal stops the rest, and the exit status says so."""
        process = _supervisor(tmp_path, "serve")
        try:
            pids = _worker_pids(tmp_path)
            os.kill(pids[1], signal.SIGKILL)
            assert process.wait(timeout=20) == 128 + signal.SIGKILL
            assert _gone(pids[0])
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
