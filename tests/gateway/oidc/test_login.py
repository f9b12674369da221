"""gateway/oidc/_login.py: the code flow with PKCE through a whole gateway, against a fake IdP.

The provider's HTTP endpoints are mocked with respx; the gateway is built per test (the OIDC
component caches metadata and keys).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from gateway.oidc import Block, MemoryState
from gateway.oidc.errors import StateUnavailable
from tests.gateway.oidc._idp import (
    CLIENT_ID,
    HOST,
    ISSUER,
    FakeIdP,
    Gateway,
    hmac_key,
    rsa_key,
    settings,
)


@pytest.fixture
def idp(respx_mock: respx.MockRouter) -> FakeIdP:
    return FakeIdP(respx_mock)


@pytest.fixture
async def gw(tmp_path: Path, idp: FakeIdP) -> AsyncIterator[Gateway]:
    gateway = Gateway(tmp_path, clock=idp.clock)
    yield gateway
    await gateway.aclose()


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class TestStartLogin:
    async def test_anonymous_browser_sent_to_login(self, gw: Gateway) -> None:
        """A browser without a session is sent to the login path with the return path."""
        response = await gw.browser.get("/schools/school-a/x?y=1")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/_gateway/login?next=")

    async def test_single_issuer_goes_straight_to_it(self, gw: Gateway) -> None:
        """With one issuer the login redirects to its authorization endpoint with PKCE S256."""
        location = await gw.start_login()
        assert location.startswith(f"{ISSUER}/authorize?")
        query = _query(location)
        assert query["client_id"] == CLIENT_ID
        assert query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256"
        assert query["redirect_uri"] == f"https://{HOST}/_gateway/callback"
        assert "openid" in query["scope"].split()
        assert len(query["state"]) >= 32
        assert len(query["nonce"]) >= 32

    async def test_login_cookie_attributes(self, gw: Gateway) -> None:
        """The login state cookie is __Host-, Secure, HttpOnly, SameSite=Lax and expires."""
        response = await gw.browser.get("/_gateway/login")
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-gw_login=v1.")
        for part in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"):
            assert part in cookie

    async def test_chooser_with_several_issuers(self, tmp_path: Path, idp: FakeIdP) -> None:
        """Several issuers: a Dutch/English chooser page listing each."""
        cfg = settings(
            tmp_path,
            **{
                "OIDC__ISSUERS__OTHER__DISCOVERY_URL": "https://other.test/.well-known/x",
                "OIDC__ISSUERS__OTHER__CLIENT_ID": "c",
                "OIDC__ISSUERS__OTHER__CLAIMS": "devidp",
                "OIDC__ISSUERS__OTHER__DISPLAY_NAME": "Ander <IdP>",
            },
        )
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        response = await gw.browser.get("/_gateway/login?next=/a")
        assert response.status_code == 200
        assert "Inloggen" in response.text
        assert "Log in" in response.text
        assert "Ander &lt;IdP&gt;" in response.text
        assert "idp=testidp&amp;next=%2Fa" in response.text
        second = await gw.browser.get("/_gateway/login?idp=testidp")
        assert second.headers["location"].startswith(f"{ISSUER}/authorize")
        await gw.aclose()

    async def test_unknown_issuer(self, gw: Gateway) -> None:
        """?idp= naming no configured issuer is refused and audited as unknown_issuer."""
        response = await gw.browser.get("/_gateway/login?idp=nope")
        assert response.status_code == 400
        assert gw.reasons("login_failure") == ["unknown_issuer"]

    async def test_discovery_failure_is_idp_error(self, gw: Gateway, idp: FakeIdP) -> None:
        """A provider whose discovery fails: 503 "login service unavailable" (Dutch and
        English, not "the platform cannot be reached") and an idp_error event."""
        idp.discovery.mock(return_value=httpx.Response(500))
        response = await gw.browser.get("/_gateway/login")
        assert response.status_code == 503
        assert "De inlogdienst is op dit moment niet beschikbaar" in response.text
        assert "The login service is unavailable right now" in response.text
        assert "platform" not in response.text
        assert gw.reasons("login_failure") == ["idp_error"]


class TestCallbackSuccess:
    async def test_login_sets_session_and_returns(self, gw: Gateway, idp: FakeIdP) -> None:
        """A good login sets the session cookie and sends the browser to the stored path."""
        response = await gw.login(idp, next_path="/schools/school-a/home")
        assert response.status_code == 303
        assert response.headers["location"] == "/schools/school-a/home"
        cookies = response.headers.get_list("set-cookie")
        assert any(c.startswith("__Host-gw_session=v1.") for c in cookies)
        assert any(c.startswith("__Host-gw_login=;") for c in cookies)
        page = await gw.browser.get("/schools/school-a/home")
        assert page.status_code == 200
        who = gw.upstream.state.identity
        assert who is not None
        assert who.roles == {"teacher"}
        assert who.tenant == "school-a"
        assert who.user_id == f"{ISSUER}|user-1"

    async def test_success_audited(self, gw: Gateway, idp: FakeIdP) -> None:
        """The login is a login_success event with user, roles and tenant, and no secrets."""
        await gw.login(idp)
        (event,) = [e for e in gw.sink.events if e["event.action"] == "login_success"]
        assert event["user.id"] == f"{ISSUER}|user-1"
        assert event["user.roles"] == ["teacher"]
        assert event["organization.id"] == "school-a"
        assert event["source.ip"] == "198.51.100.9"
        text = repr(gw.sink.events)
        assert "code-0" not in text
        assert "client-secret" not in text

    async def test_other_tenant_refused(self, gw: Gateway, idp: FakeIdP) -> None:
        """The mapped tenant decides: another school's route is 403."""
        await gw.login(idp)
        response = await gw.browser.get("/schools/school-b/home")
        assert response.status_code == 403

    async def test_relogin_with_stale_session_keeps_new_one(
        self, gw: Gateway, idp: FakeIdP
    ) -> None:
        """Logging in again while the old session is due a refresh still yields the new one."""
        await gw.login(idp)
        await gw.browser.get("/home")
        first = gw.upstream.state.identity
        location = await gw.start_login()
        code = idp.authorize(location)
        idp.clock.advance(400)  # the callback request itself carries a session due a refresh
        callback = await gw.browser.get(
            "/_gateway/callback", params={"state": _query(location)["state"], "code": code}
        )
        assert callback.status_code == 303
        await gw.browser.get("/home")
        second = gw.upstream.state.identity
        assert first is not None and second is not None
        assert first.session_id != second.session_id

    async def test_new_session_id_each_login(self, gw: Gateway, idp: FakeIdP) -> None:
        """Logging in again gives a new session id; the previous session stops working."""
        await gw.login(idp)
        old_cookie = gw.browser.cookies.get("__Host-gw_session")
        await gw.browser.get("/home")
        first = gw.upstream.state.identity
        await gw.login(idp)
        replay = gw.client()
        replay.cookies.set("__Host-gw_session", old_cookie or "", domain=HOST)
        assert (await replay.get("/home")).status_code == 303
        await replay.aclose()
        await gw.browser.get("/home")
        second = gw.upstream.state.identity
        assert first is not None and second is not None
        assert first.session_id != second.session_id

    async def test_two_tabs_can_log_in(self, gw: Gateway, idp: FakeIdP) -> None:
        """Two logins in flight in one browser both complete (unlike Authlib's client)."""
        first = await gw.start_login()
        second = await gw.start_login()
        for location in (first, second):
            code = idp.authorize(location)
            response = await gw.browser.get(
                "/_gateway/callback", params={"state": _query(location)["state"], "code": code}
            )
            assert response.status_code == 303

    async def test_grant_adds_role_and_tenant(
        self, tmp_path: Path, gw: Gateway, idp: FakeIdP
    ) -> None:
        """A local grant supplies a role (and tenant) no federation asserts."""
        idp.claims = {"roles": [], "tenant": None}
        (tmp_path / "grants.toml").write_text(
            '[[grants]]\nissuer = "testidp"\nsubject = "user-1"\ntenant = "org-x"\n'
            'roles = ["supplier"]\n'
        )
        gw.oidc.grants.reload()
        assert (await gw.login(idp)).status_code == 303
        await gw.browser.get("/home")
        who = gw.upstream.state.identity
        assert who is not None
        assert who.roles == {"supplier"}
        assert who.tenant == "org-x"


