"""End to end against a real Keycloak: log in through the gateway, use it, log out.

Keycloak (dev mode, realm from ``keycloak-realm.json``) is started once per test session by the
``keycloak`` fixture. The "browser" is httpx: it follows the gateway's redirect to Keycloak,
posts Keycloak's login form, and brings the code back to the gateway's callback.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e._keycloak import Keycloak
from tests.gateway.oidc._idp import HOST, Gateway, settings
from tests.gateway.oidc._support import Clock

FORM_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', re.S)


async def _post_form(
    kc: httpx.AsyncClient, page: httpx.Response, data: dict[str, str]
) -> httpx.Response:
    """Post Keycloak's login form with its cookies.

    Keycloak marks its cookies Secure even on plain http to 127.0.0.1 (browsers treat loopback
    as a secure context; httpx's cookie jar does not), so they are sent explicitly here.
    """
    found = FORM_ACTION.search(page.text)
    assert found is not None, "Keycloak's login form not found"
    cookies = "; ".join(f"{name}={value}" for name, value in kc.cookies.items())
    return await kc.post(html.unescape(found.group(1)), data=data, headers={"cookie": cookies})


@pytest.fixture
async def world(
    tmp_path: Path, keycloak: Keycloak
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    cfg = settings(
        tmp_path,
        **{
            "OIDC__ISSUERS__TESTIDP__DISCOVERY_URL": (
                f"{keycloak.url}/.well-known/openid-configuration"
            ),
            "OIDC__ISSUERS__TESTIDP__CLIENT_ID": "gateway",
            "OIDC__ISSUERS__TESTIDP__CLIENT_SECRET": "keycloak-test-secret",
            "OIDC__ISSUERS__TESTIDP__CLAIMS": "keycloak",
        },
    )
    gateway = Gateway(tmp_path, clock=Clock(time.time()), oidc_settings=cfg)
    browser_at_keycloak = httpx.AsyncClient(timeout=30)
    yield gateway, browser_at_keycloak
    await browser_at_keycloak.aclose()
    await gateway.aclose()


async def _log_in(
    gw: Gateway, kc: httpx.AsyncClient, username: str, password: str
) -> httpx.Response:
    first = await gw.browser.get("/schools/school-a/home")
    assert first.status_code == 303
    to_keycloak = await gw.browser.get(first.headers["location"])
    assert to_keycloak.status_code == 303
    login_page = await kc.get(to_keycloak.headers["location"])
    assert login_page.status_code == 200, login_page.text[:500]
    posted = await _post_form(
        kc, login_page, {"username": username, "password": password, "credentialId": ""}
    )
    assert posted.status_code == 302, posted.text[:500]
    back = urlsplit(posted.headers["location"])
    assert back.netloc == HOST
    return await gw.browser.get(f"{back.path}?{back.query}")


async def test_keycloak_login_tenant_logout(
    world: tuple[Gateway, httpx.AsyncClient], keycloak: Keycloak
) -> None:
    """Teacher of school A: reaches school A, is refused school B, logs out, old cookie refused."""
    gw, kc = world
    callback = await _log_in(gw, kc, "tom", "tom-test-password")
    assert callback.status_code == 303, callback.text
    assert callback.headers["location"] == "/schools/school-a/home"
    assert (await gw.browser.get("/schools/school-a/home")).status_code == 200
    who = gw.upstream.state.identity
    assert who is not None
    assert who.roles == {"teacher"}
    assert who.tenant == "school-a"
    assert who.issuer == keycloak.url
    assert (await gw.browser.get("/schools/school-b/home")).status_code == 403
    old = gw.browser.cookies.get("__Host-gw_session")
    logout = await gw.browser.post("/_gateway/logout")
    assert logout.status_code == 303
    assert logout.headers["location"].startswith(f"{keycloak.url}/protocol/openid-connect/logout?")
    replay = gw.client()
    replay.cookies.set("__Host-gw_session", old or "", domain=HOST)
    assert (await replay.get("/schools/school-a/home")).status_code == 303
    await replay.aclose()
    succeeded = [e for e in gw.sink.events if e["event.action"] == "login_success"]
    assert len(succeeded) == 1
    assert succeeded[0]["user.id"] == f"{keycloak.url}|{who.subject}"
    assert "session_revoked" in gw.reasons("session_rejected")


async def test_keycloak_wrong_password_never_reaches_gateway(
    world: tuple[Gateway, httpx.AsyncClient],
) -> None:
    """A wrong password stays at Keycloak: no code, no session, no gateway login event."""
    gw, kc = world
    first = await gw.browser.get("/_gateway/login")
    login_page = await kc.get(first.headers["location"])
    posted = await _post_form(kc, login_page, {"username": "tom", "password": "wrong"})
    assert posted.status_code == 200
    assert "login_success" not in gw.sink.actions()
