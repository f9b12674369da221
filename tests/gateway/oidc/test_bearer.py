"""gateway/oidc/_bearer.py: bearer JWT access tokens for API clients."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from tests.gateway.oidc._idp import ISSUER, FakeIdP, Gateway, hmac_key, settings


@pytest.fixture
def idp(respx_mock: respx.MockRouter) -> FakeIdP:
    return FakeIdP(respx_mock)


@pytest.fixture
async def gw(tmp_path: Path, idp: FakeIdP) -> AsyncIterator[Gateway]:
    gateway = Gateway(tmp_path, clock=idp.clock)
    yield gateway
    await gateway.aclose()


def _token(idp: FakeIdP, **claims: Any) -> str:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "sub": "supplier-system",
        "aud": "platform-api",
        "exp": now + 300,
        "roles": ["supplier"],
        "tenant": "org-x",
        **claims,
    }
    return idp.sign({k: v for k, v in base.items() if v is not None})


async def _call(gw: Gateway, token: str, path: str = "/api/x") -> httpx.Response:
    return await gw.browser.get(
        path, headers={"authorization": f"Bearer {token}", "accept": "application/json"}
    )


class TestBearer:
    async def test_valid_token(self, gw: Gateway, idp: FakeIdP) -> None:
        """A valid token from a configured issuer and audience is an identity."""
        response = await _call(gw, _token(idp))
        assert response.status_code == 200
        who = gw.upstream.state.identity
        assert who is not None
        assert who.method == "bearer"
        assert who.roles == {"supplier"}
        assert who.tenant == "org-x"

    async def test_cached_until_exp(self, gw: Gateway, idp: FakeIdP) -> None:
        """A verified token is not verified again, and never used past its exp."""
        token = _token(idp, exp=int(time.time()) + 120)
        await _call(gw, token)
        await _call(gw, token)
        assert idp.jwks.call_count == 1
        assert len(gw.oidc.bearer_authenticator._cache) == 1
        gw.clock.advance(200)
        response = await _call(gw, token)
        assert response.status_code == 401

    async def test_cached_token_not_decoded_again(
        self, gw: Gateway, idp: FakeIdP, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A token verified before is found by its hash alone; another token (same issuer,
        audience and subject) is not, and is decoded and verified itself."""
        from gateway.oidc._tokens import peek  # noqa: PLC0415 - the decode that is counted

        decoded: list[str] = []

        def counting_peek(token: str) -> Any:
            decoded.append(token)
            return peek(token)

        monkeypatch.setattr("gateway.oidc._bearer.peek", counting_peek)
        first, second = _token(idp, jti="one"), _token(idp, jti="two")
        assert [(await _call(gw, first)).status_code for _ in range(3)] == [200] * 3
        assert decoded == [first]
        assert (await _call(gw, second)).status_code == 200
        assert decoded == [first, second]

    @pytest.mark.parametrize(
        ("claims", "reason"),
        [
            ({"aud": "gateway-client"}, "invalid_token"),
            ({"iss": "https://evil.test"}, "unknown_issuer"),
            ({"exp": int(time.time()) - 3600}, "expired"),
            ({"exp": None}, "invalid_token"),
            ({"nbf": int(time.time()) + 3600}, "invalid_token"),
            ({"roles": ["janitor"]}, "no_role_mapping"),
        ],
    )
    async def test_rejected(
        self, gw: Gateway, idp: FakeIdP, claims: dict[str, Any], reason: str
    ) -> None:
        """A token breaking a rule: 401 with WWW-Authenticate, never a redirect; audited."""
        response = await _call(gw, _token(idp, **claims))
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert gw.reasons("bearer_token_rejected") == [reason]

    async def test_rejection_refers_to_token_by_hash(self, gw: Gateway, idp: FakeIdP) -> None:
        """The event carries the token's hash, never the token."""
        token = _token(idp, aud="wrong")
        await _call(gw, token)
        event = next(e for e in gw.sink.events if e["event.action"] == "bearer_token_rejected")
        assert len(event["labels"]["token_hash"]) == 32
        assert token not in repr(gw.sink.events)
        assert token.split(".")[2] not in repr(gw.sink.events)

    async def test_hmac_token_refused(self, gw: Gateway, idp: FakeIdP) -> None:
        """An HS256 token is refused by the algorithm allow-list."""
        idp.algorithm, idp.signing_key = "HS256", hmac_key("k1")
        assert (await _call(gw, _token(idp))).status_code == 401

    @pytest.mark.parametrize("token", ["abc", "a.b.c", "x" * 20000, ""])
    async def test_garbage(self, gw: Gateway, token: str) -> None:
        """Malformed tokens are 401, never a 500."""
        assert (await _call(gw, token)).status_code == 401

    async def test_other_schemes_declined(self, gw: Gateway) -> None:
        """Basic credentials are not a bearer token: anonymous (401 from the policy)."""
        response = await gw.browser.get(
            "/api/x", headers={"authorization": "Basic eDp5", "accept": "application/json"}
        )
        assert response.status_code == 401
        assert gw.reasons("bearer_token_rejected") == []

    async def test_issuer_without_audiences_not_accepted(
        self, tmp_path: Path, idp: FakeIdP
    ) -> None:
        """An issuer with no configured audiences accepts no bearer tokens."""
        cfg = settings(tmp_path, **{"OIDC__ISSUERS__TESTIDP__AUDIENCES": "[]"})
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        assert (await _call(gw, _token(idp))).status_code == 401
        assert gw.reasons("bearer_token_rejected") == ["unknown_issuer"]
        await gw.aclose()