class TestStateRules:
    async def test_forged_state(self, gw: Gateway, idp: FakeIdP) -> None:
        """A state this browser never started: 400 and state_mismatch, no token request."""
        await gw.start_login()
        response = await gw.browser.get("/_gateway/callback?state=forged&code=c")
        assert response.status_code == 400
        assert gw.reasons("login_failure") == ["state_mismatch"]
        assert idp.token.call_count == 0

    async def test_no_login_cookie(self, gw: Gateway, idp: FakeIdP) -> None:
        """A callback in another browser (no login cookie) is refused."""
        location = await gw.start_login()
        code = idp.authorize(location)
        other = gw.client()
        response = await other.get(
            "/_gateway/callback", params={"state": _query(location)["state"], "code": code}
        )
        assert response.status_code == 400
        assert gw.reasons("login_failure") == ["state_mismatch"]
        await other.aclose()

    async def test_state_single_use(self, gw: Gateway, idp: FakeIdP) -> None:
        """Replaying a used state, even with the old login cookie, is refused."""
        location = await gw.start_login()
        old_cookie = gw.browser.cookies.get("__Host-gw_login")
        code = idp.authorize(location)
        params = {"state": _query(location)["state"], "code": code}
        assert (await gw.browser.get("/_gateway/callback", params=params)).status_code == 303
        replay = gw.client()
        replay.cookies.set("__Host-gw_login", old_cookie or "", domain=HOST)
        response = await replay.get("/_gateway/callback", params=params)
        assert response.status_code == 400
        assert gw.reasons("login_failure") == ["state_mismatch"]
        await replay.aclose()

    async def test_state_single_use_across_instances(self, tmp_path: Path, idp: FakeIdP) -> None:
        """A state used at one instance is refused at another that shares the store (a
        load balancer may send the replay anywhere)."""
        shared = MemoryState(clock=idp.clock)
        one = Gateway(tmp_path, clock=idp.clock, shared=shared)
        two = Gateway(tmp_path, clock=idp.clock, shared=shared)
        location = await one.start_login()
        old_cookie = one.browser.cookies.get("__Host-gw_login")
        params = {"state": _query(location)["state"], "code": idp.authorize(location)}
        assert (await one.browser.get("/_gateway/callback", params=params)).status_code == 303
        two.browser.cookies.set("__Host-gw_login", old_cookie or "", domain=HOST)
        response = await two.browser.get("/_gateway/callback", params=params)
        assert response.status_code == 400
        assert two.reasons("login_failure") == ["state_mismatch"]
        await one.aclose()
        await two.aclose()

    async def test_state_expires(self, gw: Gateway, idp: FakeIdP) -> None:
        """A login not finished within the login timeout is refused."""
        location = await gw.start_login()
        code = idp.authorize(location)
        idp.clock.advance(601)
        response = await gw.browser.get(
            "/_gateway/callback", params={"state": _query(location)["state"], "code": code}
        )
        assert response.status_code == 400
        assert gw.reasons("login_failure") == ["state_mismatch"]


