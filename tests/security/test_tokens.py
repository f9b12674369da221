"""Bearer tokens: only an access token the configured issuer signed, for our audience, is an
identity.

A genuine access token is obtained from the dev identity provider (code flow with PKCE, as
the gateway's client) as the control; every forgery below must be a 401 on a protected and on
a public route. Guards CVE-2015-9235 (``alg=none``), CVE-2016-10555 (HMAC signed with the RSA
public key), CVE-2018-0114 (embedded ``jwk`` header), the ``jku``/``x5u`` header SSRF class,
``kid`` injection (CWE-22 in ``kid``), CWE-347 (improper verification of a signature: a
changed payload), CWE-287 with a token for another audience (the ID token), and the
unknown-``kid`` JWKS refetch flood (CWE-400).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.security._harness import Deployment, b64url, deployed, idp_tokens, person

PROTECTED = "/api/me"
PUBLIC = "/activities"
UNKNOWN_KID_FLOOD = 30
MAX_JWKS_FETCHES_FOR_FLOOD = 3


_b64 = b64url


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _hs256(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The deployment with the bearer throttle out of the way (it would answer 429 after a
    few failures and hide whether each forgery is refused on its own merits)."""
    environ = {"GATEWAY_THROTTLE__MAX_FAILURES": "100000"}
    with deployed(tmp_path_factory.mktemp("tokens"), environ) as running:
        yield running


@pytest.fixture(scope="module")
def genuine(deployment: Deployment) -> dict[str, str]:
    return idp_tokens(deployment)


@pytest.fixture(scope="module")
def forgeries(deployment: Deployment, genuine: dict[str, str]) -> dict[str, str]:
    return _forgeries(deployment, genuine["access_token"])


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _sig = token.split(".")
    header: dict[str, Any] = json.loads(_unb64(head))
    claims: dict[str, Any] = json.loads(_unb64(body))
    return header, claims


def _forgeries(deployment: Deployment, access: str) -> dict[str, str]:
    header, claims = _parts(access)
    admin = {**claims, "sub": "demo-platform-admin", "roles": ["platform_admin"]}
    jwks = httpx.get(f"{deployment.idp_url}/jwks").json()
    public_jwk = jwks["keys"][0]
    n = _unb64(public_jwk["n"])
    own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    own_numbers = own.public_key().public_numbers()
    own_jwk = {
        "kty": "RSA",
        "n": _b64(own_numbers.n.to_bytes(256, "big")),
        "e": _b64(own_numbers.e.to_bytes(3, "big")),
        "kid": "attacker",
    }
    embedded_header = {"alg": "RS256", "typ": "JWT", "jwk": own_jwk, "kid": "attacker"}
    signing_input = (
        f"{_b64(json.dumps(embedded_header).encode())}.{_b64(json.dumps(admin).encode())}"
    )
    embedded_sig = own.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    head, body, signature = access.split(".")
    pem_like = json.dumps(public_jwk).encode()
    return {
        "alg-none": _token({"alg": "none", "typ": "JWT"}, admin),
        "alg-None": _token({"alg": "None", "typ": "JWT"}, admin),
        "alg-NONE-kid": _token({"alg": "NONE", "kid": header.get("kid")}, admin),
        "alg-none-with-sig": _token({"alg": "none"}, admin, b"x"),
        "hs256-public-jwk": _hs256({"alg": "HS256", "kid": header.get("kid")}, admin, pem_like),
        "hs256-public-n": _hs256({"alg": "HS256", "kid": header.get("kid")}, admin, n),
        "hs256-empty-key": _hs256({"alg": "HS256"}, admin, b""),
        "embedded-jwk": f"{signing_input}.{_b64(embedded_sig)}",
        "jku-evil": _token({**header, "jku": "https://evil.example/jwks"}, admin, b"x" * 256),
        "x5u-evil": _token({**header, "x5u": "https://evil.example/cert"}, admin, b"x" * 256),
        "kid-traversal": _hs256({"alg": "HS256", "kid": "../../../../dev/null"}, admin, b""),
        "kid-sql": _hs256({"alg": "HS256", "kid": "x' UNION SELECT 'k"}, admin, b"k"),
        "payload-swapped": f"{head}.{_b64(json.dumps(admin).encode())}.{signature}",
        "signature-stripped": f"{head}.{body}.",
        "signature-truncated": f"{head}.{body}.{signature[:-4]}",
        "two-parts": f"{head}.{body}",
        "four-parts": f"{access}.x",
        "garbage": "not-a-token",
        "empty-header": f".{body}.{signature}",
    }


