"""gateway/_wiring.py: the gateway built from settings, with the real policy, audit pipeline,
assertion and forwarder, in front of the demo upstream."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from audit import Scope, sqlite_store
from audit._spool import Spool
from demo_upstream import AssertionChecker
from demo_upstream import create_app as demo_app
from gateway._wiring import (
    Gateway,
    _demo_assertion_key,
    assertion_signer,
    build,
    demo_settings,
    listener_addresses,
    orphaned_spools,
    start_workers,
    worker_settings,
)
from gateway.settings import Settings, SettingsError, load_settings
from gateway.tls import ensure_self_signed
from tests.gateway._servers import free_port, serve_thread

HOST = "platform.example.nl"


def settings_for(tmp_path: Path, upstream_url: str, **extra: str) -> Settings:
    cert, key = ensure_self_signed(tmp_path / "tls", [HOST])
    environ = {
        "GATEWAY_SERVER__PUBLIC_HOSTS": HOST,
        "GATEWAY_SERVER__TLS_CERT_FILE": str(cert),
        "GATEWAY_SERVER__TLS_KEY_FILE": str(key),
        "GATEWAY_ASSERTION__KEY_FILES": str(_demo_assertion_key(tmp_path / "keys")),
        "GATEWAY_UPSTREAM__URL": upstream_url,
        "GATEWAY_AUDIT__SQLITE_PATH": str(tmp_path / "audit.db"),
        "GATEWAY_AUDIT__SPOOL_DIR": str(tmp_path / "spool"),
        "GATEWAY_POLICY__WATCH": "false",
        **extra,
    }
    return load_settings(environ=environ)


@pytest.fixture
def upstream_and_settings(tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    placeholder = settings_for(tmp_path, "http://127.0.0.1:9")
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(assertion_signer(placeholder).jwks_json())
    checker = AssertionChecker(
        issuer=f"https://{HOST}", audience="onderwijs-regio-platform", jwks_file=jwks
    )
    with serve_thread(demo_app(checker=checker)) as url:
        yield url, settings_for(tmp_path, url)


@pytest.fixture
def gateway(upstream_and_settings: tuple[str, Settings]) -> Gateway:
    return build(upstream_and_settings[1])


def client(gateway: Gateway) -> TestClient:
    return TestClient(gateway.app, base_url=f"https://{HOST}")


class TestBuiltGateway:
    def test_public_route_is_forwarded_with_a_verified_assertion(self, gateway: Gateway) -> None:
        """The catalogue is public: forwarded, and the upstream verifies our assertion."""
        with client(gateway) as http:
            response = http.get("/activities")
        assert response.status_code == 200
        body = response.json()
        assert body["data"]
        assert body["_gateway"]["assertion"]["present"] is True
        assert body["_gateway"]["assertion"]["valid"] is True

    def test_denial_is_recorded_in_the_audit_store(
        self, gateway: Gateway, upstream_and_settings: tuple[str, Settings]
    ) -> None:
        """An anonymous API call to a student's data is 401, and the denial reaches SQLite."""
        with client(gateway) as http:
            response = http.get("/api/me", headers={"accept": "application/json"})
            request_id = response.headers["x-request-id"]
        assert response.status_code == 401
        store = sqlite_store(path=upstream_and_settings[1].audit.sqlite_path)
        store.refresh()
        [event] = store.search(Scope(actions=["access_denied"]))
        assert event["trace.id"] == request_id
        assert event["url.path"] == "/api/me"
        assert event["http.response.status_code"] == 401

    def test_jwks_is_published(self, gateway: Gateway) -> None:
        """The assertion's public keys are at /_gateway/jwks.json, without private parts."""
        with client(gateway) as http:
            keys = http.get("/_gateway/jwks.json").json()["keys"]
        assert keys and all("d" not in key for key in keys)

    def test_ready_reports_upstream_and_audit(self, gateway: Gateway) -> None:
        """Readiness checks the real upstream and the audit store."""
        with client(gateway) as http:
            response = http.get("/_gateway/ready")
        assert response.json() == {"status": "ready", "checks": {"upstream": True, "audit": True}}

    def test_not_ready_without_upstream(self, tmp_path: Path) -> None:
        """With the upstream gone, ready is 503 while health stays 200."""
        gateway = build(settings_for(tmp_path, "http://127.0.0.1:9"))
        with client(gateway) as http:
            assert http.get("/_gateway/ready").status_code == 503
            assert http.get("/_gateway/health").status_code == 200

    def test_unreadable_assertion_key_is_a_clear_error(self, tmp_path: Path) -> None:
        """A missing signing key stops the build with the setting's name."""
        settings = settings_for(
            tmp_path, "http://127.0.0.1:9", GATEWAY_ASSERTION__KEY_FILES="/nonexistent.pem"
        )
        with pytest.raises(ValueError, match=r"assertion\.key_files: cannot read"):
            build(settings)

    def test_policy_reload_on_request(self, gateway: Gateway) -> None:
        """A reload of unchanged, valid files succeeds and is counted in the metrics."""
        assert gateway.policy.reload() is True
        text = gateway.app.metrics.render().decode()
        assert 'gateway_policy_reloads_total{outcome="success"} 1.0' in text


