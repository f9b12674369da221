"""The whole login flow through a gateway against the dev identity provider, for every role.

The gateway is assembled with ``create_app`` and a small fake authorizer (tenant routes only
for their tenant); the dev identity provider is the real Authlib-based one, reached in-process
(``httpx.ASGITransport``) by both the gateway's OIDC client and the test's "browser".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devidp import PEOPLE, DevClient, Person, create_app
from tests.gateway.oidc._idp import HOST, Gateway, settings
from tests.gateway.oidc._support import Clock

IDP = "http://127.0.0.1:9400"


def _world(tmp_path: Path, **environ: str) -> tuple[Gateway, httpx.AsyncClient]:
    """A gateway (settings ``environ`` added) and a browser at the dev identity provider."""
    idp_app = create_app(
        issuer=IDP,
        mode="test",
        clients=[
            DevClient(
                client_id="gateway",
                client_secret="dev-secret",
                redirect_uris=[f"https://{HOST}/_gateway/callback"],
                post_logout_redirect_uris=[f"https://{HOST}/"],
            )
        ],
    )
    cfg = settings(
        tmp_path,
        **{
            "OIDC__ISSUERS__TESTIDP__DISCOVERY_URL": f"{IDP}/.well-known/openid-configuration",
            "OIDC__ISSUERS__TESTIDP__CLIENT_ID": "gateway",
            "OIDC__ISSUERS__TESTIDP__CLIENT_SECRET": "dev-secret",
            **environ,
        },
    )
    gateway = Gateway(
        tmp_path,
        clock=Clock(time.time()),
        oidc_settings=cfg,
        transport=httpx.ASGITransport(app=idp_app),
    )
    browser_at_idp = httpx.AsyncClient(transport=httpx.ASGITransport(app=idp_app), base_url=IDP)
    return gateway, browser_at_idp


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    gateway, browser_at_idp = _world(tmp_path)
    yield gateway, browser_at_idp
    await browser_at_idp.aclose()
    await gateway.aclose()


def _home(person: Person) -> str:
    return f"/schools/{person.tenant}/home" if person.tenant else "/home"


async def _log_in(gw: Gateway, idp: httpx.AsyncClient, person: Person) -> httpx.Response:
    first = await gw.browser.get(_home(person))
    assert first.status_code == 303
    to_idp = await gw.browser.get(first.headers["location"])
    assert to_idp.status_code == 303
    authorize = urlsplit(to_idp.headers["location"])
    assert f"{authorize.scheme}://{authorize.netloc}" == IDP
    page = await idp.get(f"{authorize.path}?{authorize.query}")
    assert page.status_code == 200
    chosen = await idp.post(f"{authorize.path}?{authorize.query}", data={"person": person.subject})
    assert chosen.status_code == 302, chosen.text
    back = urlsplit(chosen.headers["location"])
    assert back.netloc == HOST
    return await gw.browser.get(f"{back.path}?{back.query}")


@pytest.mark.parametrize("person", PEOPLE, ids=lambda p: p.subject)
async def test_every_role_logs_in_and_out(
    world: tuple[Gateway, httpx.AsyncClient], person: Person
) -> None:
    """Log in as the person, reach their route with the mapped role and tenant, log out."""
    gw, idp = world
    callback = await _log_in(gw, idp, person)
    assert callback.status_code == 303
    assert callback.headers["location"] == _home(person)
    page = await gw.browser.get(_home(person))
    assert page.status_code == 200
    who = gw.upstream.state.identity
    assert who is not None
    assert who.roles == set(person.roles)
    assert who.tenant == person.tenant
    assert who.user_id == f"{IDP}|{person.subject}"
    if person.tenant is not None:
        other = "school-b" if person.tenant != "school-b" else "school-a"
        assert (await gw.browser.get(f"/schools/{other}/home")).status_code == 403
    old = gw.browser.cookies.get("__Host-gw_session")
    logout = await gw.browser.post("/_gateway/logout")
    assert logout.headers["location"].startswith(f"{IDP}/logout?")
    assert (await idp.get(logout.headers["location"])).status_code == 302
    replay = gw.client()
    replay.cookies.set("__Host-gw_session", old or "", domain=HOST)
    assert (await replay.get(_home(person))).status_code == 303
    await replay.aclose()
    actions = gw.sink.actions()
    assert actions.count("login_success") == 1
    assert "logout" in actions
    assert "session_revoked" in gw.reasons("session_rejected")


async def test_access_token_works_as_bearer(world: tuple[Gateway, httpx.AsyncClient]) -> None:
    """The provider's JWT access token (audience platform-api) is accepted for API calls."""
    gw, idp = world
    person = next(p for p in PEOPLE if p.roles == ("supplier",))
    authorize = (
        "/authorize?response_type=code&client_id=gateway&scope=openid"
        f"&redirect_uri=https://{HOST}/_gateway/callback&state=s&nonce=n"
        "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    )
    chosen = await idp.post(authorize, data={"person": person.subject})
    code = parse_qs(urlsplit(chosen.headers["location"]).query)["code"][0]
    tokens = await idp.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"https://{HOST}/_gateway/callback",
            "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        },
        auth=("gateway", "dev-secret"),
    )
    access = tokens.json()["access_token"]
    response = await gw.browser.get(
        f"/schools/{person.tenant}/api", headers={"authorization": f"Bearer {access}"}
    )
    assert response.status_code == 200
    who = gw.upstream.state.identity
    assert who is not None
    assert (who.method, who.tenant) == ("bearer", person.tenant)


