"""Login, callback, logout, back-channel logout and session revocation: the routes.

Login uses the authorization code flow with PKCE (S256), built from Authlib's
framework-independent pieces (``prepare_grant_uri``, ``prepare_token_request``,
``create_s256_code_challenge``); the HTTP calls go through the OIDC component's one shared
``httpx.AsyncClient``. Authlib's Starlette client is not used: it keeps state, nonce and verifier
in Starlette's signed-but-readable session and allows one login per provider per browser.

The login state: ``state``, ``nonce``, the PKCE verifier, the issuer and the return path live in
an encrypted, authenticated cookie (``__Host-gw_login``, SameSite=Lax, 10 minutes), up to three
logins in flight (several tabs). It binds the state to this browser; the return path is stored
with it and never read from the callback. A state is single-use: removed from the cookie when
used, and recorded as used in the shared state (``_shared.py``: the audit store, which every
instance sees) until it would have expired, so a copied cookie cannot replay it on this or any
other instance. The nonce and the PKCE verifier travel with the state and are spent with it.
When the shared state cannot be reached, the login is refused ("the login service is
unavailable", 503, audited as ``state_store_unavailable``): a state is never accepted twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audit import AuditSink
from gateway.errors import (
    AccessDenied,
    AuthenticationRequired,
    BadRequest,
    GatewayError,
    ServiceUnavailable,
    TooManyRequests,
)
from gateway.oidc._audit import login_event
from gateway.oidc._claims import ClaimMapping, Grants, resolve_roles
from gateway.oidc._provider import Metadata, Provider
from gateway.oidc._redirects import safe_next
from gateway.oidc._relogin import RELOGIN_COOKIE, clear_hint, read_hint
from gateway.oidc._revocation import RevocationStore
from gateway.oidc._session import Sealer, SessionCodec, read_cookie
from gateway.oidc._shared import SharedState
from gateway.oidc._throttle import Throttle, ip_key, subject_key
from gateway.oidc._tokens import peek, validate_jwt
from gateway.oidc.errors import (
    IdPError,
    InvalidToken,
    LoginFailed,
    LoginUnavailable,
    OIDCError,
    ProviderUnavailable,
    RevocationNotDurable,
    RevocationsUnavailable,
    StateMismatch,
    StateUnavailable,
    UnknownIssuer,
)
from gateway.pages import own_page_csp, render_error, wants_json
from gateway.types import state

LOGIN_PATH = "/_gateway/login"
CALLBACK_PATH = "/_gateway/callback"
LOGOUT_PATH = "/_gateway/logout"
BACKCHANNEL_PATH = "/_gateway/backchannel-logout"
REVOKE_PATH = "/_gateway/sessions/revoke"
LOGIN_COOKIE = "__Host-gw_login"
LOGIN_PURPOSE = "gateway-login-v1"
MAX_PENDING_LOGINS = 3
MAX_FORM_BYTES = 64 * 1024
REVOKER_ROLE = "incident_responder"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: OIDC Core 3.1.2.6: what a provider answers ``prompt=none`` when it needs the person.
SILENT_FALLBACK_ERRORS = frozenset(
    {"login_required", "interaction_required", "consent_required", "account_selection_required"}
)
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


@dataclass(frozen=True, slots=True)
class Pending:
    state: str
    nonce: str
    verifier: str
    idp: str
    next: str
    expires: float
    #: Sent with ``prompt=none`` (a silent re-login): an IdP answer that it needs the person
    #: starts the interactive login instead of failing.
    silent: bool = False

    def to_payload(self) -> dict[str, Any]:
        return {
            "s": self.state,
            "n": self.nonce,
            "v": self.verifier,
            "i": self.idp,
            "r": self.next,
            "e": self.expires,
            "q": 1 if self.silent else 0,
        }

    @classmethod
    def from_payload(cls, item: Any) -> Pending | None:
        try:
            return cls(
                state=str(item["s"]),
                nonce=str(item["n"]),
                verifier=str(item["v"]),
                idp=str(item["i"]),
                next=str(item["r"]),
                expires=float(item["e"]),
                silent=item.get("q") == 1,
            )
        except (KeyError, TypeError, ValueError):
            return None


class Login:
    """The login routes of the gateway, for every configured issuer."""

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider],
        mappings: Mapping[str, ClaimMapping],
        grants: Grants,
        codec: SessionCodec,
        sealer: Sealer,
        revocations: RevocationStore,
        throttle: Throttle,
        shared: SharedState,
        client: httpx.AsyncClient,
        sink: AuditSink,
        login_timeout: float,
        leeway: float,
        return_origins: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, provider in providers.items():
            mapping_name = provider.settings.claims or name
            if mapping_name not in mappings:
                raise ValueError(f"oidc.issuers.{name}: no claim mapping {mapping_name!r}")
        self._providers = dict(providers)
        self._mappings = dict(mappings)
        self._grants = grants
        self._codec = codec
        self._sealer = sealer
        self._revocations = revocations
        self._throttle = throttle
        self._shared = shared
        self._client = client
        self._sink = sink
        self._login_timeout = login_timeout
        self._leeway = leeway
        self._clock = clock
        self._return_origins = frozenset(return_origins)

    def routes(self) -> list[Route]:
        return [
            Route(LOGIN_PATH, self.login, methods=["GET"]),
            Route(CALLBACK_PATH, self.callback, methods=["GET"]),
            Route(LOGOUT_PATH, self.logout, methods=["GET", "POST"]),
            Route(BACKCHANNEL_PATH, self.backchannel_logout, methods=["POST"]),
            Route(REVOKE_PATH, self.revoke_subject, methods=["POST"]),
        ]

    # --- login ---------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"), self._return_origins)
        idp = request.query_params.get("idp")
        headers = request.scope.get("headers", ())
        hint = read_hint(self._sealer, headers, now=self._clock())
        if idp is None and hint in self._providers:
            idp = hint  # roles went stale: straight back to the issuer of that session
        if idp is None and len(self._providers) == 1:
            idp = next(iter(self._providers))
        if idp is None:
            return self._chooser(next_path)
        provider = self._providers.get(idp)
        if provider is None:
            self._emit(
                request,
                action="login_failure",
                outcome="failure",
                reason=UnknownIssuer.reason,
                status=400,
            )
            return self._error(request, BadRequest(UnknownIssuer.reason))
        try:
            blocked = await self._blocked(request, None)
            if blocked is not None:
                return blocked
            metadata = await provider.metadata()
        except (ProviderUnavailable, StateUnavailable) as exc:
            return await self._fail(request, exc, idp=idp)
        response = self._to_provider(
            request,
            provider,
            idp=idp,
            authorization_endpoint=metadata.authorization_endpoint,
            next_path=next_path,
            silent=hint == idp,
            entries=self._pending(request),
        )
        if read_cookie(headers, RELOGIN_COOKIE) is not None:
            response.raw_headers.append((b"set-cookie", clear_hint()))  # single use
        return response

    def _to_provider(
        self,
        request: Request,
        provider: Provider,
        *,
        idp: str,
        authorization_endpoint: str,
        next_path: str,
        silent: bool,
        entries: list[Pending],
    ) -> Response:
        """The redirect to the provider's authorization endpoint, with a new login state
        added to the login cookie (``prompt=none`` when ``silent``)."""
        pending = Pending(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            idp=idp,
            next=next_path,
            expires=self._clock() + self._login_timeout,
            silent=silent,
        )
        extra = {"prompt": "none"} if silent else {}
        url = prepare_grant_uri(
            authorization_endpoint,
            client_id=provider.settings.client_id,
            response_type="code",
            redirect_uri=self._redirect_uri(request),
            scope=" ".join(provider.settings.scopes),
            state=pending.state,
            nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.verifier),
            code_challenge_method="S256",
            **extra,
        )
        kept = [*entries[-(MAX_PENDING_LOGINS - 1) :], pending]
        response = Response(status_code=303, headers={"location": url})
        response.raw_headers.append((b"set-cookie", self._login_cookie(kept)))
        return response

    def _chooser(self, next_path: str) -> Response:
        links = (
            (LOGIN_PATH + "?" + urlencode({"idp": name, "next": next_path}), p.settings, name)
            for name, p in sorted(self._providers.items())
        )
        items = "".join(
            f'<li><a href="{html.escape(href)}">{html.escape(cfg.display_name or name)}</a></li>'
            for href, cfg, name in links
        )
        page = (
            '<!doctype html><html lang="nl"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>Inloggen / Log in</title></head><body><main>"
            "<h1>Inloggen</h1><p>Kies hoe u wilt inloggen.</p>"
            '<p lang="en"><strong>Log in.</strong> Choose how to log in.</p>'
            f"<ul>{items}</ul></main></body></html>"
        )
        return Response(page, media_type="text/html; charset=utf-8")

    # --- callback ------------------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        entries = self._pending(request)
        given = request.query_params.get("state", "")
        entry = next((e for e in entries if given and secrets.compare_digest(e.state, given)), None)
        remaining = [e for e in entries if e is not entry]
        try:
            blocked = await self._blocked(request, None, remaining=remaining)
            if blocked is not None:
                return blocked
            if entry is None:
                raise StateMismatch("unknown state")
            if not await self._shared.use_once(f"state:{entry.state}", until=entry.expires):
                raise StateMismatch("used state")
        except OIDCError as exc:
            return await self._fail(request, exc, remaining=remaining)
        idp, user_id = entry.idp, None
        try:
            provider = self._providers.get(idp)
            if provider is None:
                raise UnknownIssuer(f"issuer {idp!r} no longer configured")
            metadata = await provider.metadata()
            returned_issuer = request.query_params.get("iss")
            if returned_issuer is not None and returned_issuer != metadata.issuer:
                # RFC 9207: the response names another issuer (a mix-up attack).
                raise UnknownIssuer("authorization response from another issuer")
            error = request.query_params.get("error")
            if error is not None and _silent_fallback_for(entry, error):
                return self._silent_fallback(
                    request, provider, entry, error=error, metadata=metadata, remaining=remaining
                )
            code = request.query_params.get("code")
            if not code:
                raise IdPError("no authorization code")
            tokens = await self._exchange(provider, code, entry.verifier, request)
            id_token = tokens.get("id_token")
            if not isinstance(id_token, str):
                raise InvalidToken("no id_token in the token response")
            claims = await validate_jwt(
                id_token,
                provider,
                audiences=[provider.settings.client_id],
                now=self._clock(),
                leeway=self._leeway,
                nonce=entry.nonce,
                client_id=provider.settings.client_id,
            )
            user_id = f"{claims['iss']}|{claims['sub']}"
            blocked = await self._blocked(request, user_id, idp=idp, remaining=remaining)
            if blocked is not None:
                return blocked
            mapping = self._mappings[provider.settings.claims or idp]
            federated, roles, tenant = resolve_roles(
                mapping=mapping, grants=self._grants, idp=idp, subject=claims["sub"], claims=claims
            )
            session = self._codec.new(
                idp=idp,
                issuer=claims["iss"],
                subject=claims["sub"],
                roles=federated,
                tenant=tenant,
            )
            value = self._codec.encode(session)
        except OIDCError as exc:
            return await self._fail(request, exc, idp=idp, user_id=user_id, remaining=remaining)
        previous = state(request.scope).identity
        if previous is not None and previous.method == "session" and previous.session_id:
            # The session this browser had before is replaced, not left usable alongside
            # (recorded here at once; queued for the other instances if their store is away).
            await self._revoke_session(previous.session_id)
        self._emit(
            request,
            action="login_success",
            outcome="success",
            idp=idp,
            user_id=session.user_id,
            roles=roles,
            tenant=tenant,
            status=303,
        )
        response = Response(status_code=303, headers={"location": entry.next})
        response.raw_headers.append((b"set-cookie", self._codec.set_cookie(value)))
        response.raw_headers.append((b"set-cookie", self._login_cookie(remaining)))
        return response

    async def _exchange(
        self, provider: Provider, code: str, verifier: str, request: Request
    ) -> dict[str, Any]:
        metadata = await provider.metadata()
        settings = provider.settings
        fields: dict[str, str] = {"code": code, "code_verifier": verifier}
        auth: httpx.Auth | None = None
        methods = metadata.raw.get("token_endpoint_auth_methods_supported")
        if settings.client_secret is None:
            fields["client_id"] = settings.client_id
        elif isinstance(methods, list) and "client_secret_basic" not in methods:
            fields["client_id"] = settings.client_id
            fields["client_secret"] = settings.client_secret.reveal()
        else:
            # RFC 6749 §2.3.1: both form-urlencoded before Basic encoding.
            auth = httpx.BasicAuth(
                quote_plus(settings.client_id), quote_plus(settings.client_secret.reveal())
            )
        body = prepare_token_request(
            "authorization_code", redirect_uri=self._redirect_uri(request), **fields
        )
        try:
            response = await self._client.post(
                metadata.token_endpoint,
                content=body,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "accept": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            # Unreachable is an outage (the login service is unavailable), not a bad attempt.
            raise ProviderUnavailable(f"{type(exc).__name__} calling the token endpoint") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else None
            shown = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "other"
            raise IdPError(f"token endpoint answered {response.status_code} ({shown})")
        return data

    def _silent_fallback(
        self,
        request: Request,
        provider: Provider,
        entry: Pending,
        *,
        error: str,
        metadata: Metadata,
        remaining: list[Pending],
    ) -> Response:
        """The provider needs the person for a silent re-login: audited (not counted as a
        failed attempt: nobody tried anything), then the interactive login at once."""
        self._emit(
            request,
            action="login_failure",
            outcome="failure",
            reason=IdPError.reason,
            detail=f"silent re-authentication: {error}",
            idp=entry.idp,
            status=303,
            labels={"prompt": "none", "then": "interactive_login"},
        )
        return self._to_provider(
            request,
            provider,
            idp=entry.idp,
            authorization_endpoint=metadata.authorization_endpoint,
            next_path=entry.next,
            silent=False,
            entries=remaining,
        )

    # --- logout --------------------------------------------------------------------------

    async def logout(self, request: Request) -> Response:
        if request.method == "GET":
            return self._logout_form(request)
        who = state(request.scope).identity
        response_target = "/"
        if who is not None and who.method == "session" and who.session_id is not None:
            labels = {"logout_kind": "user"}
            failed = await self._revoke_session(who.session_id)
            if failed is not None:
                # Refused here at once and queued for the others: the browser's cookie is
                # cleared either way; the event says the other instances may lag ("pending":
                # in the local journal, it survives a restart) or that the revocation is in
                # this process's memory only ("not_durable": the journal could not be written
                # either; logged as an error and counted too).
                labels["revocation"] = (
                    "not_durable" if failed == RevocationNotDurable.reason else "pending"
                )
            self._emit(
                request,
                action="logout",
                outcome="success",
                user_id=who.user_id,
                status=303,
                labels=labels,
            )
            provider, end_session = self._end_session_for(who.issuer)
            if provider is not None and end_session is not None:
                gateway = state(request.scope)
                query = urlencode(
                    {
                        "client_id": provider.settings.client_id,
                        "post_logout_redirect_uri": f"{gateway.scheme}://{gateway.host}/",
                    }
                )
                response_target = f"{end_session}{'&' if '?' in end_session else '?'}{query}"
        response = Response(status_code=303, headers={"location": response_target})
        response.raw_headers.append((b"set-cookie", self._codec.clear_cookie()))
        return response

    def _logout_form(self, request: Request) -> Response:
        """The confirmation form. Its POST answers with a redirect to the identity provider's
        end-session endpoint, and browsers hold a form's redirects to the page's CSP
        ``form-action``: that endpoint's origin is allowed beside 'self' on this page only
        (Chromium left the user on this page otherwise; the session had ended)."""
        who = state(request.scope).identity
        _provider, end_session = self._end_session_for(who.issuer if who is not None else None)
        page = (
            '<!doctype html><html lang="nl"><head><meta charset="utf-8">'
            "<title>Uitloggen / Log out</title></head><body><main>"
            f'<form method="post" action="{LOGOUT_PATH}">'
            "<h1>Uitloggen</h1><p>Wilt u uitloggen?</p>"
            '<p lang="en">Do you want to log out?</p>'
            '<button type="submit">Uitloggen / Log out</button></form></main></body></html>'
        )
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={"content-security-policy": own_page_csp(form_action=_origin(end_session))},
        )

    def _end_session_for(self, issuer: str | None) -> tuple[Provider | None, str | None]:
        for provider in self._providers.values():
            cached = provider.cached_metadata
            if cached is not None and cached.issuer == issuer:
                return provider, cached.end_session_endpoint
        return None, None

    async def backchannel_logout(self, request: Request) -> Response:
        """OIDC Back-Channel Logout 1.0: the provider ends a subject's sessions."""
        token = await _form_field(request, "logout_token")
        idp: str | None = None
        try:
            if not isinstance(token, str) or not token:
                raise InvalidToken("no logout_token")
            _, unverified = peek(token)
            provider = None
            for name, candidate in self._providers.items():
                try:
                    if (await candidate.metadata()).issuer == unverified.get("iss"):
                        provider, idp = candidate, name
                        break
                except ProviderUnavailable:
                    continue
            if provider is None:
                raise UnknownIssuer("logout token from an unknown issuer")
            claims = await validate_jwt(
                token,
                provider,
                audiences=[provider.settings.client_id],
                now=self._clock(),
                leeway=self._leeway,
            )
            events = claims.get("events")
            if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
                raise InvalidToken("not a logout token (events)")
            if "nonce" in claims:
                raise InvalidToken("logout token with a nonce")
            if not isinstance(claims.get("jti"), str):
                raise InvalidToken("logout token without jti")
        except OIDCError as exc:
            self._emit(
                request,
                action="logout",
                outcome="failure",
                reason=exc.reason,
                detail=exc.detail,
                idp=idp,
                status=400,
                labels={"logout_kind": "backchannel"},
            )
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        user_id = f"{claims['iss']}|{claims['sub']}"
        failed = await self._revoke_subject(user_id)
        if failed is not None:
            # Refused here already; 503 so the provider may deliver the token again.
            self._emit(
                request,
                action="logout",
                outcome="failure",
                reason=failed,
                idp=idp,
                user_id=user_id,
                status=503,
                labels={"logout_kind": "backchannel"},
            )
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        self._emit(
            request,
            action="logout",
            outcome="success",
            idp=idp,
            user_id=user_id,
            status=200,
            labels={"logout_kind": "backchannel"},
        )
        return Response(status_code=200, headers={"cache-control": "no-store"})

    async def revoke_subject(self, request: Request) -> Response:
        """Incident response: end every session of one user (``{"user_id": "iss|sub"}``)."""
        who = state(request.scope).identity
        if who is None or who.is_anonymous:
            return self._error(request, AuthenticationRequired("not_incident_responder"))
        if REVOKER_ROLE not in who.roles:
            return self._error(request, AccessDenied("not_incident_responder"))
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return self._error(request, BadRequest("expected_json"))
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        target = body.get("user_id") if isinstance(body, dict) else None
        if not isinstance(target, str) or "|" not in target or len(target) > 1024:
            return self._error(request, BadRequest("expected_user_id"))
        failed = await self._revoke_subject(target)
        if failed is not None:
            event = login_event(
                request.scope,
                action="sessions_revoked",
                outcome="failure",
                reason=failed,
                status=503,
            )
            event["event.category"] = ["authentication", "session", "iam"]
            event["user.target.id"] = target
            self._sink.emit(event)
            return self._error(request, ServiceUnavailable(RevocationsUnavailable.reason))
        event = login_event(request.scope, action="sessions_revoked", outcome="success", status=200)
        event["event.category"] = ["authentication", "session", "iam"]
        event["event.type"] = ["end"]
        event["user.target.id"] = target
        self._sink.emit(event)
        return JSONResponse({"revoked": target})

    # --- helpers -------------------------------------------------------------------------

    def _emit(self, request: Request, **fields: Any) -> None:
        """Record one login, logout or revocation event about ``request`` (see ``login_event``)."""
        self._sink.emit(login_event(request.scope, **fields))

    async def _revoke_session(self, session_id: str) -> str | None:
        """Revoke one session (in a thread: the store may be a network call and an fsync);
        None when done, else the reason it is recorded on this instance only so far (queued
        for the shared store: ``revocation_store_unavailable``, or ``revocation_not_durable``
        when the local journal could not take it either)."""
        until = self._clock() + self._codec.absolute_timeout
        try:
            await asyncio.to_thread(self._revocations.revoke_session, session_id, until=until)
        except RevocationsUnavailable as exc:
            return exc.reason
        return None

    async def _revoke_subject(self, user_id: str) -> str | None:
        """Revoke every session of ``user_id`` issued until now; None or a reason as above."""
        now = self._clock()
        until = now + self._codec.absolute_timeout
        try:
            await asyncio.to_thread(
                self._revocations.revoke_subject, user_id, before=now, until=until
            )
        except RevocationsUnavailable as exc:
            return exc.reason
        return None

    def _redirect_uri(self, request: Request) -> str:
        gateway = state(request.scope)
        return f"{gateway.scheme}://{gateway.host}{CALLBACK_PATH}"

    def _pending(self, request: Request) -> list[Pending]:
        value = read_cookie(request.scope.get("headers", ()), LOGIN_COOKIE)
        payload = self._sealer.open(value, purpose=LOGIN_PURPOSE) if value else None
        items = payload.get("p") if payload else None
        if not isinstance(items, list):
            return []
        now = self._clock()
        found = [Pending.from_payload(item) for item in items[:MAX_PENDING_LOGINS]]
        return [entry for entry in found if entry is not None and entry.expires > now]

    def _login_cookie(self, entries: list[Pending]) -> bytes:
        if not entries:
            return f"{LOGIN_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax".encode()
        value = self._sealer.seal(
            {"p": [entry.to_payload() for entry in entries]}, purpose=LOGIN_PURPOSE
        )
        max_age = int(self._login_timeout)
        return (
            f"{LOGIN_COOKIE}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax"
        ).encode()

    async def _blocked(
        self,
        request: Request,
        user_id: str | None,
        *,
        idp: str | None = None,
        remaining: list[Pending] | None = None,
    ) -> Response | None:
        """A 429 response when the client or subject is blocked, else None; raises
        StateUnavailable when the shared state cannot say."""
        keys = [ip_key(state(request.scope).client_ip)]
        if user_id is not None:
            keys.append(subject_key(user_id))
        waits = [w for w in [await self._throttle.retry_after(k) for k in keys] if w is not None]
        if not waits:
            return None
        self._emit(
            request,
            action="login_failure",
            outcome="failure",
            reason="throttled",
            idp=idp,
            user_id=user_id,
            status=429,
        )
        response = self._error(request, TooManyRequests("throttled", retry_after=max(waits)))
        response.headers["retry-after"] = str(max(waits))
        if remaining is not None:
            response.raw_headers.append((b"set-cookie", self._login_cookie(remaining)))
        return response

    async def _fail(
        self,
        request: Request,
        exc: OIDCError,
        *,
        idp: str | None = None,
        user_id: str | None = None,
        remaining: list[Pending] | None = None,
    ) -> Response:
        error: GatewayError
        outage = isinstance(exc, ProviderUnavailable | StateUnavailable)
        if outage:
            error = LoginUnavailable(exc.reason)
        elif isinstance(exc, StateMismatch):
            error = BadRequest(exc.reason)
        else:
            error = AuthenticationRequired(exc.reason)
        newly_blocked: list[str] = []
        labels: dict[str, str] = {}
        if not outage:
            # An outage (provider, shared state) is nobody's attempt: it never counts.
            try:
                client_key = ip_key(state(request.scope).client_ip)
                if await self._throttle.failure(client_key):
                    newly_blocked.append(client_key)
                if user_id is not None and await self._throttle.failure(subject_key(user_id)):
                    hashed = hashlib.sha256(user_id.encode()).hexdigest()[:16]
                    newly_blocked.append(f"sub:{hashed}")
            except StateUnavailable:
                # Refused anyway; the event says this failure could not be counted.
                labels["throttle"] = "state_store_unavailable"
        self._emit(
            request,
            action="login_failure",
            outcome="failure",
            reason=exc.reason,
            detail=exc.detail,
            idp=idp,
            user_id=user_id,
            status=error.status_code,
            labels=labels,
        )
        for key in newly_blocked:
            alert = login_event(
                request.scope,
                action="login_throttled",
                outcome="failure",
                reason="throttled",
                idp=idp,
                kind="alert",
            )
            alert["event.category"] = ["authentication", "intrusion_detection"]
            alert["labels"] = {**alert.get("labels", {}), "throttle_key": key}
            self._sink.emit(alert)
        response = self._error(request, error)
        if remaining is not None:
            response.raw_headers.append((b"set-cookie", self._login_cookie(remaining)))
        return response

    def _error(self, request: Request, error: GatewayError) -> Response:
        body, content_type = render_error(
            error, state(request.scope).request_id, as_json=wants_json(request.scope)
        )
        return Response(body, status_code=error.status_code, media_type=content_type.decode())


def _silent_fallback_for(entry: Pending, error: str) -> bool:
    """True when the provider's ``error`` answers a silent request by asking for the person
    (start the interactive login); raises IdPError for every other error."""
    if entry.silent and error in SILENT_FALLBACK_ERRORS:
        return True
    shown = error if _ERROR_CODE.fullmatch(error) else "other"
    raise IdPError(f"provider returned error {shown}")


async def _form_field(request: Request, name: str) -> str | None:
    """One field of a small urlencoded form body (no multipart parser needed for this)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=20).get(name)
    except ValueError:  # too many fields
        return None
    return values[0] if values and len(values) == 1 else None


__all__ = ["Login", "LoginFailed"]


def _origin(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an https (or loopback http) URL, for a CSP source list."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    if any(c in parts.netloc for c in " ;,'\"\n\r"):
        return None  # never let a discovery document write into the CSP header
    return f"{parts.scheme}://{parts.netloc}"