class TestProviderErrors:
    async def test_mixup_iss_parameter(self, gw: Gateway, idp: FakeIdP) -> None:
        """An authorization response naming another issuer (RFC 9207) is refused."""
        location = await gw.start_login()
        code = idp.authorize(location)
        response = await gw.browser.get(
            "/_gateway/callback",
            params={"state": _query(location)["state"], "code": code, "iss": "https://evil.test"},
        )
        assert response.status_code == 401
        assert gw.reasons("login_failure") == ["unknown_issuer"]
        assert idp.token.call_count == 0

    async def test_matching_iss_parameter_accepted(self, gw: Gateway, idp: FakeIdP) -> None:
        """The provider's own iss parameter is fine."""
        location = await gw.start_login()
        code = idp.authorize(location)
        response = await gw.browser.get(
            "/_gateway/callback",
            params={"state": _query(location)["state"], "code": code, "iss": ISSUER},
        )
        assert response.status_code == 303

    async def test_error_from_authorize(self, gw: Gateway) -> None:
        """?error= on the callback is an idp_error event (the user refused, say)."""
        location = await gw.start_login()
        response = await gw.browser.get(
            "/_gateway/callback",
            params={"state": _query(location)["state"], "error": "access_denied"},
        )
        assert response.status_code == 401
        assert gw.reasons("login_failure") == ["idp_error"]
        event = next(e for e in gw.sink.events if e["event.action"] == "login_failure")
        assert "access_denied" in event["error.message"]

    async def test_token_endpoint_error(self, gw: Gateway, idp: FakeIdP) -> None:
        """A token endpoint answering 400 is an idp_error."""
        idp.token_status = 400
        response = await gw.login(idp)
        assert response.status_code == 401
        assert gw.reasons("login_failure") == ["idp_error"]

    async def test_token_endpoint_unreachable(
        self, gw: Gateway, idp: FakeIdP, respx_mock: respx.MockRouter
    ) -> None:
        """A token endpoint that cannot be reached is an idp_error shown as "the login
        service is unavailable" (503), not a 500 nor "log in again"."""
        idp.token.mock(side_effect=httpx.ConnectError("refused"))
        response = await gw.login(idp)
        assert response.status_code == 503
        assert "login service is unavailable" in response.text
        assert gw.reasons("login_failure") == ["idp_error"]

    async def test_pkce_verifier_sent(self, gw: Gateway, idp: FakeIdP) -> None:
        """The token request carries the verifier matching the challenge (the fake checks)."""
        assert (await gw.login(idp)).status_code == 303
        body = parse_qs(idp.token.calls.last.request.content.decode())
        assert body["grant_type"] == ["authorization_code"]
        assert "code_verifier" in body
        assert idp.token.calls.last.request.headers["authorization"].startswith("Basic ")

    async def test_no_id_token(self, gw: Gateway, idp: FakeIdP) -> None:
        """A token response without an id_token is invalid_token."""
        idp.token_body = {"access_token": "x", "token_type": "Bearer"}
        await gw.login(idp)
        assert gw.reasons("login_failure") == ["invalid_token"]


