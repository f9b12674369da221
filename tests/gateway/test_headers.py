"""gateway/headers.py: the mutate stage, asserted on what a real upstream received."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets.sync.client

from audit import MemorySink
from gateway import headers as headers_module
from gateway.assertion import AssertionSigner, generate_key, verify_assertion
from gateway.headers import (
    DEFAULT_SESSION_COOKIE,
    MutateHeaders,
    forwardable_request_headers,
    forwardable_response_headers,
    normalise_name,
)
from gateway.types import ANONYMOUS, SCOPE_KEY, GatewayState, Identity, StageMissing
from tests.gateway._apps import upstream_app
from tests.gateway._asgi import http_scope, with_state
from tests.gateway._gateway import gateway_app
from tests.gateway._servers import serve_thread

ISS = "https://gateway.example"
AUD = "platform"
TEACHER = Identity(
    issuer="https://idp.example",
    subject="t-1",
    roles=frozenset({"teacher"}),
    tenant="school-a",
    method="session",
)
SIGNER = AssertionSigner(keys=[generate_key()], issuer=ISS, audience=AUD)


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_thread(upstream_app()) as url:
        yield url


@pytest.fixture(scope="module")
def gateway_url(upstream_url: str) -> Iterator[str]:
    app = gateway_app(upstream_url, audit=MemorySink(), who=TEACHER, signer=SIGNER)
    with serve_thread(app, lifespan="on", server_header=False) as url:
        yield url


def _received(gateway_url: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The header list the upstream received for a GET carrying ``headers``."""
    with httpx.Client(base_url=gateway_url, timeout=10) as client:
        response = client.get("/echo", headers=headers)
    assert response.status_code == 200
    return [(k, v) for k, v in response.json()["headers"]]


def _names(received: list[tuple[str, str]]) -> list[str]:
    return [normalise_name(k.encode()).decode() for k, _ in received]


def _value(received: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in received if k == name]


SPOOFED = [
    "X-Auth-User",
    "x-auth-user",
    "X-AUTH-USER",
    "X_Auth_User",
    "x_auth_user",
    "X.Auth.User",
    "X~Auth~User",
    "x-auth_user",
    "X-User",
    "X_User",
    "X-Email",
    "X-Roles",
    "X-Tenant",
    "X-Forwarded-User",
    "X_Forwarded_Email",
    "Remote-User",
    "REMOTE_USER",
    "X-Gateway-Subject",
    "X-Gateway-Roles",
    "x_gateway_tenant",
    "X.Gateway.Roles",
    "X-Gateway-Assertion",
    "X-Authenticated-User",
    "X-Remote-User",
    "X-Original-URL",
    "X-HTTP-Method-Override",
    "Forwarded",
]


class TestIdentityHeadersStripped:
    @pytest.mark.parametrize("name", SPOOFED)
    def test_variant_never_reaches_upstream(self, gateway_url: str, name: str) -> None:
        """A client-supplied identity header in any spelling is removed before forwarding."""
        received = _received(gateway_url, [(name, "admin"), (name, "admin")])
        assert all(v != "admin" for _, v in received), received

    def test_our_values_replace_spoofed_ones(self, gateway_url: str) -> None:
        """Each of our identity headers arrives exactly once, with the gateway's value."""
        received = _received(
            gateway_url,
            [("X-Gateway-Tenant", "school-b"), ("X_Gateway_Tenant", "school-c")],
        )
        assert _value(received, "x-gateway-tenant") == ["school-a"]
        assert _names(received).count("x-gateway-tenant") == 1

    def test_connection_cannot_remove_our_headers(self, gateway_url: str) -> None:
        """Listing our headers in Connection does not make the gateway drop them."""
        received = _received(
            gateway_url,
            [("Connection", "X-Gateway-Assertion, X-Forwarded-For, X-Request-ID, X-Gateway-Roles")],
        )
        names = _names(received)
        for name in ("x-gateway-assertion", "x-forwarded-for", "x-request-id", "x-gateway-roles"):
            assert name in names

    def test_websocket_handshake_stripped_too(self, gateway_url: str) -> None:
        """The same stripping applies to WebSocket upgrades."""
        ws_url = gateway_url.replace("http", "ws") + "/ws-headers"
        with websockets.sync.client.connect(
            ws_url, additional_headers=[("X_Auth_User", "admin"), ("X-Gateway-Roles", "admin")]
        ) as ws:
            received = json.loads(ws.recv(timeout=5))
        assert all(v != "admin" for _, v in received)
        assert ["x-gateway-roles", "teacher"] in received


