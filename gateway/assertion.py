"""The identity assertion: a short-lived JWT the gateway signs for the upstream.

The upstream cannot tell our ``X-Gateway-*`` headers from forged ones on its own; the assertion
(``X-Gateway-Assertion``) lets it verify them. Claims::

    iss   the gateway's issuer URL              aud   the upstream's audience
    sub   "issuer|subject" (absent: anonymous)  auth  anonymous | session | bearer
    roles sorted list                           tenant  school or supplier id, or absent
    iat, nbf, exp  (lifetime DEFAULT_LIFETIME seconds)

Signed with ES256 (P-256) or Ed25519 (RFC 9864 name ``Ed25519``), chosen by the key. Keys
rotate: the first key signs, every key is published in the JWKS (``/_gateway/jwks.json``), so
an upstream keeps accepting assertions signed with the previous key while it is listed. Each
key's ``kid`` is its RFC 7638 thumbprint unless given.

Signing costs tens of microseconds; the signer reuses one assertion per identity for
``reuse`` seconds (well inside its lifetime) so a busy user does not cost a signature per request.
A reused assertion is the very token issued first (same ``iat``/``nbf``/``exp``), so an upstream
always gets at least ``lifetime - reuse`` seconds of validity; there is no ``jti``: the assertion
says who is asking, it is not a one-time credential (an upstream that wanted replay protection
per request would need one signature per request, tens of microseconds each). The reuse is
looked up by the identity object first (the authenticators hand out one object per session or
token: hashing a frozen dataclass runs Python code, about 0.3 µs), then by equality.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeyParameters, KeySet, OKPKey

from gateway.types import Identity

__all__ = [
    "ALGORITHMS",
    "DEFAULT_LIFETIME",
    "DEFAULT_REUSE",
    "AssertionSigner",
    "InvalidAssertion",
    "KeyKind",
    "SigningKey",
    "generate_key",
    "load_key",
    "verify_assertion",
]

#: Seconds an assertion is valid.
DEFAULT_LIFETIME = 60
#: Seconds one signed assertion is reused for the same identity.
DEFAULT_REUSE = 10
#: The cache of reused assertions is cleared when it holds this many identities.
_CACHE_LIMIT = 10_000

SigningKey = ECKey | OKPKey
KeyKind = Literal["ES256", "Ed25519"]
#: The algorithms we sign with and accept; nothing else verifies.
ALGORITHMS = ("ES256", "Ed25519")


class InvalidAssertion(ValueError):
    """An assertion failed verification (signature, algorithm, issuer, audience or time)."""


def _alg(key: SigningKey) -> str:
    if isinstance(key, ECKey):
        if key.curve_name != "P-256":
            raise ValueError("EC assertion keys must be on P-256 (ES256)")
        return "ES256"
    if key.curve_name != "Ed25519":
        raise ValueError("OKP assertion keys must be Ed25519")
    return "Ed25519"


def generate_key(kind: KeyKind = "ES256") -> SigningKey:
    """A new private signing key with its thumbprint as ``kid``."""
    key: SigningKey
    if kind == "ES256":
        key = ECKey.generate_key("P-256", auto_kid=True)
    elif kind == "Ed25519":
        key = OKPKey.generate_key("Ed25519", auto_kid=True)
    else:
        raise ValueError(f"unknown key kind {kind!r}: choose 'ES256' or 'Ed25519'")
    return key


def load_key(pem: bytes, *, kid: str | None = None) -> SigningKey:
    """A private key from PEM (P-256 or Ed25519); ``kid`` defaults to the thumbprint."""
    key: SigningKey
    try:
        key = ECKey.import_key(pem)
    except (ValueError, TypeError, JoseError):
        try:
            key = OKPKey.import_key(pem)
        except (ValueError, TypeError, JoseError) as exc:
            raise ValueError("not a P-256 or Ed25519 private key in PEM form") from exc
    if not key.is_private:
        raise ValueError("the assertion signing key must be a private key")
    _alg(key)
    params: KeyParameters = {"kid": kid or key.thumbprint()}
    return type(key).import_key(key.as_dict(private=True), params)


class AssertionSigner:
    """Signs assertions with ``keys[0]`` and publishes every key's public half."""

    def __init__(
        self,
        *,
        keys: Sequence[SigningKey],
        issuer: str,
        audience: str,
        lifetime: int = DEFAULT_LIFETIME,
        reuse: int = DEFAULT_REUSE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        if not issuer or not audience:
            raise ValueError("issuer and audience must be non-empty")
        if lifetime < 5:
            raise ValueError("lifetime must be at least 5 seconds")
        if not 0 <= reuse <= lifetime // 2:
            raise ValueError("reuse must be between 0 and half the lifetime")
        kids = [key.kid for key in keys]
        if any(not kid for kid in kids) or len(set(kids)) != len(kids):
            raise ValueError("every signing key needs a distinct kid")
        for key in keys:
            if not key.is_private:
                raise ValueError("signing keys must be private keys")
        self._key = keys[0]
        self._alg = _alg(keys[0])
        self._header = {"alg": self._alg, "kid": keys[0].kid, "typ": "JWT"}
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime
        self._reuse = reuse
        self._clock = clock
        self._cache: dict[Identity, tuple[int, str]] = {}
        # id(identity) -> (identity, issued at, token): the same entries found without hashing
        # (the entry holds the object, so its id is not reused while the entry lives).
        self._by_object: dict[int, tuple[Identity, int, str]] = {}
        self._jwks = {
            "keys": [{**key.as_dict(private=False), "use": "sig", "alg": _alg(key)} for key in keys]
        }
        self._jwks_json = json.dumps(self._jwks, separators=(",", ":")).encode()

    def sign(self, who: Identity) -> str:
        """The assertion for ``who``, reused for up to ``reuse`` seconds."""
        now = int(self._clock())
        seen = self._by_object.get(id(who))
        if seen is not None and seen[0] is who and now - seen[1] < self._reuse:
            return seen[2]
        cached = self._cache.get(who)
        if cached is not None and now - cached[0] < self._reuse:
            self._keep_object(who, cached[0], cached[1])
            return cached[1]
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + self._lifetime,
            "auth": who.method,
            "roles": sorted(who.roles),
        }
        if who.user_id is not None:
            claims["sub"] = who.user_id
        if who.tenant is not None:
            claims["tenant"] = who.tenant
        token = jwt.encode(self._header, claims, self._key, algorithms=[self._alg])
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[who] = (now, token)
        self._keep_object(who, now, token)
        return token

    def _keep_object(self, who: Identity, issued: int, token: str) -> None:
        if len(self._by_object) >= _CACHE_LIMIT:
            self._by_object.clear()
        self._by_object[id(who)] = (who, issued, token)

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWKS document (a fresh copy)."""
        return json.loads(self._jwks_json)  # type: ignore[no-any-return]

    def jwks_json(self) -> bytes:
        """The body of ``/_gateway/jwks.json``."""
        return self._jwks_json


def verify_assertion(
    token: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    now: int | None = None,
    leeway: int = 5,
) -> dict[str, Any]:
    """The claims of a valid assertion; raises :class:`InvalidAssertion` otherwise.

    Checks the signature against ``jwks`` (by ``kid``), pins the algorithms to
    :data:`ALGORITHMS`, and requires ``iss``, ``aud``, ``exp`` and ``iat``.
    """
    try:
        key_set = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        decoded = jwt.decode(token, key_set, algorithms=list(ALGORITHMS))
        registry = jwt.JWTClaimsRegistry(
            now=now if now is not None else int(time.time()),
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            iat={"essential": True},
        )
        registry.validate(decoded.claims)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidAssertion(f"invalid assertion: {type(exc).__name__}") from exc
    return decoded.claims