def _set(**claims: Any) -> Any:
    def mutate(idp: FakeIdP) -> None:
        idp.claim_overrides.update(claims)

    return mutate


def _future(seconds: int, name: str) -> Any:
    def mutate(idp: FakeIdP) -> None:
        idp.claim_overrides[name] = int(idp.clock()) + seconds

    return mutate


def _header(**header: Any) -> Any:
    def mutate(idp: FakeIdP) -> None:
        idp.header_overrides.update(header)

    return mutate


def _foreign_key(idp: FakeIdP) -> None:
    idp.signing_key = rsa_key("k1")  # same kid, key the provider never published


def _hmac(idp: FakeIdP) -> None:
    idp.algorithm = "HS256"
    idp.signing_key = hmac_key("k1")


class TestIdTokenRules:
    @pytest.mark.parametrize(
        ("mutate", "reason", "detail"),
        [
            (_set(iss="https://evil.test"), "invalid_token", "wrong_issuer"),
            (_set(aud="someone-else"), "invalid_token", "wrong_audience"),
            (_set(aud=None), "invalid_token", "missing_audience"),
            (_set(aud=[CLIENT_ID, "other"]), "invalid_token", "missing_azp"),
            (_set(aud=[CLIENT_ID, "other"], azp="other"), "invalid_token", "wrong_azp"),
            (_set(azp="other"), "invalid_token", "wrong_azp"),
            (_future(-200, "exp"), "expired", "expired"),
            (_set(exp=None), "invalid_token", "missing_exp"),
            (_set(iat=None), "invalid_token", "missing_iat"),
            (_future(200, "iat"), "invalid_token", "iat_in_future"),
            (_future(200, "nbf"), "invalid_token", "not_yet_valid"),
            (_set(nonce="not-the-nonce"), "invalid_token", "nonce_mismatch"),
            (_set(sub=""), "invalid_token", "missing_sub"),
            (_foreign_key, "invalid_token", "bad_signature"),
            (_hmac, "invalid_token", "algorithm_not_allowed"),
            (_header(alg="none"), "invalid_token", "algorithm_not_allowed"),
            (_header(kid="unknown"), "invalid_token", "unknown_kid"),
            (_header(jku="https://evil.test/jwks"), "invalid_token", "unsupported_header"),
        ],
    )
    async def test_rule(
        self, gw: Gateway, idp: FakeIdP, mutate: Any, reason: str, detail: str
    ) -> None:
        """Each broken rule refuses the login with its reason; no session cookie is set."""
        mutate(idp)
        response = await gw.login(idp)
        assert response.status_code == 401
        assert not any(
            c.startswith("__Host-gw_session=v1") for c in response.headers.get_list("set-cookie")
        )
        assert gw.reasons("login_failure") == [reason]
        event = next(e for e in gw.sink.events if e["event.action"] == "login_failure")
        assert detail in event.get("error.message", reason)

    async def test_expiry_within_leeway_accepted(self, gw: Gateway, idp: FakeIdP) -> None:
        """A token expired less than the leeway ago (60 s) is still accepted."""
        _future(-30, "exp")(idp)
        assert (await gw.login(idp)).status_code == 303

    async def test_hmac_with_public_key_refused_even_if_allowed_list_lies(
        self, gw: Gateway, idp: FakeIdP
    ) -> None:
        """An HS256 token 'signed' with the published RSA key material never verifies."""
        _hmac(idp)
        await gw.login(idp)
        assert gw.reasons("login_failure") == ["invalid_token"]