class TestAddedHeaders:
    def test_identity_headers(self, gateway_url: str) -> None:
        """Subject, issuer, roles, tenant and method are passed as headers."""
        received = dict(_received(gateway_url, []))
        assert received["x-gateway-user-id"] == "https://idp.example|t-1"
        assert received["x-gateway-subject"] == "t-1"
        assert received["x-gateway-issuer"] == "https://idp.example"
        assert received["x-gateway-roles"] == "teacher"
        assert received["x-gateway-tenant"] == "school-a"
        assert received["x-gateway-auth"] == "session"

    def test_assertion_verifies_at_the_upstream(self, gateway_url: str) -> None:
        """The upstream can verify the assertion with the published JWKS."""
        received = dict(_received(gateway_url, []))
        claims = verify_assertion(
            received["x-gateway-assertion"], SIGNER.jwks(), issuer=ISS, audience=AUD
        )
        assert claims["sub"] == "https://idp.example|t-1"
        assert claims["tenant"] == "school-a"

    def test_forwarded_headers_replaced(self, gateway_url: str) -> None:
        """X-Forwarded-For/Proto/Host come from the gateway state, never from the client."""
        received = _received(
            gateway_url,
            [
                ("X-Forwarded-For", "203.0.113.66"),
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Host", "evil.example"),
                ("X_Forwarded_For", "203.0.113.67"),
            ],
        )
        assert _value(received, "x-forwarded-for") == ["192.0.2.10"]
        assert _value(received, "x-forwarded-proto") == ["https"]
        assert _value(received, "x-forwarded-host") == ["gateway.example"]

    @pytest.mark.parametrize("given", ["abc-123-def-456", "<script>alert(1)</script>"])
    def test_client_request_id_replaced_by_the_gateways(self, gateway_url: str, given: str) -> None:
        """The upstream sees the gateway's request id (the one in the audit log), never the
        client's: the https stage takes an id only from trusted proxies."""
        received = _received(gateway_url, [("X-Request-ID", given)])
        (value,) = _value(received, "x-request-id")
        assert value != given
        assert re.fullmatch(r"[0-9a-f]{32}", value)


class TestCookies:
    def test_session_cookie_removed_others_kept(self, gateway_url: str) -> None:
        """The gateway's session cookie is removed from Cookie; other cookies stay."""
        cookie = f"a=1; {DEFAULT_SESSION_COOKIE}=secret; b=2; {DEFAULT_SESSION_COOKIE.upper()}=x"
        received = _received(gateway_url, [("Cookie", cookie)])
        assert _value(received, "cookie") == ["a=1; b=2"]

    def test_upstream_cannot_set_the_session_cookie(self, gateway_url: str) -> None:
        """A Set-Cookie for the gateway's session cookie never reaches the client; others do."""
        with httpx.Client(base_url=gateway_url) as client:
            response = client.get("/set-session-cookie")
        cookies = response.headers.get_list("set-cookie")
        assert len(cookies) == 1
        assert cookies[0].startswith("upstream_cookie=kept")

    def test_only_session_cookie_drops_header(self, gateway_url: str) -> None:
        """When only the session cookie was sent, no Cookie header is forwarded."""
        received = _received(gateway_url, [("Cookie", f"{DEFAULT_SESSION_COOKIE}=secret")])
        assert "cookie" not in _names(received)


