"""Bearer JWT access tokens for API clients, and the stage that turns away blocked clients.

A request with ``Authorization: Bearer <jwt>`` is validated like an ID token (signature against
the issuer's JWKS, ``iss``, ``aud`` in the issuer's configured ``audiences``, ``exp``, ``nbf``,
``iat`` when present, the algorithm allow-list); only issuers with ``audiences`` configured
accept bearer tokens. Roles and tenant come from the issuer's claim mapping plus local grants.

Verified tokens are cached by the SHA-256 of the token, never past the token's ``exp`` nor for
more than ``CACHE_TTL``, in a bounded LRU. A rejection is a 401 with
``WWW-Authenticate`` (the authenticate stage answers it and records ``authentication_failed``)
and a ``bearer_token_rejected`` event with the rule that failed and the token's hash only.

An opaque (non-JWT) token is checked at the one issuer configured with ``introspection``
(RFC 7662; ``active``, ``aud``, ``exp``, ``iss`` checked the same way), cached for at most a
minute so a token revoked at the provider stops working within that time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import ClassVar

from audit import AuditSink
from gateway.authn import AuthenticationFailed
from gateway.errors import TooManyRequests
from gateway.oidc._audit import bearer_rejected_event
from gateway.oidc._claims import ClaimMapping, Grants
from gateway.oidc._provider import Provider
from gateway.oidc._throttle import Throttle, ip_key
from gateway.oidc._tokens import check_claims, peek, token_hash, validate_jwt
from gateway.oidc.errors import (
    InvalidToken,
    LoginUnavailable,
    NoRoleMapping,
    OIDCError,
    ProviderUnavailable,
    StateUnavailable,
    UnknownIssuer,
)
from gateway.pages import send_error
from gateway.types import ASGIApp, Identity, Receive, Scope, Send, state

CACHE_TTL = 300.0
INTROSPECTION_CACHE_TTL = 60.0
CACHE_SIZE = 10_000


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
            return None
    return None


class BearerAuthenticator:
    """Recognises ``Authorization: Bearer`` JWTs from the configured issuers."""

    name: ClassVar[str] = "bearer"

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider],
        mappings: Mapping[str, ClaimMapping],
        grants: Grants,
        throttle: Throttle,
        sink: AuditSink,
        leeway: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._providers = {n: p for n, p in providers.items() if p.settings.audiences}
        self._mappings = mappings
        self._grants = grants
        self._throttle = throttle
        self._sink = sink
        self._leeway = leeway
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str, str], tuple[Identity, float]] = OrderedDict()
        introspecting = [(n, p) for n, p in self._providers.items() if p.settings.introspection]
        self._introspector = introspecting[0] if introspecting else None

    async def authenticate(self, scope: Scope) -> Identity | None:
        token = bearer_token(scope)
        if token is None:
            return None
        hashed = token_hash(token)
        idp: str | None = None
        if self._introspector is not None and token.count(".") != 2:
            return await self._introspected(scope, token, hashed)
        # The hash covers the whole token (issuer and audience included): a hit is a token
        # verified before, so it is not decoded again (measured: the decode was a third of
        # this stage's time per request).
        key = ("jwt", "", hashed)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(key)
            return cached[0]
        try:
            _, unverified = peek(token)
            idp, provider = await self._provider_for(unverified.get("iss"))
            claims = await validate_jwt(
                token,
                provider,
                audiences=provider.settings.audiences,
                now=now,
                leeway=self._leeway,
                require_iat=False,
            )
            mapping = self._mappings[provider.settings.claims or idp]
            federated, tenant = mapping.map(claims)
            roles = federated | self._grants.roles_for(idp, claims["sub"], tenant)
            if not roles:
                raise NoRoleMapping("token maps to no role")
        except OIDCError as exc:
            await self._reject(scope, exc, hashed, idp)
            # The detailed ``bearer_token_rejected`` event (with the token's hash) was
            # emitted above: the stage adds none.
            raise AuthenticationFailed(exc.reason, audited=True) from exc
        who = Identity(
            issuer=claims["iss"],
            subject=claims["sub"],
            roles=roles,
            tenant=tenant,
            method="bearer",
        )
        self._remember(key, who, min(float(claims["exp"]), now + CACHE_TTL))
        return who

    async def _introspected(self, scope: Scope, token: str, hashed: str) -> Identity:
        """An opaque token, checked at the one issuer configured for introspection.

        Results are cached for at most ``INTROSPECTION_CACHE_TTL`` (a token revoked at the
        provider stops working within that time) and never past the token's ``exp``.
        """
        assert self._introspector is not None  # noqa: S101 - checked by the caller
        idp, provider = self._introspector
        key = (idp, "introspected", hashed)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(key)
            return cached[0]
        try:
            claims = dict(await provider.introspect(token))
            if claims.get("active") is not True:
                raise InvalidToken("inactive_token")
            if claims.get("token_type") == "refresh_token":
                raise InvalidToken("refresh_token_used_as_access_token")
            metadata = await provider.metadata()
            claims.setdefault("iss", metadata.issuer)
            check_claims(
                claims,
                issuer=metadata.issuer,
                audiences=provider.settings.audiences,
                now=now,
                leeway=self._leeway,
                nonce=None,
                client_id=None,
                require_iat=False,
            )
            mapping = self._mappings[provider.settings.claims or idp]
            federated, tenant = mapping.map(claims)
            roles = federated | self._grants.roles_for(idp, claims["sub"], tenant)
            if not roles:
                raise NoRoleMapping("token maps to no role")
        except OIDCError as exc:
            await self._reject(scope, exc, hashed, idp)
            raise AuthenticationFailed(exc.reason, audited=True) from exc
        who = Identity(
            issuer=metadata.issuer,
            subject=claims["sub"],
            roles=roles,
            tenant=tenant,
            method="bearer",
        )
        self._remember(key, who, min(float(claims["exp"]), now + INTROSPECTION_CACHE_TTL))
        return who

    async def _provider_for(self, issuer: object) -> tuple[str, Provider]:
        for name, provider in self._providers.items():
            try:
                if (await provider.metadata()).issuer == issuer:
                    return name, provider
            except ProviderUnavailable:
                continue
        raise UnknownIssuer("token from an issuer not accepted for bearer tokens")

    def _remember(self, key: tuple[str, str, str], who: Identity, until: float) -> None:
        self._cache[key] = (who, until)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _reject(self, scope: Scope, exc: OIDCError, hashed: str, idp: str | None) -> None:
        """The detailed record (token hash, rule); the stage records the 401 response itself."""
        labels = {"token_hash": hashed}
        if idp is not None:
            labels["idp"] = idp
        event = bearer_rejected_event(scope, reason=exc.reason, labels=labels)
        event["error.message"] = exc.detail
        try:
            blocked = await self._throttle.failure(ip_key(state(scope).client_ip))
        except StateUnavailable:
            # Refused anyway (401); the event says this failure could not be counted.
            event["labels"] = {**labels, "throttle": "state_store_unavailable"}
            blocked = False
        self._sink.emit(event)
        if blocked:
            alert = dict(event)
            alert.update(
                {
                    "event.kind": "alert",
                    "event.action": "bearer_throttled",
                    "event.category": ["authentication", "intrusion_detection"],
                    "event.reason": "throttled",
                }
            )
            self._sink.emit(alert)


class BearerThrottleStage:
    """Answers 429 with Retry-After to a client IP blocked for too many rejected tokens.

    Place it before the authenticate stage; it only looks at requests carrying a bearer token.
    """

    name: ClassVar[str] = "bearer_throttle"

    def __init__(self, app: ASGIApp, *, throttle: Throttle, sink: AuditSink) -> None:
        self.app = app
        self._throttle = throttle
        self._sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or bearer_token(scope) is None:
            await self.app(scope, receive, send)
            return
        gateway = state(scope)
        try:
            wait = await self._throttle.retry_after(ip_key(gateway.client_ip))
        except StateUnavailable:
            # Fail closed: whether this client is blocked cannot be known.
            self._sink.emit(
                bearer_rejected_event(
                    scope,
                    reason=StateUnavailable.reason,
                    **{"http.response.status_code": 503},
                )
            )
            await send_error(
                scope, send, LoginUnavailable(StateUnavailable.reason), gateway.request_id
            )
            return
        if wait is None:
            await self.app(scope, receive, send)
            return
        self._sink.emit(
            bearer_rejected_event(scope, reason="throttled", **{"http.response.status_code": 429})
        )
        await send_error(
            scope, send, TooManyRequests("throttled", retry_after=wait), gateway.request_id
        )
