"""The dev identity provider: a real OIDC provider built on Authlib's server components.

Authlib's :class:`~authlib.oauth2.AuthorizationServer` with the authorization code grant, the
OpenID Connect extension (ID tokens, nonce required) and PKCE (required), bound to Starlette
here by a thin layer (Authlib ships no Starlette server integration). Endpoints:
discovery, JWKS, authorize (a form to pick a demo person), token, userinfo and end-session.

Choosing a person also starts a session at the provider (a ``devidp_session`` cookie), which
serves ``prompt=none``: with a live session the code is issued without the form, without one
the browser is sent back with ``error=login_required`` (Authlib's OpenID prompt handling).
Without ``prompt=none`` the form is always shown, session or not; end-session ends it.
Access tokens are JWTs (audience ``platform-api``) so API clients can be tested too.

Everything lives in memory and is for demo and tests only: :func:`create_app` refuses to build
unless ``mode`` is ``"demo"`` or ``"test"``.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs

from authlib.oauth2 import AuthorizationServer, OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from devidp._people import PEOPLE, Person, by_subject
from devidp.errors import ModeNotEnabled

MODES = ("demo", "test")
API_AUDIENCE = "platform-api"
CODE_LIFETIME = 120
TOKEN_LIFETIME = 600
MAX_FORM_BYTES = 64 * 1024
SESSION_COOKIE = "devidp_session"


@dataclass
class DevClient(ClientMixin):  # type: ignore[misc]
    """A registered client (the gateway)."""

    client_id: str
    client_secret: str | None
    redirect_uris: Sequence[str]
    post_logout_redirect_uris: Sequence[str] = ()

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = {"openid", "profile", "email"}
        return " ".join(s for s in (scope or "openid").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and secrets.compare_digest(
            client_secret, self.client_secret
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client_secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    person: Person
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class _State:
    issuer: str
    key: RSAKey
    clients: dict[str, DevClient]
    codes: dict[str, Code] = field(default_factory=dict)
    nonces: set[str] = field(default_factory=set)
    access_tokens: dict[str, Person] = field(default_factory=dict)
    #: Sessions at the provider (cookie value -> person), for ``prompt=none``.
    sessions: dict[str, Person] = field(default_factory=dict)


class _Request(OAuth2Request):  # type: ignore[misc]
    """An OAuth2Request from a Starlette request whose body was read beforehand."""

    def __init__(self, request: Request, form: dict[str, str]) -> None:
        super().__init__(method=request.method, uri=str(request.url), headers=request.headers)
        self._args = dict(request.query_params)
        self._form = form
        self.payload = BasicOAuth2Payload({**self._args, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, state: _State) -> None:
        super().__init__(scopes_supported=["openid", "profile", "email"])
        self.state = state
        self.register_token_generator(
            "default",
            BearerTokenGenerator(self._access_token, expires_generator=TOKEN_LIFETIME),
        )

    def _access_token(self, *, client: DevClient, grant_type: str, user: Person, scope: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.state.issuer,
            "aud": API_AUDIENCE,
            "azp": client.client_id,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            "scope": scope,
            "jti": secrets.token_urlsafe(12),
            **user.claims(),
        }
        token = jwt.encode({"alg": "RS256", "kid": self.state.key.kid}, claims, self.state.key)
        self.state.access_tokens[token] = user
        return token

    def query_client(self, client_id: str) -> DevClient | None:
        return self.state.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Access tokens are kept when minted (for userinfo); nothing else to store."""

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        assert isinstance(request, OAuth2Request)  # noqa: S101 - built by the routes below
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON endpoints")

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        header_map = dict(headers)
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers=header_map)
        return Response(body or b"", status_code=status, headers=header_map)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        state: _State = self.server.state
        if data.get("nonce"):
            state.nonces.add(data["nonce"])
        state.codes[code] = Code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            person=request.user,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            auth_time=int(time.time()),
            expires_at=time.time() + CODE_LIFETIME,
        )

    def query_authorization_code(self, code: str, client: DevClient) -> Code | None:
        found: Code | None = self.server.state.codes.get(code)
        if found is None or found.client_id != client.client_id or found.expires_at < time.time():
            return None
        return found

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.state.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> Person:
        return authorization_code.person


class _OpenIDCode(OpenIDCode):  # type: ignore[misc]
    def __init__(self, state: _State) -> None:
        super().__init__(require_nonce=True)
        self.state = state

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        """A nonce already bound to an issued code is a replay."""
        return nonce in self.state.nonces

    def resolve_client_private_key(self, client: DevClient) -> RSAKey:
        return self.state.key

    def get_client_algorithm(self, client: DevClient) -> str:
        return "RS256"

    def get_encode_header(self, client: DevClient) -> dict[str, str]:
        return {"alg": "RS256", "kid": str(self.state.key.kid)}

    def get_client_claims(self, client: DevClient) -> dict[str, Any]:
        return {"iss": self.state.issuer, "aud": [client.client_id]}

    def generate_user_info(self, user: Person, scope: str) -> UserInfo:
        return UserInfo(user.claims())


async def _read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method != "POST" or content_type != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=50)
    except ValueError:
        return {}
    return {key: values[0] for key, values in parsed.items() if len(values) == 1}