class TestResponseHeaders:
    def test_client_connection_does_not_strip_response_headers(self, gateway_url: str) -> None:
        """A client's Connection header never removes headers from the response."""
        with httpx.Client(base_url=gateway_url) as client:
            response = client.get("/echo", headers={"Connection": "X-Upstream, content-type"})
        assert response.headers["x-upstream"] == "echo"
        assert response.headers["content-type"] == "application/json"

    def test_upstream_software_banners_dropped(self, gateway_url: str) -> None:
        """The upstream's Server and X-Powered-By never reach the client; other headers do."""
        with httpx.Client(base_url=gateway_url) as client:
            response = client.get("/banners")
        assert response.status_code == 200
        assert "x-powered-by" not in response.headers
        assert "server" not in response.headers
        assert response.headers["x-kept"] == "1"

    async def test_banners_dropped_in_any_spelling(self) -> None:
        """Banner headers go whatever their case or punctuation (X_Powered_By)."""
        sent: list[dict[str, Any]] = []

        async def upstream(scope: Any, receive: Any, send: Any) -> None:
            headers = [(b"SERVER", b"nginx/1.2"), (b"X_Powered_By", b"Express"), (b"X-Ok", b"1")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def capture(message: Any) -> None:
            sent.append(dict(message))

        await MutateHeaders(upstream, signer=SIGNER)(_scope(TEACHER), receive, capture)
        assert sent[0]["headers"] == [(b"X-Ok", b"1")]

    def test_upstream_connection_cannot_drop_security_headers(self) -> None:
        """Security headers survive an upstream Connection header naming them; others go."""
        kept = forwardable_response_headers(
            [
                (b"Connection", b"Strict-Transport-Security, X-Private, Content-Security-Policy"),
                (b"Strict-Transport-Security", b"max-age=63072000"),
                (b"Content-Security-Policy", b"default-src 'self'"),
                (b"X-Private", b"1"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Set-Cookie", b"a=1"),
                (b"Set-Cookie", b"b=2"),
            ]
        )
        assert [k for k, _ in kept] == [
            b"Strict-Transport-Security",
            b"Content-Security-Policy",
            b"Set-Cookie",
            b"Set-Cookie",
        ]


class TestUnits:
    def test_request_hop_by_hop(self) -> None:
        """Hop-by-hop headers and those named in Connection are dropped, case-insensitively."""
        kept = forwardable_request_headers(
            [
                (b"connection", b"X-Hop, x_other"),
                (b"X-Hop", b"1"),
                (b"X-Other", b"1"),
                (b"TE", b"trailers"),
                (b"Host", b"client.example"),
                (b"Expect", b"100-continue"),
                (b"Transfer_Encoding", b"chunked"),
                (b"keep.alive", b"1"),
                (b"Accept", b"*/*"),
            ]
        )
        assert kept == [(b"Accept", b"*/*")]

    def test_non_ascii_identity_is_encoded(self) -> None:
        """A subject with non-ASCII or control characters cannot inject a header line."""
        who = Identity(
            issuer="https://idp.example",
            subject="jöe\r\nX-Gateway-Roles: admin",
            roles=frozenset({"student"}),
            tenant=None,
            method="bearer",
        )
        stage = MutateHeaders(_noop, signer=SIGNER)
        headers = dict(stage.rewrite(_scope(who)))
        assert headers[b"x-gateway-subject"] == b"j%C3%B6e%0D%0AX-Gateway-Roles:%20admin"
        assert b"x-gateway-tenant" not in headers

    def test_anonymous_has_no_user_headers(self) -> None:
        """An anonymous request carries its role and an assertion, but no user id."""
        headers = dict(MutateHeaders(_noop, signer=SIGNER).rewrite(_scope(ANONYMOUS)))
        assert headers[b"x-gateway-auth"] == b"anonymous"
        assert headers[b"x-gateway-roles"] == b"anonymous"
        assert b"x-gateway-user-id" not in headers
        assert b"x-gateway-assertion" in headers

    def test_new_assertion_after_reuse_window(self) -> None:
        """The cached identity headers follow the signer: a fresh assertion once it re-signs."""
        clock = [1_800_000_000.0]
        signer = AssertionSigner(
            keys=[generate_key()], issuer=ISS, audience=AUD, clock=lambda: clock[0]
        )
        stage = MutateHeaders(_noop, signer=signer)
        first = dict(stage.rewrite(_scope(TEACHER)))[b"x-gateway-assertion"]
        assert dict(stage.rewrite(_scope(TEACHER)))[b"x-gateway-assertion"] == first
        clock[0] += 30
        assert dict(stage.rewrite(_scope(TEACHER)))[b"x-gateway-assertion"] != first
        other = dict(stage.rewrite(_scope(ANONYMOUS)))
        assert other[b"x-gateway-roles"] == b"anonymous"

    def test_custom_identity_header_list(self) -> None:
        """Extra identity headers can be configured; variants are matched the same way."""
        stage = MutateHeaders(_noop, signer=SIGNER, identity_headers=("x-school-admin",))
        scope = _scope(TEACHER, [(b"X_School_Admin", b"1"), (b"X-User", b"kept-now")])
        headers = stage.rewrite(scope)
        assert (b"X_School_Admin", b"1") not in headers
        assert (b"X-User", b"kept-now") in headers

    def test_remembered_names_decide_as_before(self) -> None:
        """Names remembered from earlier requests (and a flood of new names that empties the
        memory) change nothing: identity headers still go, others stay, Connection still
        names headers to drop."""
        stage = MutateHeaders(_noop, signer=SIGNER)
        flood = [(f"x-n{n}".encode(), b"1") for n in range(3000)]
        stage.rewrite(_scope(TEACHER, flood))
        for _ in range(2):
            headers = stage.rewrite(
                _scope(
                    TEACHER,
                    [
                        (b"X_Auth_User", b"admin"),
                        (b"Accept", b"*/*"),
                        (b"Connection", b"x-hop"),
                        (b"X-Hop", b"1"),
                        (b"x-n1", b"1"),
                    ],
                )
            )
            names = [name for name, _ in headers]
            assert b"X_Auth_User" not in names and b"X-Hop" not in names
            assert b"Connection" not in names
            assert (b"Accept", b"*/*") in headers and (b"x-n1", b"1") in headers

    def test_identity_required(self) -> None:
        """Without the authenticate stage the mutate stage refuses to run."""
        scope = _scope(TEACHER)
        scope[SCOPE_KEY].identity = None
        with pytest.raises(StageMissing, match="authenticate"):
            MutateHeaders(_noop, signer=SIGNER).rewrite(scope)

    @pytest.mark.parametrize(
        "options",
        [
            {"session_cookie": "bad cookie"},
            {"session_cookie": ""},
            {"identity_prefixes": ("x-auth-",)},
            {"identity_headers": ("x-user ",)},
        ],
    )
    def test_bad_options(self, options: dict[str, Any]) -> None:
        """Bad settings fail when the stage is built."""
        with pytest.raises(ValueError):
            MutateHeaders(_noop, signer=SIGNER, **options)


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called in unit tests")


def _scope(who: Identity, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "headers": headers or [],
        SCOPE_KEY: GatewayState(
            request_id="req-0001-abcd", client_ip="192.0.2.1", host="gw.example", identity=who
        ),
    }


class TestGatewayCookiesNeverForwarded:
    def test_login_state_cookie_is_stripped(self) -> None:
        """The OIDC login-state cookie is removed like the session cookie; others stay."""
        stage = MutateHeaders(_noop, signer=SIGNER)
        scope = with_state(
            http_scope(
                "/x", headers=[("cookie", "__Host-gw_login=v1.x; theme=dark; __HOST-GW_SESSION=y")]
            ),
            path="/x",
            identity=ANONYMOUS,
        )
        assert dict(stage.rewrite(scope))[b"cookie"] == b"theme=dark"

    def test_remembered_cookie_header_is_stripped_again(self) -> None:
        """The same Cookie header twice (remembered the second time) loses the session cookie
        both times; a very long one is stripped the same way without being remembered."""
        stage = MutateHeaders(_noop, signer=SIGNER)
        value = f"{DEFAULT_SESSION_COOKIE}=v1.secret; theme=dark".encode()
        for _ in range(2):
            scope = with_state(http_scope("/x"), path="/x", identity=ANONYMOUS)
            scope["headers"] = [(b"cookie", value)]
            assert dict(stage.rewrite(scope))[b"cookie"] == b"theme=dark"
        long_value = value + b"; pad=" + b"x" * 5000
        scope = with_state(http_scope("/x"), path="/x", identity=ANONYMOUS)
        scope["headers"] = [(b"cookie", long_value)]
        assert dict(stage.rewrite(scope))[b"cookie"] == b"theme=dark; pad=" + b"x" * 5000
        assert long_value not in stage._cookies


class TestRememberedHeaders:
    """What the mutate stage remembers between requests, and that it stays correct."""

    def test_identity_headers_built_once_per_assertion(self) -> None:
        """The same identity object with the same assertion gets the headers built before."""
        stage = MutateHeaders(
            _noop, signer=AssertionSigner(keys=[generate_key()], issuer=ISS, audience=AUD)
        )
        assert stage._identity_headers(TEACHER) is stage._identity_headers(TEACHER)

    def test_equal_identity_object_gets_its_own_headers_right(self) -> None:
        """Another object equal to a remembered identity gets the same values."""
        stage = MutateHeaders(_noop, signer=SIGNER)
        twin = Identity(
            issuer=TEACHER.issuer,
            subject=TEACHER.subject,
            roles=frozenset(TEACHER.roles),
            tenant=TEACHER.tenant,
            method=TEACHER.method,
        )
        assert dict(stage.rewrite(_scope(twin))) == dict(stage.rewrite(_scope(TEACHER)))

    def test_remembered_identities_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Many identities never make the remembered identity headers exceed their bound."""
        monkeypatch.setattr(headers_module, "_IDENTITY_CACHE_LIMIT", 3)
        stage = MutateHeaders(_noop, signer=SIGNER)
        for n in range(10):
            who = Identity(
                issuer="https://idp.example",
                subject=f"s-{n}",
                roles=frozenset({"student"}),
                tenant="school-a",
                method="session",
            )
            assert dict(stage.rewrite(_scope(who)))[b"x-gateway-subject"] == f"s-{n}".encode()
        assert 0 < len(stage._identity_cache) <= 3

    def test_forwarded_headers_follow_the_request(self) -> None:
        """Remembered X-Forwarded-* headers are those of each request's address and host."""
        stage = MutateHeaders(_noop, signer=SIGNER)
        for ip, host in [("192.0.2.1", "gw.example"), ("192.0.2.2", "other.example")] * 2:
            scope = _scope(TEACHER)
            scope[SCOPE_KEY].client_ip = ip
            scope[SCOPE_KEY].host = host
            headers = dict(stage.rewrite(scope))
            assert headers[b"x-forwarded-for"] == ip.encode()
            assert headers[b"x-forwarded-host"] == host.encode()
            assert headers[b"x-forwarded-proto"] == b"https"

    def test_forwarded_headers_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Ever new client addresses never make the remembered sets exceed their bound."""
        monkeypatch.setattr(headers_module, "_VALUE_CACHE_LIMIT", 4)
        stage = MutateHeaders(_noop, signer=SIGNER)
        for n in range(20):
            scope = _scope(TEACHER)
            scope[SCOPE_KEY].client_ip = f"198.51.100.{n}"
            stage.rewrite(scope)
        assert 0 < len(stage._forwarded) <= 4