class TestBearerThrottle:
    async def test_blocked_client_gets_429(self, tmp_path: Path, idp: FakeIdP) -> None:
        """After max_failures rejected tokens from one IP: 429 with Retry-After and an alert."""
        cfg = settings(tmp_path, **{"THROTTLE__MAX_FAILURES": "3"})
        gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
        for _ in range(3):
            assert (await _call(gw, "bad.token.x")).status_code == 401
        response = await _call(gw, _token(idp))
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert [e["event.action"] for e in gw.sink.events if e["event.kind"] == "alert"] == [
            "bearer_throttled"
        ]
        gw.clock.advance(15 * 60 + 1)
        later = int(gw.clock())
        assert (await _call(gw, _token(idp, exp=later + 300))).status_code == 200
        await gw.aclose()


OPAQUE = "opaque-access-token-0123456789"


def _active(**claims: Any) -> dict[str, Any]:
    # Some bodies are built when the parametrize list is collected, long before a slow full
    # run reaches the test: a day of validity keeps "expired" out of the other cases.
    now = int(time.time())
    body = {
        "active": True,
        "sub": "supplier-system",
        "aud": "platform-api",
        "exp": now + 86400,
        "roles": ["supplier"],
        "tenant": "org-x",
        **claims,
    }
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
async def introspecting(tmp_path: Path, idp: FakeIdP) -> AsyncIterator[Gateway]:
    cfg = settings(tmp_path, **{"OIDC__ISSUERS__TESTIDP__INTROSPECTION": "true"})
    gateway = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg)
    yield gateway
    await gateway.aclose()


class TestIntrospection:
    async def test_active_token(self, introspecting: Gateway, idp: FakeIdP) -> None:
        """An opaque token the provider calls active is an identity, client-authenticated."""
        idp.introspection_body = _active()
        response = await _call(introspecting, OPAQUE)
        assert response.status_code == 200
        who = introspecting.upstream.state.identity
        assert who is not None
        assert who.roles == {"supplier"}
        assert who.issuer == ISSUER
        sent = idp.introspection.calls.last.request
        assert sent.headers["authorization"].startswith("Basic ")
        assert b"token=opaque-access-token" in sent.content

    @pytest.mark.parametrize(
        ("claims", "reason"),
        [
            (None, "invalid_token"),
            ({"aud": "other"}, "invalid_token"),
            ({"iss": "https://evil.test"}, "invalid_token"),
            ({"exp": -3600}, "expired"),
            ({"exp": None}, "invalid_token"),
            ({"token_type": "refresh_token"}, "invalid_token"),
            ({"roles": ["janitor"]}, "no_role_mapping"),
        ],
    )
    async def test_refused(
        self, introspecting: Gateway, idp: FakeIdP, claims: dict[str, Any] | None, reason: str
    ) -> None:
        """Inactive or unfit tokens are 401 with the reason audited."""
        # Built at run time, not at collection: a token minted when the suite was collected
        # has expired by the time a slow run reaches this test. ``exp`` is relative to now.
        if claims is None:
            idp.introspection_body = {"active": False}
        else:
            if isinstance(claims.get("exp"), int):
                claims = {**claims, "exp": int(time.time()) + claims["exp"]}
            idp.introspection_body = _active(**claims)
        assert (await _call(introspecting, OPAQUE)).status_code == 401
        assert introspecting.reasons("bearer_token_rejected") == [reason]

    async def test_provider_failure(self, introspecting: Gateway, idp: FakeIdP) -> None:
        """An introspection endpoint that fails is idp_error, not a 500."""
        idp.introspection.mock(return_value=httpx.Response(500))
        assert (await _call(introspecting, OPAQUE)).status_code == 401
        assert introspecting.reasons("bearer_token_rejected") == ["idp_error"]

    async def test_cached_for_a_minute(self, introspecting: Gateway, idp: FakeIdP) -> None:
        """The answer is reused for at most a minute, then asked again."""
        idp.introspection_body = _active()
        await _call(introspecting, OPAQUE)
        await _call(introspecting, OPAQUE)
        assert idp.introspection.call_count == 1
        introspecting.clock.advance(61)
        await _call(introspecting, OPAQUE)
        assert idp.introspection.call_count == 2

    async def test_jwt_not_introspected(self, introspecting: Gateway, idp: FakeIdP) -> None:
        """JWTs are verified locally, never sent to introspection."""
        assert (await _call(introspecting, _token(idp))).status_code == 200
        assert idp.introspection.call_count == 0

    async def test_opaque_refused_without_introspection(self, gw: Gateway, idp: FakeIdP) -> None:
        """Without an introspecting issuer an opaque token is simply invalid."""
        assert (await _call(gw, OPAQUE)).status_code == 401
        assert idp.introspection.call_count == 0