FORGERY_NAMES = [
    "alg-none",
    "alg-None",
    "alg-NONE-kid",
    "alg-none-with-sig",
    "hs256-public-jwk",
    "hs256-public-n",
    "hs256-empty-key",
    "embedded-jwk",
    "jku-evil",
    "x5u-evil",
    "kid-traversal",
    "kid-sql",
    "payload-swapped",
    "signature-stripped",
    "signature-truncated",
    "two-parts",
    "four-parts",
    "garbage",
    "empty-header",
]


def _get(deployment: Deployment, path: str, token: str) -> httpx.Response:
    with deployment.client() as client:
        return client.get(path, headers={"Authorization": f"Bearer {token}"})


class TestGenuineToken:
    """Control: the genuine access token is an identity."""

    def test_access_token_is_accepted(
        self, deployment: Deployment, genuine: dict[str, str]
    ) -> None:
        """Baseline for the forgeries: the IdP's own access token reaches the protected
        route as the student."""
        response = _get(deployment, PROTECTED, genuine["access_token"])
        assert response.status_code == 200, response.text
        subjects = [v for k, v in response.json()["headers"] if k == "x-gateway-subject"]
        assert subjects == [person("student").subject]

    def test_id_token_is_not_an_access_token(
        self, deployment: Deployment, genuine: dict[str, str]
    ) -> None:
        """CWE-287 (token for another audience): the ID token (audience ``gateway``, not the
        API audience) is refused as a bearer token."""
        response = _get(deployment, PROTECTED, genuine["id_token"])
        assert response.status_code == 401, response.text


class TestForgedTokens:
    """Every forgery is a 401, on protected and public routes alike."""

    @pytest.mark.parametrize("name", FORGERY_NAMES)
    @pytest.mark.parametrize("path", [PROTECTED, PUBLIC])
    def test_forgery_is_refused(
        self, deployment: Deployment, forgeries: dict[str, str], name: str, path: str
    ) -> None:
        """CVE-2015-9235 / CVE-2016-10555 / CVE-2018-0114 / CWE-347: the forged token is a
        401 and nothing is forwarded."""
        response = _get(deployment, path, forgeries[name])
        assert response.status_code == 401, response.text
        assert "raw_path" not in response.text


class TestUnknownKidFlood:
    """Tokens with unknown key ids cannot make the gateway hammer the JWKS endpoint."""

    def test_jwks_refetch_is_rate_limited(
        self, deployment: Deployment, genuine: dict[str, str]
    ) -> None:
        """CWE-400 (unknown-``kid`` flood): many tokens with fresh unknown ``kid`` values are
        all refused, with at most a few JWKS fetches."""
        header, claims = _parts(genuine["access_token"])
        before = deployment.idp_hits.get("/jwks", 0)
        with deployment.client() as client:
            for number in range(UNKNOWN_KID_FLOOD):
                token = _token({**header, "kid": f"unknown-{number}"}, claims, b"x" * 256)
                response = client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 401, response.text
        fetches = deployment.idp_hits.get("/jwks", 0) - before
        assert fetches <= MAX_JWKS_FETCHES_FOR_FLOOD, fetches


def test_forgery_list_is_complete(forgeries: dict[str, str]) -> None:
    """The parametrised names and the built forgeries are the same set (none silently
    untested)."""
    assert set(FORGERY_NAMES) == set(forgeries)
