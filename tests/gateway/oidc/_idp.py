"""A fake identity provider for unit tests: discovery, JWKS and token endpoint under respx.

It mints real signed tokens (joserfc) and lets each test bend one rule: the claims of the next
ID token, the signing key or algorithm, the token endpoint's answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import respx
from joserfc import jwt
from joserfc.jwk import Key, OctKey, RSAKey

from audit import AuditSink, MemorySink
from gateway.app import GatewayApp, create_app
from gateway.authn import AuthenticateStage
from gateway.oidc import OIDC, RevocationStore, SharedState
from gateway.settings import Settings, load_settings
from gateway.types import Decision
from tests.gateway._asgi import Recorder
from tests.gateway.oidc._support import Clock

ISSUER = "https://idp.test"
CLIENT_ID = "gateway-client"
HOST = "platform.example.nl"
ROOT = Path(__file__).resolve().parents[3]


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


class FakeIdP:
    """Answers discovery, JWKS and token requests for ``issuer`` through ``router``."""

    def __init__(
        self, router: respx.MockRouter, *, issuer: str = ISSUER, clock: Clock | None = None
    ) -> None:
        self.issuer = issuer
        self.clock = clock or Clock(time.time())
        self.signing_key: Key = rsa_key("k1")
        self.published: list[Key] = [self.signing_key]
        self.algorithm = "RS256"
        self.header_overrides: dict[str, Any] = {}
        self.claims: dict[str, Any] = {"roles": ["teacher"], "tenant": "school-a"}
        self.claim_overrides: dict[str, Any] = {}
        self.subject = "user-1"
        self.token_status = 200
        self.token_body: dict[str, Any] | None = None
        self.codes: dict[str, dict[str, str]] = {}
        self.end_session = True
        self.discovery = router.get(f"{issuer}/.well-known/openid-configuration").mock(
            side_effect=self._discovery
        )
        self.jwks = router.get(f"{issuer}/jwks").mock(side_effect=self._jwks)
        self.token = router.post(f"{issuer}/token").mock(side_effect=self._token)
        #: What the introspection endpoint answers (RFC 7662).
        self.introspection_body: dict[str, Any] = {"active": False}
        self.introspection = router.post(f"{issuer}/introspect").mock(side_effect=self._introspect)

    # --- endpoints -------------------------------------------------------------------------

    def _discovery(self, request: httpx.Request) -> httpx.Response:
        doc = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }
        if self.end_session:
            doc["end_session_endpoint"] = f"{self.issuer}/logout"
        doc["introspection_endpoint"] = f"{self.issuer}/introspect"
        return httpx.Response(200, json=doc)

    def _introspect(self, request: httpx.Request) -> httpx.Response:
        if not request.headers.get("authorization", "").startswith("Basic "):
            return httpx.Response(401, json={"error": "invalid_client"})
        return httpx.Response(200, json=self.introspection_body)

    def _jwks(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"keys": [k.as_dict(private=False) for k in self.published]}
        )

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if self.token_status != 200 or self.token_body is not None:
            return httpx.Response(self.token_status, json=self.token_body or {"error": "x"})
        issued = self.codes.pop(form.get("code", ""), None)
        if issued is None:
            return httpx.Response(400, json={"error": "invalid_grant"})
        challenge = (
            base64.urlsafe_b64encode(
                hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            )
            .rstrip(b"=")
            .decode()
        )
        if (
            challenge != issued["code_challenge"]
            or form.get("redirect_uri") != issued["redirect_uri"]
        ):
            return httpx.Response(400, json={"error": "invalid_grant"})
        id_token = self.id_token(nonce=issued["nonce"])
        return httpx.Response(
            200, json={"access_token": "at", "token_type": "Bearer", "id_token": id_token}
        )

    # --- minting ---------------------------------------------------------------------------

    def base_claims(self, **extra: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            **self.claims,
            **extra,
        }
        claims.update(self.claim_overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], *, key: Key | None = None) -> str:
        key = key or self.signing_key
        header = {"alg": self.algorithm, "kid": key.kid, **self.header_overrides}
        header = {k: v for k, v in header.items() if v is not None}
        if header["alg"] == "none":  # joserfc refuses to make these: build one by hand
            return f"{_b64(header)}.{_b64(claims)}."
        return jwt.encode(header, claims, key, algorithms=[self.algorithm])

    def id_token(self, *, nonce: str) -> str:
        return self.sign(self.base_claims(nonce=nonce))

    def authorize(self, location: str) -> str:
        """What the provider does at /authorize: remember the request, hand back a code."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        code = f"code-{len(self.codes)}-{query['state'][:6]}"
        self.codes[code] = query
        return code

    def rotate(self, kid: str) -> None:
        """A new signing key, published next to the old one."""
        self.signing_key = rsa_key(kid)
        self.published = [self.signing_key, *self.published]


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def hmac_key(kid: str) -> OctKey:
    return OctKey.generate_key(256, parameters={"kid": kid})