async def _at_idp(idp: httpx.AsyncClient, location: str) -> httpx.Response:
    """The browser following a redirect to the provider."""
    assert location.startswith(f"{IDP}/")
    parts = urlsplit(location)
    return await idp.get(f"{parts.path}?{parts.query}")


async def _back(gw: Gateway, answer: httpx.Response) -> httpx.Response:
    """The browser following the provider's redirect back to the gateway's callback."""
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    assert back.netloc == HOST
    return await gw.browser.get(f"{back.path}?{back.query}")


async def test_stale_roles_silent_relogin(tmp_path: Path) -> None:
    """After ``roles_max_age`` the gateway asks the provider with ``prompt=none``: a person
    still signed in there is back without the form; once the provider's session has ended,
    its ``login_required`` leads straight to the interactive form."""
    gw, idp = _world(tmp_path, SESSION__ROLES_MAX_AGE="1s")
    person = next(p for p in PEOPLE if p.tenant is not None)
    try:
        assert (await _log_in(gw, idp, person)).status_code == 303
        gw.clock.advance(2)
        stale = await gw.browser.get(_home(person))
        assert stale.status_code == 303
        to_idp = await gw.browser.get(stale.headers["location"])
        assert parse_qs(urlsplit(to_idp.headers["location"]).query)["prompt"] == ["none"]
        done = await _back(gw, await _at_idp(idp, to_idp.headers["location"]))
        assert done.status_code == 303
        assert done.headers["location"] == _home(person)
        assert (await gw.browser.get(_home(person))).status_code == 200
        assert gw.sink.actions().count("login_success") == 2

        idp.cookies.clear()  # the session at the provider has ended
        gw.clock.advance(2)
        stale = await gw.browser.get(_home(person))
        to_idp = await gw.browser.get(stale.headers["location"])
        refused = await _at_idp(idp, to_idp.headers["location"])
        interactive = await _back(gw, refused)
        assert interactive.status_code == 303
        assert "prompt" not in parse_qs(urlsplit(interactive.headers["location"]).query)
        form = await _at_idp(idp, interactive.headers["location"])
        assert form.status_code == 200
        assert 'name="person"' in form.text
        parts = urlsplit(interactive.headers["location"])
        chosen = await idp.post(f"{parts.path}?{parts.query}", data={"person": person.subject})
        assert (await _back(gw, chosen)).status_code == 303
        assert (await gw.browser.get(_home(person))).status_code == 200
        assert gw.sink.actions().count("login_success") == 3
    finally:
        await idp.aclose()
        await gw.aclose()
