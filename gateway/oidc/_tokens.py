"""Validating ID tokens, logout tokens and JWT access tokens.

Every check is explicit here rather than left to a library's defaults (see PITFALLS.md:
Authlib's own ``claims_options`` silently replace its issuer check, and ``joserfc.jwt.decode``
checks the signature only):

- the header's ``alg`` is in the issuer's allow-list (asymmetric only: never ``none``, never
  HMAC, so a public key can never be used as an HMAC secret), and matches the key type;
- the signature verifies against the issuer's JWKS key named by ``kid``;
- ``iss`` is exactly the issuer from discovery; ``aud`` contains an accepted audience;
  with several audiences, ``azp`` must be present and be our client id (ID tokens);
- ``exp`` is required and in the future; ``iat`` is required (ID tokens) and not in the
  future; ``nbf``, when present, is not in the future: each within the configured leeway;
- ``nonce`` equals the one stored with the login's state (ID tokens);
- ``sub`` is a non-empty string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from gateway.oidc._provider import Provider
from gateway.oidc.errors import InvalidToken, TokenExpired

MAX_TOKEN_BYTES = 16 * 1024


def token_hash(token: str) -> str:
    """How logs and caches refer to a token: the first 32 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:32]


def _b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) WITHOUT verification: only to choose the issuer and key."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("token_too_large")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed_token")
    try:
        header, claims = _b64json(parts[0]), _b64json(parts[1])
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("malformed_token") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("malformed_token")
    return header, claims


async def validate_jwt(
    token: str,
    provider: Provider,
    *,
    audiences: Collection[str],
    now: float,
    leeway: float,
    nonce: str | None = None,
    client_id: str | None = None,
    require_iat: bool = True,
) -> dict[str, Any]:
    """The verified claims of ``token``, or InvalidToken/TokenExpired saying which rule failed."""
    header, _ = peek(token)
    algorithm = header.get("alg")
    allowed = provider.settings.algorithms
    if not isinstance(algorithm, str) or algorithm not in allowed:
        raise InvalidToken("algorithm_not_allowed")
    if "crit" in header or "jku" in header or "x5u" in header or "jwk" in header:
        raise InvalidToken("unsupported_header")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed_token")
    key = await provider.key_for(kid)
    try:
        claims = dict(jwt.decode(token, key, algorithms=[algorithm]).claims)
    except JoseError as exc:
        raise InvalidToken("bad_signature") from exc
    metadata = await provider.metadata()
    check_claims(
        claims,
        issuer=metadata.issuer,
        audiences=audiences,
        now=now,
        leeway=leeway,
        nonce=nonce,
        client_id=client_id,
        require_iat=require_iat,
    )
    return claims


def check_claims(  # noqa: PLR0912 - one branch per rule, in the order of the module docstring
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audiences: Collection[str],
    now: float,
    leeway: float,
    nonce: str | None,
    client_id: str | None,
    require_iat: bool,
) -> None:
    if claims.get("iss") != issuer:
        raise InvalidToken("wrong_issuer")
    aud = claims.get("aud")
    aud_list = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if not aud_list or not all(isinstance(a, str) for a in aud_list):
        raise InvalidToken("missing_audience")
    if not set(aud_list) & set(audiences):
        raise InvalidToken("wrong_audience")
    if client_id is not None:
        azp = claims.get("azp")
        if len(aud_list) > 1 and azp is None:
            raise InvalidToken("missing_azp")
        if azp is not None and azp != client_id:
            raise InvalidToken("wrong_azp")
    exp = _number(claims.get("exp"))
    if exp is None:
        raise InvalidToken("missing_exp")
    if now > exp + leeway:
        raise TokenExpired("expired")
    if "iat" not in claims and require_iat:
        raise InvalidToken("missing_iat")
    if "iat" in claims:
        iat = _number(claims["iat"])
        if iat is None or iat > now + leeway:
            raise InvalidToken("iat_in_future")
    if "nbf" in claims:
        nbf = _number(claims["nbf"])
        if nbf is None or nbf > now + leeway:
            raise InvalidToken("not_yet_valid")
    if nonce is not None:
        found = claims.get("nonce")
        if not isinstance(found, str) or not hmac.compare_digest(found, nonce):
            raise InvalidToken("nonce_mismatch")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("missing_sub")


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


Clock = Callable[[], float]