class TestDemoSettings:
    def test_demo_makes_its_own_certificate_and_key(self, tmp_path: Path) -> None:
        """Demo mode needs no configuration: certificate, key and stores under its state dir."""
        settings = demo_settings(None, environ={"GATEWAY_DEMO__STATE_DIR": str(tmp_path)})
        assert settings.server.public_hosts == ("localhost", "127.0.0.1")
        assert settings.server.tls_cert_file == tmp_path / "tls" / "cert.pem"
        assert settings.assertion.key_files == (tmp_path / "assertion-key.pem",)
        assert settings.audit.sqlite_path.is_relative_to(tmp_path)
        assert "demo.enabled" in "\n".join(settings.relaxations())

    def test_outside_demo_nothing_is_generated(self, tmp_path: Path) -> None:
        """Without demo mode, missing TLS files and keys are errors, not generated."""
        with pytest.raises(SettingsError):
            load_settings(environ={"GATEWAY_SERVER__PUBLIC_HOSTS": HOST})


class TestServeProcess:
    def test_sighup_reloads_the_policy_and_sigterm_stops(self, tmp_path: Path) -> None:
        """``python -m gateway serve``: SIGHUP reloads the policy (counted), SIGTERM exits 0."""
        ports = {name: free_port() for name in ("https", "http", "metrics")}
        settings_for(tmp_path, "http://127.0.0.1:9")  # makes the certificate and key files
        environ = {
            **os.environ,
            "GATEWAY_SERVER__PUBLIC_HOSTS": HOST,
            "GATEWAY_SERVER__HOST": "127.0.0.1",
            "GATEWAY_SERVER__TLS_CERT_FILE": str(tmp_path / "tls" / "cert.pem"),
            "GATEWAY_SERVER__TLS_KEY_FILE": str(tmp_path / "tls" / "key.pem"),
            "GATEWAY_SERVER__HTTPS_PORT": str(ports["https"]),
            "GATEWAY_SERVER__HTTP_PORT": str(ports["http"]),
            "GATEWAY_SERVER__METRICS_PORT": str(ports["metrics"]),
            "GATEWAY_ASSERTION__KEY_FILES": str(tmp_path / "keys" / "assertion-key.pem"),
            "GATEWAY_AUDIT__SQLITE_PATH": str(tmp_path / "audit.db"),
            "GATEWAY_AUDIT__SPOOL_DIR": str(tmp_path / "spool"),
            "GATEWAY_POLICY__WATCH": "false",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        metrics = f"http://127.0.0.1:{ports['metrics']}"
        try:
            _wait_for(lambda: httpx.get(f"{metrics}/health", timeout=1).status_code == 200)
            process.send_signal(signal.SIGHUP)
            _wait_for(
                lambda: (
                    'gateway_policy_reloads_total{outcome="success"} 1.0'
                    in httpx.get(f"{metrics}/metrics", timeout=1).text
                )
            )
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


class TestWorkers:
    def test_worker_zero_keeps_the_settings(self, tmp_path: Path) -> None:
        """The first worker uses the configured spool and metrics port unchanged."""
        settings = settings_for(tmp_path, "http://127.0.0.1:9", GATEWAY_SERVER__WORKERS="2")
        assert worker_settings(settings, 0) is settings

    def test_later_workers_get_their_own_spool_and_metrics_port(self, tmp_path: Path) -> None:
        """Worker N spools under worker-N and serves metrics on metrics_port + N."""
        settings = settings_for(tmp_path, "http://127.0.0.1:9", GATEWAY_SERVER__WORKERS="3")
        second = worker_settings(settings, 2)
        assert second.audit.spool_dir == tmp_path / "spool" / "worker-2"
        assert second.server.metrics_port == settings.server.metrics_port + 2

    def test_listener_addresses_match_the_built_listeners(self, tmp_path: Path) -> None:
        """The addresses bound before forking are those of the listeners a worker builds."""
        settings = settings_for(tmp_path, "http://127.0.0.1:9")
        built = build(settings).listeners
        assert listener_addresses(settings) == {item.name: (item.host, item.port) for item in built}

    def test_unshipped_spool_of_a_removed_worker_is_found(self, tmp_path: Path) -> None:
        """A spool of a worker beyond the count that still holds events is reported."""
        settings = settings_for(tmp_path, "http://127.0.0.1:9", GATEWAY_SERVER__WORKERS="2")
        held = Spool(directory=tmp_path / "spool" / "worker-2")
        held.append([b"e1\t2026-11-28T00:00:00Z\t{}\n"])
        held.close()
        Spool(directory=tmp_path / "spool" / "worker-3").close()  # empty: nothing to lose
        Spool(directory=tmp_path / "spool" / "worker-1").close()  # still a worker
        assert orphaned_spools(settings) == [tmp_path / "spool" / "worker-2"]

    def test_serve_with_two_workers(self, tmp_path: Path) -> None:
        """``server.workers = 2``: two processes answer on one port, each with its own spool;
        SIGTERM stops them all with status 0."""
        port = free_port()
        keys = _demo_assertion_key(tmp_path / "keys")
        environ = {
            **os.environ,
            "GATEWAY_SERVER__PUBLIC_HOSTS": "127.0.0.1",
            "GATEWAY_SERVER__HOST": "127.0.0.1",
            "GATEWAY_SERVER__ALLOW_PLAIN_HTTP": "true",
            "GATEWAY_SERVER__HTTPS_PORT": str(port),
            "GATEWAY_SERVER__HTTP_PORT": "0",
            "GATEWAY_SERVER__METRICS_PORT": "0",
            "GATEWAY_SERVER__WORKERS": "2",
            "GATEWAY_ASSERTION__KEY_FILES": str(keys),
            "GATEWAY_AUDIT__SQLITE_PATH": str(tmp_path / "audit.db"),
            "GATEWAY_AUDIT__SPOOL_DIR": str(tmp_path / "spool"),
            "GATEWAY_POLICY__WATCH": "false",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/_gateway/jwks.json"
        workers: list[int] = []
        try:
            _wait_for(lambda: len(_children(process.pid)) == 2)
            # Each worker's audit worker opens its own spool (the order is the scheduler's).
            _wait_for((tmp_path / "spool" / "worker-1" / "cursor").exists)
            _wait_for((tmp_path / "spool" / "cursor").exists)
            statuses = {httpx.get(url, timeout=5).status_code for _ in range(20)}
            assert statuses == {200}
            workers = _children(process.pid)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
            assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        finally:
            workers = workers or _children(process.pid)
            if process.poll() is None:
                process.kill()
                process.wait()
            for pid in workers:  # never leave a worker behind, whatever failed above
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def test_port_in_use_fails_the_start(self, tmp_path: Path) -> None:
        """A port another program holds stops the start with a message, before any fork."""
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            settings = settings_for(
                tmp_path,
                "http://127.0.0.1:9",
                GATEWAY_SERVER__WORKERS="2",
                GATEWAY_SERVER__HOST="127.0.0.1",
                GATEWAY_SERVER__HTTPS_PORT=str(other.getsockname()[1]),
                GATEWAY_SERVER__HTTP_PORT="0",
                GATEWAY_SERVER__METRICS_PORT="0",
            )
            assert start_workers(settings) == 2


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