class TestKeys:
    async def test_key_rotation(self, gw: Gateway, idp: FakeIdP) -> None:
        """After the provider rotates its key, the new kid is fetched once and login works."""
        assert (await gw.login(idp)).status_code == 303
        assert idp.jwks.call_count == 1
        idp.rotate("k2")
        assert (await gw.login(idp)).status_code == 303
        assert idp.jwks.call_count == 2

    async def test_unknown_kid_refetch_limited(self, gw: Gateway, idp: FakeIdP) -> None:
        """Tokens with unknown kids trigger at most one JWKS refetch per cooldown."""
        _header(kid="nope-1")(idp)
        await gw.login(idp)
        _header(kid="nope-2")(idp)
        await gw.login(idp)
        _header(kid="nope-3")(idp)
        await gw.login(idp)
        assert idp.jwks.call_count == 2  # the first fetch and one refetch
        gw.monotonic.advance(31)
        await gw.login(idp)
        assert idp.jwks.call_count == 3

    async def test_jwks_refetched_after_ttl(self, gw: Gateway, idp: FakeIdP) -> None:
        """The JWKS cache expires after metadata_ttl."""
        await gw.login(idp)
        gw.monotonic.advance(3601)
        await gw.login(idp)
        assert idp.jwks.call_count == 2
        assert idp.discovery.call_count == 2


class TestOversizedSession:
    async def test_refused_and_audited(self, gw: Gateway, idp: FakeIdP) -> None:
        """A session too large for a cookie is refused (session_too_large), never dropped."""
        idp.subject = "x" * 4000
        response = await gw.login(idp)
        assert response.status_code == 401
        assert gw.reasons("login_failure") == ["session_too_large"]


class TestNoRoleMapping:
    async def test_refused(self, gw: Gateway, idp: FakeIdP) -> None:
        """Claims mapping to no role and no grant: login refused with no_role_mapping."""
        idp.claims = {"roles": ["janitor"], "tenant": "school-a"}
        response = await gw.login(idp)
        assert response.status_code == 401
        assert gw.reasons("login_failure") == ["no_role_mapping"]


class TestReturnPath:
    @pytest.mark.parametrize(
        "target",
        [
            "//evil.test/x",
            "/\\evil.test",
            "https://evil.test/",
            "/%2F%2Fevil.test",
            "/%5Cevil.test",
            "%2F%2Fevil.test",
            "/a%0d%0aSet-Cookie:x=1",
            "/a\tb",
            "javascript:alert(1)",
            "/%252F%252Fevil.test",
            "/user@evil.test",
            "evil.test",
        ],
    )
    async def test_unsafe_next_becomes_root(self, gw: Gateway, idp: FakeIdP, target: str) -> None:
        """After login, an unsafe return path is replaced by /."""
        response = await gw.login(idp, next_path=target)
        assert response.headers["location"] == "/"

    @pytest.mark.parametrize("target", ["/home", "/schools/school-a/x?y=1&z=2", "/a%20b"])
    async def test_safe_next_kept(self, gw: Gateway, idp: FakeIdP, target: str) -> None:
        """A relative path on the gateway is kept as given."""
        response = await gw.login(idp, next_path=target)
        assert response.headers["location"] == target


