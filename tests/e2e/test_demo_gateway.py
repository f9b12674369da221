"""``make run``'s gateway, end to end: demo settings, the real policy, audit pipeline and
forwarder, the demo upstream and the dev identity provider on real ports. A person of every
role logs in, reaches what the shipped policy gives their role, is refused another tenant's
data, and each login lands in the audit store."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from audit import Scope, sqlite_store
from demo_upstream import AssertionChecker
from demo_upstream import create_app as demo_upstream
from devidp import PEOPLE, Person, for_gateway
from gateway._wiring import assertion_signer, build, demo_settings
from gateway.settings import Settings
from gateway.types import ASGIApp

BASE = "https://localhost:8443"

#: Per role: a route the shipped policy allows, and one it refuses (another tenant's data
#: where the role has a tenant).
ROUTES: dict[str, tuple[str, str]] = {
    "student": ("/api/me", "/api/schools/{other}/students"),
    "teacher": ("/api/schools/{tenant}/students", "/api/schools/{other}/students"),
    "lob_coordinator": ("/api/schools/{tenant}/reports", "/api/schools/{other}/reports"),
    "school_admin": ("/api/schools/{tenant}/students", "/api/schools/{other}/students"),
    "supplier": ("/api/providers/{tenant}/activities", "/api/providers/org-zorg/activities"),
    "platform_staff": ("/api/admin/schools", "/api/me"),
    "security_officer": ("/activities", "/api/admin/schools"),
    "incident_responder": ("/activities", "/api/admin/schools"),
    "compliance_reviewer": ("/activities", "/api/me"),
    "platform_admin": ("/activities", "/api/admin/schools"),
}


PUBLIC = {"/activities"}


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def _serve(app: ASGIApp, sock: socket.socket) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, TestClient]]:
    """The servers and one gateway with its lifespan running (a gateway starts once)."""
    state = Path(tmp_path_factory.mktemp("demo"))
    idp_sock, upstream_sock = _listening_socket(), _listening_socket()
    settings = demo_settings(
        None,
        environ={
            "GATEWAY_DEMO__STATE_DIR": str(state),
            "GATEWAY_DEMO__IDP_PORT": str(idp_sock.getsockname()[1]),
            "GATEWAY_DEMO__UPSTREAM_PORT": str(upstream_sock.getsockname()[1]),
            "GATEWAY_POLICY__WATCH": "false",
        },
    )
    secret = settings.oidc.issuers["devidp"].client_secret
    assert secret is not None
    idp = for_gateway(
        port=idp_sock.getsockname()[1],
        gateway_origins=[BASE],
        client_secret=secret.reveal(),
        mode="test",
    )
    checker = AssertionChecker(
        issuer=f"https://{settings.server.public_hosts[0]}",
        audience=settings.assertion.audience,
        jwks=assertion_signer(settings).jwks(),
    )
    gateway = build(settings)
    with (
        _serve(idp, idp_sock),
        _serve(demo_upstream(checker=checker), upstream_sock),
        TestClient(gateway.app, base_url=BASE, follow_redirects=False) as browser,
    ):
        yield settings, browser


def _log_in(browser: TestClient, idp_url: str, person: Person) -> None:
    to_idp = browser.get("/_gateway/login", params={"next": "/activities"})
    assert to_idp.status_code == 303, to_idp.text
    authorize = to_idp.headers["location"]
    assert authorize.startswith(idp_url)
    chosen = httpx.post(authorize, data={"person": person.subject})
    assert chosen.status_code == 302, chosen.text
    back = urlsplit(chosen.headers["location"])
    assert f"{back.scheme}://{back.netloc}" == BASE
    done = browser.get(f"{back.path}?{back.query}")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/activities"


def _route(template: str, person: Person) -> str:
    tenant = person.tenant or ""
    other = "school-b" if tenant == "school-a" else "school-a"
    return template.format(tenant=tenant, other=other)


@pytest.mark.parametrize("person", PEOPLE, ids=lambda p: p.subject)
def test_every_role_against_the_shipped_policy(
    demo: tuple[Settings, TestClient], person: Person
) -> None:
    """Log in through devidp; the role's route is forwarded as that person, the refused one
    is a 403 from the gateway, and logout ends the session."""
    settings, browser = demo
    browser.cookies.clear()
    idp_url = f"http://127.0.0.1:{settings.demo.idp_port}"
    allowed, refused = (_route(t, person) for t in ROUTES[person.roles[0]])
    _log_in(browser, idp_url, person)
    page = browser.get(allowed, headers={"accept": "application/json"})
    assert page.status_code == 200, page.text
    seen = page.json()["_gateway"]
    assert seen["assertion"]["valid"] is True
    assert seen["headers"]["x-gateway-subject"] == person.subject
    denied = browser.get(refused, headers={"accept": "application/json"})
    assert denied.status_code == 403
    assert browser.post("/_gateway/logout").status_code == 303
    after = browser.get(allowed, headers={"accept": "application/json"})
    if allowed in PUBLIC:
        assert "x-gateway-subject" not in after.json()["_gateway"]["headers"]
    else:
        assert after.status_code == 401


def test_logins_reach_the_audit_store(demo: tuple[Settings, TestClient]) -> None:
    """Every successful login above is a login_success event in the SQLite audit store."""
    settings, _browser = demo
    store = sqlite_store(path=settings.audit.sqlite_path)
    deadline = time.monotonic() + 20
    while True:
        store.refresh()
        users = {e.get("user.id") for e in store.search(Scope(actions=["login_success"]), size=500)}
        if len(users) >= len(PEOPLE) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    idp_url = f"http://127.0.0.1:{settings.demo.idp_port}"
    assert {f"{idp_url}|{p.subject}" for p in PEOPLE} <= users
