"""devidp: the dev identity provider speaks real OIDC (code flow, PKCE, ID tokens)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from devidp import PEOPLE, DevClient, ModeNotEnabled, create_app, for_gateway
from devidp.__main__ import main

ISSUER = "http://127.0.0.1:9400"
REDIRECT = "https://gw.test/_gateway/callback"


@pytest.fixture
async def idp() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        issuer=ISSUER,
        mode="test",
        clients=[
            DevClient(
                client_id="gw",
                client_secret="s3cret",
                redirect_uris=[REDIRECT],
                post_logout_redirect_uris=["https://gw.test/"],
            )
        ],
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
        yield c


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def _authorize_query(**extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": "gw",
        "redirect_uri": REDIRECT,
        "scope": "openid profile",
        "state": "st",
        "nonce": "n-1",
        "code_challenge": _challenge("v" * 50),
        "code_challenge_method": "S256",
        **extra,
    }
    return urlencode({k: v for k, v in params.items() if v})


async def _code(idp: httpx.AsyncClient, person: str, **extra: str) -> httpx.Response:
    return await idp.post(f"/authorize?{_authorize_query(**extra)}", data={"person": person})


class TestMode:
    @pytest.mark.parametrize("mode", [None, "", "production", "prod"])
    def test_refuses_without_demo_or_test_mode(self, mode: str | None) -> None:
        """Building the provider outside demo or test mode is refused."""
        with pytest.raises(ModeNotEnabled):
            create_app(issuer=ISSUER, mode=mode, clients=[])

    def test_cli_refuses(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """python -m devidp without --mode exits 2 and says why."""
        monkeypatch.delenv("DEVIDP_MODE", raising=False)
        assert main(["--port", "1"]) == 2
        assert "demo or test mode" in capsys.readouterr().err


class TestEndpoints:
    async def test_discovery(self, idp: httpx.AsyncClient) -> None:
        """Discovery names every endpoint under the issuer."""
        doc = (await idp.get("/.well-known/openid-configuration")).json()
        assert doc["issuer"] == ISSUER
        for name in (
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
            "end_session_endpoint",
        ):
            assert doc[name].startswith(ISSUER + "/")
        assert doc["code_challenge_methods_supported"] == ["S256"]

    async def test_chooser_lists_every_person(self, idp: httpx.AsyncClient) -> None:
        """The authorize page offers one button per demo person."""
        page = await idp.get(f"/authorize?{_authorize_query()}")
        assert page.status_code == 200
        assert len(re.findall(r'name="person"', page.text)) == len(PEOPLE)

    async def test_code_flow_with_pkce(self, idp: httpx.AsyncClient) -> None:
        """Choosing a person gives a code; the code and verifier give a signed ID token."""
        person = PEOPLE[2]
        response = await _code(idp, person.subject)
        assert response.status_code == 302
        location = response.headers["location"]
        assert location.startswith(REDIRECT)
        query = parse_qs(urlsplit(location).query)
        assert query["state"] == ["st"]
        tokens = await idp.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT,
                "code_verifier": "v" * 50,
            },
            auth=("gw", "s3cret"),
        )
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        keys = KeySet.import_key_set((await idp.get("/jwks")).json())
        claims = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
        assert claims["iss"] == ISSUER
        assert claims["aud"] == ["gw"]
        assert claims["nonce"] == "n-1"
        assert claims["sub"] == person.subject
        assert claims["roles"] == list(person.roles)
        assert claims["tenant"] == person.tenant
        info = await idp.get(
            "/userinfo", headers={"authorization": f"Bearer {body['access_token']}"}
        )
        assert info.json()["sub"] == person.subject

    async def test_wrong_verifier_refused(self, idp: httpx.AsyncClient) -> None:
        """A token request with the wrong PKCE verifier is refused."""
        code = parse_qs(urlsplit((await _code(idp, PEOPLE[0].subject)).headers["location"]).query)
        tokens = await idp.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code["code"][0],
                "redirect_uri": REDIRECT,
                "code_verifier": "w" * 50,
            },
            auth=("gw", "s3cret"),
        )
        assert tokens.status_code == 400

    async def test_pkce_required(self, idp: httpx.AsyncClient) -> None:
        """An authorization request without a code challenge is refused."""
        response = await _code(idp, PEOPLE[0].subject, code_challenge="", code_challenge_method="")
        assert response.status_code == 400
        assert "location" not in response.headers

    async def test_unknown_redirect_refused(self, idp: httpx.AsyncClient) -> None:
        """A redirect URI not registered for the client is refused without redirecting."""
        response = await idp.get(
            f"/authorize?{_authorize_query(redirect_uri='https://evil.test/cb')}"
        )
        assert response.status_code == 400

    async def test_code_single_use(self, idp: httpx.AsyncClient) -> None:
        """An authorization code works once."""
        code = parse_qs(urlsplit((await _code(idp, PEOPLE[0].subject)).headers["location"]).query)
        data = {
            "grant_type": "authorization_code",
            "code": code["code"][0],
            "redirect_uri": REDIRECT,
            "code_verifier": "v" * 50,
        }
        assert (await idp.post("/token", data=data, auth=("gw", "s3cret"))).status_code == 200
        assert (await idp.post("/token", data=data, auth=("gw", "s3cret"))).status_code == 400

    async def test_end_session(self, idp: httpx.AsyncClient) -> None:
        """End-session redirects only to a registered post-logout URI."""
        good = await idp.get(
            "/logout", params={"client_id": "gw", "post_logout_redirect_uri": "https://gw.test/"}
        )
        assert good.status_code == 302
        bad = await idp.get(
            "/logout", params={"client_id": "gw", "post_logout_redirect_uri": "https://evil.test/"}
        )
        assert bad.status_code == 200


def _silent_query(nonce: str) -> str:
    return _authorize_query(prompt="none", nonce=nonce)


class TestPromptNone:
    """``prompt=none``: a code without the form for a browser with a session at the provider,
    ``login_required`` back to the client for one without."""

    async def test_without_session_login_required(self, idp: httpx.AsyncClient) -> None:
        """No session: redirected to the client with ``error=login_required`` and the state."""
        response = await idp.get(f"/authorize?{_silent_query('n-2')}")
        assert response.status_code == 302
        location = response.headers["location"]
        assert location.startswith(REDIRECT)
        query = parse_qs(urlsplit(location).query)
        assert query["error"] == ["login_required"]
        assert query["state"] == ["st"]
        assert "code" not in query

    async def test_with_session_issues_code(self, idp: httpx.AsyncClient) -> None:
        """After choosing a person, a silent request gets a code for that person at once."""
        person = PEOPLE[1]
        assert (await _code(idp, person.subject)).status_code == 302
        response = await idp.get(f"/authorize?{_silent_query('n-2')}")
        assert response.status_code == 302
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert "error" not in query
        tokens = await idp.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT,
                "code_verifier": "v" * 50,
            },
            auth=("gw", "s3cret"),
        )
        assert tokens.status_code == 200, tokens.text
        keys = KeySet.import_key_set((await idp.get("/jwks")).json())
        claims = jwt.decode(tokens.json()["id_token"], keys, algorithms=["RS256"]).claims
        assert claims["sub"] == person.subject
        assert claims["nonce"] == "n-2"

    async def test_form_still_shown_without_prompt(self, idp: httpx.AsyncClient) -> None:
        """A request without ``prompt=none`` shows the form even with a session."""
        await _code(idp, PEOPLE[0].subject)
        page = await idp.get(f"/authorize?{_authorize_query(nonce='n-3')}")
        assert page.status_code == 200
        assert 'name="person"' in page.text

    async def test_end_session_ends_provider_session(self, idp: httpx.AsyncClient) -> None:
        """After end-session a silent request is answered ``login_required`` again."""
        await _code(idp, PEOPLE[0].subject)
        await idp.get(
            "/logout", params={"client_id": "gw", "post_logout_redirect_uri": "https://gw.test/"}
        )
        response = await idp.get(f"/authorize?{_silent_query('n-4')}")
        assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["login_required"]

    async def test_silent_request_with_unknown_redirect_not_redirected(
        self, idp: httpx.AsyncClient
    ) -> None:
        """``login_required`` is never sent to a redirect URI the client did not register."""
        query = _authorize_query(prompt="none", redirect_uri="https://evil.test/cb")
        response = await idp.get(f"/authorize?{query}")
        assert response.status_code == 400
        assert "location" not in response.headers


class TestForGateway:
    async def test_registers_gateway_client(self) -> None:
        """for_gateway registers the gateway's callback and post-logout URIs for each origin."""

        app = for_gateway(
            port=9400,
            gateway_origins=["https://localhost:8443", "https://127.0.0.1:8443/"],
            client_secret="x",
            mode="demo",
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
            query = _authorize_query(
                client_id="gateway", redirect_uri="https://127.0.0.1:8443/_gateway/callback"
            )
            assert (await c.get(f"/authorize?{query}")).status_code == 200
            logout = await c.get(
                "/logout",
                params={
                    "client_id": "gateway",
                    "post_logout_redirect_uri": "https://localhost:8443/",
                },
            )
            assert logout.status_code == 302

    def test_refuses_without_mode(self) -> None:
        """for_gateway refuses too unless demo or test mode is on."""

        with pytest.raises(ModeNotEnabled):
            for_gateway(port=1, gateway_origins=["https://x"], client_secret="x", mode=None)