class TestOutageNotThrottled:
    async def test_provider_outage_never_blocks(self, tmp_path: Path, idp: FakeIdP) -> None:
        """Failures caused by a provider outage do not count towards a block."""
        cfg = settings(tmp_path, **{"THROTTLE__MAX_FAILURES": "2"})
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        idp.discovery.mock(return_value=httpx.Response(503))
        for _ in range(4):
            assert (await gw.browser.get("/_gateway/login")).status_code == 503
        assert not [e for e in gw.sink.events if e["event.kind"] == "alert"]
        await gw.aclose()


class TestReturnOrigin:
    async def test_allow_listed_origin(self, tmp_path: Path, idp: FakeIdP) -> None:
        """A URL on an allow-listed origin is a valid return target; others are not."""
        cfg = settings(tmp_path, **{"OIDC__RETURN_ORIGINS": "https://app.example.nl"})
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        ok = await gw.login(idp, next_path="https://app.example.nl/start")
        assert ok.headers["location"] == "https://app.example.nl/start"
        other = await gw.login(idp, next_path="https://evil.test/start")
        assert other.headers["location"] == "/"
        await gw.aclose()


class TestThrottle:
    async def test_repeated_failures_throttled(self, tmp_path: Path, idp: FakeIdP) -> None:
        """After max_failures failed callbacks from one IP: 429 with Retry-After and an alert."""
        cfg = settings(tmp_path, **{"THROTTLE__MAX_FAILURES": "3"})
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        for _ in range(3):
            await gw.browser.get("/_gateway/callback?state=forged&code=c")
        response = await gw.browser.get("/_gateway/callback?state=forged&code=c")
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert gw.reasons("login_failure")[-1] == "throttled"
        alerts = [e for e in gw.sink.events if e["event.kind"] == "alert"]
        assert len(alerts) == 1
        assert (await gw.browser.get("/_gateway/login")).status_code == 429
        gw.clock.advance(15 * 60 + 1)
        assert (await gw.browser.get("/_gateway/login")).status_code == 303
        await gw.aclose()

    async def test_subject_throttled_across_addresses(self, tmp_path: Path, idp: FakeIdP) -> None:
        """Failures of one subject from many addresses block that subject (429 at callback)."""
        cfg = settings(tmp_path, **{"THROTTLE__MAX_FAILURES": "2"})
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        idp.claims = {"roles": ["janitor"]}
        for address in ("192.0.2.1", "192.0.2.2"):
            gw.browser = gw.client(address)
            assert (await gw.login(idp)).status_code == 401
        idp.claims = {"roles": ["teacher"], "tenant": "school-a"}
        gw.browser = gw.client("192.0.2.3")
        response = await gw.login(idp)
        assert response.status_code == 429
        assert gw.reasons("login_failure")[-1] == "throttled"
        await gw.aclose()


class Unreachable:
    """A shared state store that cannot be reached."""

    async def use_once(self, key: str, *, until: float) -> bool:
        raise StateUnavailable("store down")

    async def add_failure(self, key: str, *, window: float) -> int:
        raise StateUnavailable("store down")

    async def blocked(self, key: str) -> Block | None:
        raise StateUnavailable("store down")

    async def set_block(self, key: str, block: Block, *, forget_at: float) -> None:
        raise StateUnavailable("store down")

    async def aclose(self) -> None:
        return None


