"""Trust boundary: what a client that is not a trusted proxy says about itself changes nothing.

The deployment has no trusted proxies (the default), so every forwarding header below comes
from an untrusted peer (127.0.0.1) and must not change routing, the policy decision, a redirect
target, the audit ``source.ip`` or what the upstream receives. The advisories this guards:
CWE-348 (use of less trusted source), CWE-290 (authentication bypass by spoofing), CWE-441
(unintended proxy), the ``X-Original-URL``/``X-Rewrite-URL`` routing overrides of IIS-style
stacks (CVE-2018-8014 class), oauth2-proxy's ``X-Forwarded-Host`` open redirect
(CVE-2021-21291 class), Pomerium's ``X-Forwarded-*`` route override (CVE-2021-41230 class)
and the hop-by-hop ``Connection`` abuse (CWE-444, as in Traefik CVE-2024-45410).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from audit import Scope, sqlite_store
from tests.security._harness import HOST, Deployment, person, upstream_headers

EVIL = "evil.example"
SPOOFED_IP = "203.0.113.9"

#: Forwarding and routing headers a client might send, with hostile values.
FORWARDING: list[tuple[str, str]] = [
    ("X-Forwarded-For", SPOOFED_IP),
    ("X-Forwarded-For", f"{SPOOFED_IP}, 10.0.0.1"),
    ("X-Forwarded-Host", EVIL),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Port", "80"),
    ("X-Forwarded-Uri", "/api/admin/schools"),
    ("X-Forwarded-Prefix", "/api/admin"),
    ("X-Forwarded-Server", EVIL),
    ("X-Real-IP", SPOOFED_IP),
    ("X-Client-IP", SPOOFED_IP),
    ("True-Client-IP", SPOOFED_IP),
    ("CF-Connecting-IP", SPOOFED_IP),
    ("X-Original-URL", "/api/admin/schools"),
    ("X-Original-URI", "/api/admin/schools"),
    ("X-Rewrite-URL", "/api/admin/schools"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("Forwarded", f"for={SPOOFED_IP};host={EVIL};proto=http"),
    ("Forwarded", f'for="[2001:db8::1]";by=unknown, for={SPOOFED_IP}'),
    ("Via", f"1.1 {EVIL}"),
]

#: Client-side claims that gateways have been known to trust for skipping authentication.
BYPASS_HEADERS: list[tuple[str, str]] = [
    ("User-Agent", "kube-probe/1.29"),
    ("User-Agent", "ELB-HealthChecker/2.0"),
    ("User-Agent", "GoogleHC/1.0"),
    ("User-Agent", "Prometheus/2.51.0"),
    ("User-Agent", "Googlebot/2.1 (+http://www.google.com/bot.html)"),
    ("User-Agent", "oauth2-proxy/7.6.0"),
    ("User-Agent", "Pomerium"),
    ("X-Forwarded-User", "demo-platform-admin"),
    ("X-Forwarded-Email", "admin@example.org"),
    ("X-Forwarded-Groups", "platform_admin"),
    ("X-Auth-Request-User", "demo-platform-admin"),
    ("X-Auth-Request-Groups", "platform_admin"),
    ("Remote-User", "demo-platform-admin"),
    ("Remote-Groups", "platform_admin"),
    ("X-Remote-User", "demo-platform-admin"),
    ("X-Gateway-Auth", "session"),
    ("X-Gateway-Roles", "platform_admin"),
    ("X-Gateway-Subject", "demo-platform-admin"),
    ("X-Pomerium-Jwt-Assertion", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),
    ("X-Authenticated-User", "demo-platform-admin"),
    ("X-Ms-Client-Principal-Name", "admin"),
    ("Authorization", "Basic YWRtaW46YWRtaW4="),
    ("Authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),
    ("X-Forwarded-For", "127.0.0.1"),
    ("X-Real-IP", "127.0.0.1"),
    ("Forwarded", "for=127.0.0.1"),
    ("X-Original-URL", "/_gateway/health"),
    ("X-Rewrite-URL", "/activities"),
    ("X-Forwarded-Uri", "/activities"),
    ("X-Forwarded-Prefix", "/activities"),
]

#: The bypass headers that are not a bearer token (a bearer token is checked on every route).
NOT_BEARER = [(n, v) for n, v in BYPASS_HEADERS if not v.startswith("Bearer ")]

#: Connection tokens naming headers a client would like the gateway to drop.
CONNECTION_TOKENS = [
    "Strict-Transport-Security",
    "strict-transport-security, X-Request-ID",
    "close, Strict_Transport_Security",
    "X-Gateway-Subject, X-Gateway-Assertion, X-Gateway-Roles, X-Gateway-Tenant",
    "X-Gateway-User-Id, X-Gateway-Issuer, X-Gateway-Auth",
    "X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host",
    "x_gateway_assertion, X.Gateway.Subject",
    "keep-alive, X-Request-ID",
]


def _echo(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    seen: dict[str, Any] = response.json()
    return seen


def _values(seen: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in upstream_headers(seen) if key == name]


class TestForwardedHeadersFromUntrustedPeers:
    """Forwarding headers from a peer outside ``trusted_proxies`` are ignored."""

    @pytest.mark.parametrize(("name", "value"), FORWARDING, ids=lambda v: str(v)[:40])
    def test_upstream_sees_only_the_gateways_forwarding_values(
        self, deployment: Deployment, name: str, value: str
    ) -> None:
        """CWE-348: the upstream receives the real peer, scheme and host, nothing of ours."""
        with deployment.client() as browser:
            seen = _echo(browser.get("/activities", headers={name: value}))
        assert _values(seen, "x-forwarded-for") == ["127.0.0.1"]
        assert _values(seen, "x-forwarded-proto") == ["https"]
        assert _values(seen, "x-forwarded-host") == [f"{HOST}:{deployment.https_port}"]
        names = {key for key, _ in upstream_headers(seen)}
        assert not names & {
            "forwarded",
            "via",
            "x-real-ip",
            "x-client-ip",
            "true-client-ip",
            "cf-connecting-ip",
            "x-original-url",
            "x-original-uri",
            "x-rewrite-url",
            "x-http-method-override",
            "x-forwarded-port",
            "x-forwarded-uri",
            "x-forwarded-prefix",
            "x-forwarded-server",
        }
        assert seen["method"] == "GET"
        assert seen["raw_path"] == "/activities"

    @pytest.mark.parametrize(("name", "value"), FORWARDING, ids=lambda v: str(v)[:40])
    def test_routing_headers_do_not_reach_a_denied_route(
        self, deployment: Deployment, name: str, value: str
    ) -> None:
        """CVE-2018-8014 class (X-Original-URL): a denied path stays denied whatever the
        headers claim."""
        with deployment.client() as browser:
            response = browser.get("/api/admin/schools", headers={name: value})
        assert response.status_code == 401
        assert "raw_path" not in response.text

    def test_plain_http_redirect_ignores_forwarded_host_and_proto(
        self, deployment: Deployment
    ) -> None:
        """CVE-2021-21291 class (X-Forwarded-Host open redirect): the HTTP listener's 308
        goes to the configured host only."""
        headers = {
            "X-Forwarded-Host": EVIL,
            "Forwarded": f"host={EVIL};proto=https",
            "X-Forwarded-Proto": "https",
        }
        response = httpx.get(
            f"http://127.0.0.1:{deployment.http_port}/activities",
            headers=headers,
            follow_redirects=False,
        )
        assert response.status_code == 308
        location = urlsplit(response.headers["location"])
        assert location.scheme == "https"
        assert location.hostname in deployment.settings.server.public_hosts
        assert EVIL not in response.headers["location"]

    def test_plain_http_redirect_with_an_unknown_host_goes_to_the_configured_one(
        self, deployment: Deployment
    ) -> None:
        """CWE-601: a Host header naming another site is never echoed into the redirect."""
        response = httpx.get(f"http://127.0.0.1:{deployment.http_port}/x", headers={"Host": EVIL})
        assert response.status_code == 308
        assert (
            urlsplit(response.headers["location"]).hostname
            == (deployment.settings.server.public_hosts[0])
        )

    @pytest.mark.parametrize(
        "headers",
        [
            {"X-Forwarded-Host": EVIL},
            {"Forwarded": f"host={EVIL}"},
            {"X-Forwarded-Proto": "http", "X-Forwarded-Host": EVIL},
        ],
    )
    def test_login_redirect_uri_stays_on_the_gateway(
        self, deployment: Deployment, headers: dict[str, str]
    ) -> None:
        """CVE-2021-21291 class: the OIDC ``redirect_uri`` is built from the real request
        host, so a spoofed one cannot send the authorization code elsewhere."""
        with deployment.client() as browser:
            response = browser.get("/_gateway/login", params={"next": "/"}, headers=headers)
        assert response.status_code == 303
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query["redirect_uri"] == [
            f"https://{HOST}:{deployment.https_port}/_gateway/callback"
        ]

    def test_audit_source_ip_is_the_peer(self, deployment: Deployment) -> None:
        """CWE-348: an access_denied event records the peer, not a spoofed forwarding IP."""
        with deployment.client() as browser:
            deployment.log_in(browser, person("student"))
            response = browser.get(
                "/api/admin/schools",
                headers={
                    "X-Forwarded-For": SPOOFED_IP,
                    "X-Real-IP": SPOOFED_IP,
                    "Forwarded": f"for={SPOOFED_IP}",
                },
            )
        assert response.status_code == 403
        request_id = response.headers["x-request-id"]
        store = sqlite_store(path=deployment.settings.audit.sqlite_path)
        deadline = time.monotonic() + 20
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            store.refresh()
            found = [
                event
                for event in store.search(Scope(actions=["access_denied"]), size=500)
                if event.get("trace.id") == request_id
            ]
            time.sleep(0.1)
        assert len(found) == 1
        assert found[0]["source.ip"] == "127.0.0.1"


class TestNoHeaderBypassesAuthentication:
    """No header a client can send replaces a login."""

    @pytest.mark.parametrize(("name", "value"), BYPASS_HEADERS, ids=lambda v: str(v)[:40])
    def test_anonymous_stays_anonymous(self, deployment: Deployment, name: str, value: str) -> None:
        """CWE-290 (authentication bypass by spoofing, as in the health-check and
        ``X-Forwarded-User`` bypasses of auth proxies): a protected route answers 401."""
        with deployment.client() as browser:
            response = browser.get("/api/me", headers={name: value})
        assert response.status_code == 401

    @pytest.mark.parametrize(("name", "value"), NOT_BEARER, ids=lambda v: str(v)[:40])
    def test_public_route_forwards_as_anonymous(
        self, deployment: Deployment, name: str, value: str
    ) -> None:
        """CWE-290: on a public route the upstream is told the caller is anonymous."""
        with deployment.client() as browser:
            seen = _echo(browser.get("/activities", headers={name: value}))
        assert _values(seen, "x-gateway-auth") == ["anonymous"]
        assert _values(seen, "x-gateway-roles") == ["anonymous"]
        assert _values(seen, "x-gateway-subject") == []

    def test_forged_bearer_token_is_refused_on_a_public_route(self, deployment: Deployment) -> None:
        """CVE-2015-9235 class (``alg=none``): an unsigned token is a 401 even where
        anonymous callers are allowed, never a downgrade to anonymous or a forward."""
        forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
        with deployment.client() as browser:
            response = browser.get("/activities", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401
        assert "raw_path" not in response.text


class TestConnectionHeader:
    """A client's ``Connection`` header cannot remove what the gateway adds."""

    @pytest.mark.parametrize("tokens", CONNECTION_TOKENS)
    def test_security_headers_survive(self, deployment: Deployment, tokens: str) -> None:
        """CWE-444 (hop-by-hop abuse): HSTS and the request id are on the response."""
        with deployment.client() as browser:
            for path in ("/activities", "/api/me", "/_gateway/health"):
                response = browser.get(path, headers={"Connection": tokens})
                assert response.headers["strict-transport-security"].startswith("max-age=")
                assert response.headers.get("x-request-id")

    @pytest.mark.parametrize("tokens", CONNECTION_TOKENS)
    def test_identity_headers_survive_for_a_logged_in_user(
        self, deployment: Deployment, tokens: str
    ) -> None:
        """Traefik CVE-2024-45410 class: ``Connection: X-Gateway-*`` does not make the
        gateway drop the identity it forwards."""
        student = person("student")
        with deployment.client() as browser:
            deployment.log_in(browser, student)
            seen = _echo(browser.get("/api/me", headers={"Connection": tokens}))
        assert _values(seen, "x-gateway-subject") == [student.subject]
        assert _values(seen, "x-gateway-auth") == ["session"]
        assert _values(seen, "x-gateway-roles") == ["student"]
        assert _values(seen, "x-gateway-tenant") == [student.tenant]
        assert len(_values(seen, "x-gateway-assertion")) == 1
        assert _values(seen, "x-forwarded-for") == ["127.0.0.1"]
        assert len(_values(seen, "x-request-id")) == 1
        assert "connection" not in {key for key, _ in upstream_headers(seen)}
