"""gateway/oidc/_provider.py: discovery and JWKS, checked and cached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from gateway.oidc import Provider
from gateway.oidc.errors import InvalidToken, ProviderUnavailable
from gateway.settings import IssuerSettings
from tests.gateway.oidc._idp import ISSUER, FakeIdP
from tests.gateway.oidc._support import Clock


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def _provider(client: httpx.AsyncClient, clock: Clock | None = None) -> Provider:
    return Provider(
        name="testidp",
        settings=IssuerSettings(
            discovery_url=f"{ISSUER}/.well-known/openid-configuration", client_id="c"
        ),
        client=client,
        metadata_ttl=3600,
        refetch_cooldown=30,
        clock=clock or Clock(),
    )


def _doc(**changes: Any) -> dict[str, Any]:
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


class TestDiscovery:
    async def test_metadata_cached(
        self, client: httpx.AsyncClient, respx_mock: respx.MockRouter
    ) -> None:
        """Discovery is fetched once within its TTL."""
        route = respx_mock.get(f"{ISSUER}/.well-known/openid-configuration").mock(
            return_value=httpx.Response(200, json=_doc())
        )
        provider = _provider(client)
        await provider.metadata()
        await provider.metadata()
        assert route.call_count == 1

    @pytest.mark.parametrize(
        ("response", "detail"),
        [
            (httpx.Response(200, json=_doc(issuer="https://evil.test")), "does not match"),
            (httpx.Response(200, json=_doc(token_endpoint="http://idp.test/t")), "not https"),
            (httpx.Response(200, json=_doc(jwks_uri=None)), "jwks_uri"),
            (httpx.Response(200, text="not json"), "not JSON"),
            (httpx.Response(200, json=[1, 2]), "not a JSON object"),
            (httpx.Response(200, content=b"{" + b" " * 600_000 + b"}"), "too large"),
            (httpx.Response(503), "answered 503"),
        ],
    )
    async def test_bad_discovery(
        self,
        client: httpx.AsyncClient,
        respx_mock: respx.MockRouter,
        response: httpx.Response,
        detail: str,
    ) -> None:
        """A discovery document that cannot be trusted is refused with a reason."""
        respx_mock.get(f"{ISSUER}/.well-known/openid-configuration").mock(return_value=response)
        with pytest.raises(ProviderUnavailable, match=detail):
            await _provider(client).metadata()

    async def test_unreachable(
        self, client: httpx.AsyncClient, respx_mock: respx.MockRouter
    ) -> None:
        """A provider that cannot be reached is ProviderUnavailable, never an httpx error."""
        respx_mock.get(f"{ISSUER}/.well-known/openid-configuration").mock(
            side_effect=httpx.ConnectTimeout("timeout")
        )
        with pytest.raises(ProviderUnavailable):
            await _provider(client).metadata()


class TestKeys:
    async def test_encryption_keys_ignored(
        self, client: httpx.AsyncClient, respx_mock: respx.MockRouter
    ) -> None:
        """A JWKS key marked use=enc never verifies a signature."""
        idp = FakeIdP(respx_mock)
        enc = idp.signing_key.as_dict(private=False)
        enc["use"] = "enc"
        idp.rotate("k2")
        signing = idp.signing_key.as_dict(private=False)
        respx_mock.get(f"{ISSUER}/jwks").mock(
            return_value=httpx.Response(200, json={"keys": [enc, signing]})
        )
        provider = _provider(client)
        assert (await provider.key_for("k2")).kid == "k2"
        with pytest.raises(InvalidToken, match="unknown_kid"):
            await provider.key_for("k1")

    async def test_no_kid_single_key(
        self, client: httpx.AsyncClient, respx_mock: respx.MockRouter
    ) -> None:
        """A token without kid is matched only when the JWKS has exactly one key."""
        idp = FakeIdP(respx_mock)
        provider = _provider(client)
        assert (await provider.key_for(None)).kid == "k1"
        idp.rotate("k2")
        await provider.key_for("k2")
        with pytest.raises(InvalidToken):
            await provider.key_for(None)

    async def test_bad_jwks(self, client: httpx.AsyncClient, respx_mock: respx.MockRouter) -> None:
        """A JWKS without usable keys is ProviderUnavailable."""
        FakeIdP(respx_mock)
        respx_mock.get(f"{ISSUER}/jwks").mock(return_value=httpx.Response(200, json={"x": 1}))
        with pytest.raises(ProviderUnavailable):
            await _provider(client).key_for("k1")