class TestSharedStateUnreachable:
    """Fail closed: without the shared state no login starts or completes."""

    async def test_login_start_refused(self, tmp_path: Path, idp: FakeIdP) -> None:
        """CWE-636: login answers 503 "login service unavailable", audited, no redirect."""
        gw = Gateway(tmp_path, clock=idp.clock, shared=Unreachable())
        response = await gw.browser.get("/_gateway/login")
        assert response.status_code == 503
        assert "The login service is unavailable right now" in response.text
        assert "location" not in response.headers
        assert gw.reasons("login_failure") == ["state_store_unavailable"]
        await gw.aclose()

    async def test_callback_refused(self, tmp_path: Path, idp: FakeIdP) -> None:
        """CWE-636: a callback whose state cannot be marked used is refused (never accepted
        without the single-use check), and no session is set."""
        shared = MemoryState(clock=idp.clock)
        gw = Gateway(tmp_path, clock=idp.clock, shared=shared)
        location = await gw.start_login()
        params = {"state": _query(location)["state"], "code": idp.authorize(location)}
        gw.oidc.login._shared = Unreachable()
        gw.oidc.throttle._store = Unreachable()
        response = await gw.browser.get("/_gateway/callback", params=params)
        assert response.status_code == 503
        assert "__Host-gw_session" not in response.headers.get("set-cookie", "")
        assert gw.reasons("login_failure") == ["state_store_unavailable"]
        assert idp.token.call_count == 0
        await gw.aclose()

    async def test_bearer_refused(self, tmp_path: Path, idp: FakeIdP) -> None:
        """CWE-636: a bearer request whose block status cannot be read is a 503, audited."""
        gw = Gateway(tmp_path, clock=idp.clock, shared=Unreachable())
        response = await gw.browser.get(
            "/api/x", headers={"authorization": "Bearer a.b.c", "accept": "application/json"}
        )
        assert response.status_code == 503
        assert response.json()["error"] == "login_unavailable"
        assert gw.reasons("bearer_token_rejected") == ["state_store_unavailable"]
        await gw.aclose()


class TestStaleFederatedRoles:
    async def test_removed_role_gone_after_roles_max_age(
        self, tmp_path: Path, idp: FakeIdP
    ) -> None:
        """A role the IdP no longer asserts keeps working only until roles_max_age after
        login; then the session is refused (``session_roles_stale``) and the next login
        carries the new roles."""
        cfg = settings(tmp_path, **{"SESSION__ROLES_MAX_AGE": "10m"})
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        assert (await gw.login(idp)).status_code == 303
        idp.claims = {"roles": ["student"], "tenant": "school-a"}  # teacher removed
        idp.clock.advance(599)
        assert (await gw.browser.get("/home")).status_code == 200
        assert gw.upstream.state.identity is not None
        assert gw.upstream.state.identity.roles == {"teacher"}
        idp.clock.advance(1)
        stale = await gw.browser.get("/home")
        assert stale.status_code == 303
        assert stale.headers["location"].startswith("/_gateway/login")
        assert gw.reasons("session_rejected") == ["session_roles_stale"]
        assert (await gw.login(idp)).status_code == 303
        assert (await gw.browser.get("/home")).status_code == 200
        assert gw.upstream.state.identity is not None
        assert gw.upstream.state.identity.roles == {"student"}
        successes = [e for e in gw.sink.events if e["event.action"] == "login_success"]
        assert [e["user.roles"] for e in successes] == [["teacher"], ["student"]]
        await gw.aclose()


