"""Fail closed when the audit store or the policy engine fails: requests are decided (and
refused) as before, or refused outright, never forwarded unchecked, and nothing is lost.

- Audit store (OpenSearch) unreachable: decisions are unchanged, events wait in the disk
  spool, readiness says "not ready", and logins are refused (their single-use state lives in
  the audit store). (A full spool refusing requests is tested in tests/audit/test_pipeline.)
- Policy engine broken: a broken policy at start-up stops the gateway; a broken policy file
  at reload leaves the policy in force; a decision that raises is a denial, never a forward.

Guards CWE-636 (not failing securely), CWE-755 (improper handling of exceptional conditions)
and CWE-778 (insufficient logging: events dropped while the store is away).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit import Scope, sqlite_store
from gateway._wiring import build, demo_settings
from policies import PolicyError, PolicyStore
from tests.security._harness import Deployment, deployed

FORGED = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZW1vLXBsYXRmb3JtLWFkbWluIn0."
RELOAD_WAIT = 20.0
POLICY_ROOT = Path(__file__).resolve().parents[2] / "policies"


@contextlib.contextmanager
def _dead_port() -> Iterator[int]:
    """A port bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _audit_down(port: int, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_AUDIT__STORE": "opensearch",
        "GATEWAY_AUDIT__OPENSEARCH_URLS": f"http://127.0.0.1:{port}",
        "GATEWAY_AUDIT__REPLICAS": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def audit_down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with (
        _dead_port() as port,
        deployed(tmp_path_factory.mktemp("audit-down"), _audit_down(port)) as running,
    ):
        yield running


class TestAuditStoreUnreachable:
    def test_denied_routes_stay_denied(self, audit_down: Deployment) -> None:
        """CWE-636: without the audit store nothing protected is let through."""
        with audit_down.client() as client:
            for path in ("/api/me", "/api/admin/schools", "/api/schools/school-a/students"):
                response = client.get(path)
                assert response.status_code == 401, response.text
                assert "raw_path" not in response.text

    def test_events_wait_in_the_spool(self, audit_down: Deployment) -> None:
        """CWE-778: the events of refused requests are kept on disk, not lost."""
        spool = audit_down.settings.audit.spool_dir
        with audit_down.client() as client:
            for _ in range(5):
                client.get("/api/admin/schools")
        deadline = time.monotonic() + RELOAD_WAIT
        while time.monotonic() < deadline:
            if sum(p.stat().st_size for p in spool.rglob("*") if p.is_file()) > 0:
                break
            time.sleep(0.2)
        assert sum(p.stat().st_size for p in spool.rglob("*") if p.is_file()) > 0

    def test_login_refused(self, audit_down: Deployment) -> None:
        """CWE-636: a login cannot start when its single-use state cannot be recorded in the
        shared store: 503 "login service unavailable", no redirect, no session."""
        with audit_down.client() as browser:
            response = browser.get("/_gateway/login", params={"next": "/"})
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "login_unavailable"
            assert "location" not in response.headers
            assert not [c for c in browser.cookies.jar if c.name.startswith("__Host-gw_s")]

    def test_readiness_reports_not_ready(self, audit_down: Deployment) -> None:
        """CWE-636: the readiness probe says not ready (audit), so a load balancer moves on."""
        with audit_down.client() as client:
            response = client.get("/_gateway/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["audit"] is False


class TestPolicyEngineBroken:
    def test_broken_policy_stops_start_up(self, tmp_path: Path) -> None:
        """CWE-636: a policy that does not load is no reason to start without one."""
        broken = tmp_path / "policy.csv"
        broken.write_text("p, this is, not, a valid\nrule without end,\n\x00")
        settings = demo_settings(
            None,
            environ={
                "GATEWAY_DEMO__STATE_DIR": str(tmp_path / "state"),
                "GATEWAY_POLICY__POLICY_FILE": str(broken),
                "GATEWAY_POLICY__WATCH": "false",
            },
        )
        with pytest.raises((PolicyError, ValueError)):
            build(settings)

    def test_broken_reload_keeps_the_policy_in_force(
        self, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """CWE-636: a policy file broken while running is not taken (reload fails, counted),
        and decisions stay what they were: public allowed, admin denied."""
        state = tmp_path_factory.mktemp("policy-reload")
        policy = Path(state) / "policy.csv"
        policy.write_text((POLICY_ROOT / "policy.csv").read_text())
        environ = {"GATEWAY_POLICY__POLICY_FILE": str(policy), "GATEWAY_POLICY__WATCH": "true"}
        with deployed(Path(state) / "state", environ) as running, running.client() as client:
            assert client.get("/activities").status_code == 200
            assert client.get("/api/admin/schools").status_code == 401
            policy.write_text("p, *, *, *, *, allow\n[broken\n")
            store = sqlite_store(path=running.settings.audit.sqlite_path)
            deadline = time.monotonic() + RELOAD_WAIT
            failed = 0
            while not failed and time.monotonic() < deadline:
                failed = store.count(Scope(actions=["policy_reload_failed"]))
                time.sleep(0.3)
            store.close()
            assert failed, "the broken policy file was never tried"
            assert client.get("/activities").status_code == 200
            assert client.get("/api/admin/schools").status_code == 401

    def test_decision_that_raises_is_a_denial(
        self, audit_down: Deployment, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CWE-636 / CWE-755: a policy engine failing at decision time denies (here the
        anonymous caller gets 401, even for the public catalogue); nothing is forwarded and
        no detail of the failure is shown."""

        def broken(self: PolicyStore, **_: object) -> None:
            raise RuntimeError("policy engine down")

        monkeypatch.setattr(PolicyStore, "decide", broken)
        with audit_down.client() as client:
            response = client.get("/activities")
        assert response.status_code == 401, response.text
        assert "raw_path" not in response.text
        assert "policy engine down" not in response.text