class AllowAuthenticated:
    """Fake authorizer: anonymous may reach the login endpoints; signed-in users their tenant."""

    def decide(self, *, roles: Any, tenant: str | None, method: str, path: str) -> Decision:
        open_paths = ("/_gateway/login", "/_gateway/callback", "/_gateway/backchannel-logout")
        if path in open_paths:
            return Decision(allowed=True, reason="allowed", rule="test_open")
        if "anonymous" in roles:
            return Decision(allowed=False, reason="no_matching_rule")
        if path.startswith("/schools/"):
            allowed = path.split("/")[2] == tenant
            return Decision(allowed=allowed, reason="allowed" if allowed else "no_matching_rule")
        return Decision(allowed=True, reason="allowed", rule="test_signed_in")


def settings(tmp_path: Path, **environ: str) -> Settings:
    grants = tmp_path / "grants.toml"
    if not grants.exists():
        grants.write_text("grants = []\n")
    keys = environ.pop("keys", base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("="))
    return load_settings(
        environ={
            "GATEWAY_SERVER__PUBLIC_HOSTS": HOST,
            "GATEWAY_SERVER__ALLOW_PLAIN_HTTP": "true",
            # Required outside demo mode; the identity assertion is not part of these tests.
            "GATEWAY_ASSERTION__KEY_FILES": str(tmp_path / "unused-assertion-key.pem"),
            "GATEWAY_OIDC__ISSUERS__TESTIDP__DISCOVERY_URL": (
                f"{ISSUER}/.well-known/openid-configuration"
            ),
            "GATEWAY_OIDC__ISSUERS__TESTIDP__CLIENT_ID": CLIENT_ID,
            "GATEWAY_OIDC__ISSUERS__TESTIDP__CLIENT_SECRET": "client-secret",
            "GATEWAY_OIDC__ISSUERS__TESTIDP__CLAIMS": "devidp",
            "GATEWAY_OIDC__ISSUERS__TESTIDP__AUDIENCES": "platform-api",
            "GATEWAY_OIDC__CLAIMS_FILE": str(ROOT / "policies" / "claims.toml"),
            "GATEWAY_OIDC__GRANTS_FILE": str(grants),
            "GATEWAY_SESSION__KEYS": keys,
            "GATEWAY_OIDC__SHARED_STATE": "memory",
            **{f"GATEWAY_{k}": v for k, v in environ.items()},
        }
    )


class Gateway:
    """A whole gateway (built per test: caches live on the OIDC component) and a browser."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        clock: Clock | None = None,
        oidc_settings: Settings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sink: AuditSink | None = None,
        shared: SharedState | None = None,
        revocations: RevocationStore | None = None,
    ) -> None:
        self.sink = MemorySink()
        self.audit: AuditSink = sink or self.sink
        self.clock = clock or Clock(time.time())
        self.monotonic = Clock(1000.0)
        self.settings = oidc_settings or settings(tmp_path)
        self.oidc = OIDC(
            settings=self.settings,
            sink=self.audit,
            clock=self.clock,
            monotonic=self.monotonic,
            transport=transport,
            shared=shared,
            revocations=revocations,
        )
        self.upstream = Recorder()
        self.app: GatewayApp = create_app(
            self.settings,
            authorizer=AllowAuthenticated(),
            sink=self.audit,
            forward=self.upstream,
            authenticators=self.oidc.authenticators,
            routes=self.oidc.routes,
            login_path=self.oidc.login_path,
        )
        _insert_stages(self.app, self.oidc)
        self.browser = self.client()

    def client(self, address: str = "198.51.100.9") -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(address, 4000)),
            base_url=f"https://{HOST}",
            headers={"accept": "text/html"},
        )

    def reasons(self, action: str) -> list[str]:
        return [str(e.get("event.reason")) for e in self.sink.events if e["event.action"] == action]

    async def start_login(self, path: str = "/_gateway/login", next_path: str = "/home") -> str:
        response = await self.browser.get(path, params={"next": next_path})
        assert response.status_code == 303, response.text
        return response.headers["location"]

    async def login(self, idp: FakeIdP, *, next_path: str = "/home") -> httpx.Response:
        location = await self.start_login(next_path=next_path)
        code = idp.authorize(location)
        state = parse_qs(urlsplit(location).query)["state"][0]
        return await self.browser.get("/_gateway/callback", params={"state": state, "code": code})

    async def aclose(self) -> None:
        await self.browser.aclose()
        await self.oidc.aclose()


def _insert_stages(app: GatewayApp, oidc: OIDC) -> None:
    """Put the OIDC stages in front of authenticate (what gateway/app.py will do when wired)."""
    node: Any = app.pipeline
    while not isinstance(getattr(node, "app", None), AuthenticateStage):
        node = node.app
    inner: Any = node.app
    for middleware in reversed(oidc.stages()):
        cls, args, kwargs = middleware
        inner = cls(inner, *args, **kwargs)
    node.app = inner


Mutator = Callable[[FakeIdP], None]