class TestSilentRelogin:
    """After ``roles_max_age`` the next login first tries ``prompt=none`` at the same issuer."""

    @staticmethod
    async def _stale(tmp_path: Path, idp: FakeIdP, **environ: str) -> tuple[Gateway, str]:
        cfg = settings(tmp_path, SESSION__ROLES_MAX_AGE="10m", **environ)
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        assert (await gw.login(idp)).status_code == 303
        idp.clock.advance(600)
        stale = await gw.browser.get("/home")
        assert stale.status_code == 303
        assert any("__Host-gw_relogin=v1" in c for c in stale.headers.get_list("set-cookie"))
        return gw, stale.headers["location"]

    async def test_stale_roles_try_prompt_none(self, tmp_path: Path, idp: FakeIdP) -> None:
        """The login after a stale session asks the issuer with ``prompt=none`` and spends
        the hint (single use)."""
        gw, login = await self._stale(tmp_path, idp)
        to_idp = await gw.browser.get(login)
        assert to_idp.status_code == 303
        query = parse_qs(urlsplit(to_idp.headers["location"]).query)
        assert query["prompt"] == ["none"]
        cleared = [c for c in to_idp.headers.get_list("set-cookie") if "gw_relogin" in c]
        assert cleared and "Max-Age=0" in cleared[0]
        again = await gw.browser.get(login)
        assert "prompt" not in parse_qs(urlsplit(again.headers["location"]).query)
        await gw.aclose()

    async def test_silent_success_carries_new_roles(self, tmp_path: Path, idp: FakeIdP) -> None:
        """With the person still signed in at the issuer, the silent answer logs them in
        with the roles of fresh claims, no form involved."""
        gw, login = await self._stale(tmp_path, idp)
        idp.claims = {"roles": ["student"], "tenant": "school-a"}
        location = (await gw.browser.get(login)).headers["location"]
        state_value = parse_qs(urlsplit(location).query)["state"][0]
        done = await gw.browser.get(
            "/_gateway/callback", params={"state": state_value, "code": idp.authorize(location)}
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/home"
        assert (await gw.browser.get("/home")).status_code == 200
        assert gw.upstream.state.identity is not None
        assert gw.upstream.state.identity.roles == {"student"}
        await gw.aclose()

    @pytest.mark.parametrize("error", ["login_required", "interaction_required"])
    async def test_login_required_falls_back_to_interactive(
        self, tmp_path: Path, idp: FakeIdP, error: str
    ) -> None:
        """The issuer needs the person: audited (``idp_error``, label ``prompt: none``), not
        counted as a failed attempt, and the interactive login starts at once with a new
        state and the same return path."""
        gw, login = await self._stale(tmp_path, idp, THROTTLE__MAX_FAILURES="1")
        location = (await gw.browser.get(login)).headers["location"]
        silent_state = parse_qs(urlsplit(location).query)["state"][0]
        answer = await gw.browser.get(
            "/_gateway/callback", params={"state": silent_state, "error": error}
        )
        assert answer.status_code == 303
        interactive = answer.headers["location"]
        assert interactive.startswith(f"{ISSUER}/authorize?")
        query = parse_qs(urlsplit(interactive).query)
        assert "prompt" not in query
        assert query["state"][0] != silent_state
        event = [e for e in gw.sink.events if e["event.action"] == "login_failure"][-1]
        assert event["event.reason"] == "idp_error"
        assert event["labels"]["prompt"] == "none"
        assert error in event["error.message"]
        done = await gw.browser.get(
            "/_gateway/callback",
            params={"state": query["state"][0], "code": idp.authorize(interactive)},
        )
        assert done.status_code == 303  # not 429: the silent answer was not counted
        assert done.headers["location"] == "/home"
        await gw.aclose()

    async def test_other_error_is_a_failure(self, tmp_path: Path, idp: FakeIdP) -> None:
        """Any other error to a silent request (``access_denied``) fails the login as usual."""
        gw, login = await self._stale(tmp_path, idp)
        location = (await gw.browser.get(login)).headers["location"]
        silent_state = parse_qs(urlsplit(location).query)["state"][0]
        answer = await gw.browser.get(
            "/_gateway/callback", params={"state": silent_state, "error": "access_denied"}
        )
        assert answer.status_code == 401
        assert gw.reasons("login_failure")[-1] == "idp_error"
        await gw.aclose()

    async def test_login_required_to_interactive_request_fails(
        self, gw: Gateway, idp: FakeIdP
    ) -> None:
        """``login_required`` answering a request that was not silent starts nothing."""
        location = await gw.start_login()
        assert "prompt" not in parse_qs(urlsplit(location).query)
        state_value = parse_qs(urlsplit(location).query)["state"][0]
        answer = await gw.browser.get(
            "/_gateway/callback", params={"state": state_value, "error": "login_required"}
        )
        assert answer.status_code == 401

    async def test_forged_hint_ignored(self, gw: Gateway) -> None:
        """A hint cookie that is not sealed with the session keys changes nothing."""
        gw.browser.cookies.set("__Host-gw_relogin", "v1.forged", domain=HOST)
        location = await gw.start_login()
        assert "prompt" not in parse_qs(urlsplit(location).query)
