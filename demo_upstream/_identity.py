"""What the demo upstream knows about the caller: the headers the gateway set, and the assertion.

The plain ``X-Gateway-*`` headers are informative only; trust comes from the assertion, verified
with the gateway's public keys (a JWKS document given as a mapping, a file, or a URL fetched on
first use and again at most every ``JWKS_TTL`` seconds), algorithms pinned, ``iss``, ``aud``,
``exp`` and ``iat`` required.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

#: Seconds a JWKS fetched from a URL is kept.
JWKS_TTL = 300.0
#: Algorithms an assertion may use.
ALGORITHMS = ("ES256", "Ed25519")
#: Headers echoed back (the assertion itself is reported as verified or not, not echoed).
ECHOED_PREFIXES = ("x-gateway-", "x-forwarded-")
ECHOED = ("x-request-id",)
ASSERTION_HEADER = "x-gateway-assertion"


class AssertionChecker:
    """Verifies ``X-Gateway-Assertion`` headers against the gateway's JWKS."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: Mapping[str, Any] | None = None,
        jwks_file: Path | None = None,
        jwks_url: str | None = None,
        leeway: int = 5,
    ) -> None:
        if sum(x is not None for x in (jwks, jwks_file, jwks_url)) != 1:
            raise ValueError("give exactly one of jwks, jwks_file, jwks_url")
        if jwks_file is not None:
            jwks = json.loads(jwks_file.read_text())
        self._keys = KeySet.import_key_set(dict(jwks)) if jwks is not None else None  # type: ignore[arg-type]
        self._url = jwks_url
        self._fetched = 0.0
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    async def _key_set(self) -> KeySet:
        if self._url is not None and (
            self._keys is None or time.monotonic() - self._fetched > JWKS_TTL
        ):
            async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
                response = await client.get(self._url)
                response.raise_for_status()
            self._keys = KeySet.import_key_set(response.json())
            self._fetched = time.monotonic()
        if self._keys is None:
            raise ValueError("no JWKS")
        return self._keys

    async def check(self, token: str) -> dict[str, Any]:
        """``{"valid": True, "claims": ...}`` or ``{"valid": False, "error": ...}``."""
        try:
            keys = await self._key_set()
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
            jwt.JWTClaimsRegistry(
                leeway=self._leeway,
                iss={"essential": True, "value": self._issuer},
                aud={"essential": True, "value": self._audience},
                exp={"essential": True},
                iat={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, KeyError, httpx.HTTPError) as exc:
            return {"valid": False, "error": type(exc).__name__}
        return {"valid": True, "claims": decoded.claims}


async def describe(
    headers: list[tuple[str, str]], checker: AssertionChecker | None
) -> dict[str, Any]:
    """The ``_gateway`` part of every answer (repeated headers joined with ", ")."""
    received: dict[str, str] = {}
    token = None
    for name, value in headers:
        if name == ASSERTION_HEADER:
            token = value
        elif name.startswith(ECHOED_PREFIXES) or name in ECHOED:
            received[name] = f"{received[name]}, {value}" if name in received else value
    if token is None:
        assertion: dict[str, Any] = {"present": False}
    elif checker is None:
        assertion = {"present": True, "valid": None, "error": "no JWKS configured"}
    else:
        assertion = {"present": True, **await checker.check(token)}
    return {"headers": received, "assertion": assertion}