def create_app(
    *,
    issuer: str,
    clients: Sequence[DevClient],
    mode: str | None,
    key: RSAKey | None = None,
) -> Starlette:
    """The dev identity provider as an ASGI app; refuses unless ``mode`` is demo or test."""
    if mode not in MODES:
        raise ModeNotEnabled(
            "the dev identity provider runs only in demo or test mode (--mode demo|test)"
        )
    state = _State(
        issuer=issuer.rstrip("/"),
        key=key or RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4)}),
        clients={client.client_id: client for client in clients},
    )
    server = _Server(state)
    server.register_grant(_CodeGrant, [_OpenIDCode(state), CodeChallenge(required=True)])
    base = state.issuer

    async def discovery(_request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "jwks_uri": f"{base}/jwks",
                "userinfo_endpoint": f"{base}/userinfo",
                "end_session_endpoint": f"{base}/logout",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                    "none",
                ],
                "code_challenge_methods_supported": ["S256"],
                "claims_supported": ["sub", "name", "roles", "tenant"],
            }
        )

    async def jwks(_request: Request) -> Response:
        return JSONResponse({"keys": [state.key.as_dict(private=False, use="sig", alg="RS256")]})

    async def authorize(request: Request) -> Response:
        form = await _read_form(request)
        oauth_request = _Request(request, form)
        person = by_subject(form.get("person", "")) if request.method == "POST" else None
        payload = oauth_request.payload.data
        if not payload.get("code_challenge") or payload.get("code_challenge_method") != "S256":
            # Authlib requires PKCE only of public clients; this provider of every client.
            return HTMLResponse(
                "<h1>Ongeldig verzoek / invalid request</h1><p>PKCE S256 required</p>",
                status_code=400,
            )
        silent = request.method == "GET" and payload.get("prompt") == "none"
        if silent:
            person = state.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        try:
            grant = server.get_consent_grant(request=oauth_request, end_user=person)
        except OAuth2Error as error:
            if error.redirect_uri:  # e.g. login_required for prompt=none: back to the client
                answer: Response = server.handle_error_response(oauth_request, error)
                return answer
            return HTMLResponse(
                f"<h1>Ongeldig verzoek / invalid request</h1><p>{html.escape(error.error)}</p>",
                status_code=400,
            )
        if person is None or (request.method == "GET" and not silent):
            return HTMLResponse(_chooser(str(request.url.query)))
        response: Response = server.create_authorization_response(
            request=oauth_request, grant_user=person, grant=grant
        )
        if not silent:
            session = secrets.token_urlsafe(24)
            state.sessions[session] = person
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="lax")
        return response

    async def token(request: Request) -> Response:
        form = await _read_form(request)
        response: Response = server.create_token_response(_Request(request, form))
        response.headers["cache-control"] = "no-store"
        return response

    async def userinfo(request: Request) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        person = state.access_tokens.get(value) if scheme.lower() == "bearer" else None
        if person is None:
            return JSONResponse(
                {"error": "invalid_token"},
                status_code=401,
                headers={"www-authenticate": 'Bearer error="invalid_token"'},
            )
        return JSONResponse(person.claims())

    async def logout(request: Request) -> Response:
        state.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        client = state.clients.get(request.query_params.get("client_id", ""))
        target = request.query_params.get("post_logout_redirect_uri")
        answer: Response
        if client is not None and target is not None and target in client.post_logout_redirect_uris:
            answer = RedirectResponse(target, status_code=302)
        else:
            answer = HTMLResponse("<h1>Uitgelogd</h1><p lang='en'>Logged out.</p>")
        answer.delete_cookie(SESSION_COOKIE)
        return answer

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/authorize", authorize, methods=["GET", "POST"]),
            Route("/token", token, methods=["POST"]),
            Route("/userinfo", userinfo, methods=["GET", "POST"]),
            Route("/logout", logout),
        ]
    )


def for_gateway(
    *, port: int, gateway_origins: Sequence[str], client_secret: str, mode: str | None
) -> Starlette:
    """The provider on ``http://127.0.0.1:PORT`` with one client, ``gateway``, for a gateway
    served at ``gateway_origins`` (e.g. ``https://localhost:8443``): what demo mode runs."""
    origins = [origin.rstrip("/") for origin in gateway_origins]
    return create_app(
        issuer=f"http://127.0.0.1:{port}",
        mode=mode,
        clients=[
            DevClient(
                client_id="gateway",
                client_secret=client_secret,
                redirect_uris=[f"{origin}/_gateway/callback" for origin in origins],
                post_logout_redirect_uris=[f"{origin}/" for origin in origins],
            )
        ],
    )


def _chooser(query: str) -> str:
    buttons = "".join(
        f'<li><button name="person" value="{html.escape(p.subject)}">'
        f"{html.escape(p.name)} — {html.escape(', '.join(p.roles))}"
        f"{' @ ' + html.escape(p.tenant) if p.tenant else ''}</button></li>"
        for p in PEOPLE
    )
    action = "/authorize?" + query
    return (
        '<!doctype html><html lang="nl"><head><meta charset="utf-8">'
        "<title>Dev IdP: kies een persoon</title></head><body><main>"
        "<h1>Demo-inlog</h1><p>Kies als wie u inlogt.</p>"
        '<p lang="en">Demo login: choose who to log in as.</p>'
        f'<form method="post" action="{html.escape(action)}"><ul>{buttons}</ul></form>'
        "</main></body></html>"
    )


__all__ = ["API_AUDIENCE", "DevClient", "create_app", "for_gateway"]
