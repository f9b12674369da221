"""gateway/https.py: HTTPS only, HSTS everywhere, forwarding headers only from trusted peers."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.https import (
    ForwardedResolver,
    HTTPSStage,
    RedirectApp,
    RedirectTarget,
    new_request_id,
)
from gateway.types import Receive, Scope, Send
from tests.gateway._asgi import Recorder, call, http_scope

HOSTS = ("platform.example.nl", "www.platform.example.nl")
TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


def stage(
    inner: Recorder, *, trusted: bool = False, allow_plain_http: bool = False, port: int = 443
) -> HTTPSStage:
    return HTTPSStage(
        inner,
        resolver=ForwardedResolver(trusted_proxies=TRUSTED if trusted else ()),
        redirect=RedirectTarget(public_hosts=HOSTS, https_port=port),
        hsts_max_age=31536000,
        allow_plain_http=allow_plain_http,
    )


class TestRedirect:
    async def test_plain_http_is_redirected_with_308(self) -> None:
        """A plain-HTTP request is answered with 308 to the same path on HTTPS."""
        inner = Recorder()
        result = await call(stage(inner), http_scope("/activities", scheme="http", query=b"q=1"))
        assert result.status == 308
        assert result.header("location") == "https://platform.example.nl/activities?q=1"
        assert not inner.called

    async def test_unknown_host_is_not_echoed(self) -> None:
        """The redirect goes to a configured host, never to the one the client named."""
        scope = http_scope("/", scheme="http", host="evil.example")
        result = await call(stage(Recorder()), scope)
        assert result.header("location") == "https://platform.example.nl/"

    async def test_known_host_is_kept_and_port_added(self) -> None:
        """A configured host is kept; a non-default HTTPS port is added."""
        scope = http_scope("/x", scheme="http", host="WWW.Platform.Example.NL.:8080")
        result = await call(stage(Recorder(), port=8443), scope)
        assert result.header("location") == "https://www.platform.example.nl:8443/x"

    async def test_location_cannot_carry_header_injection(self) -> None:
        """Bytes that are not URL characters are percent-encoded in Location."""
        scope = http_scope("/", raw_path=b"/a b\xc3\xa9<x>", scheme="http")
        result = await call(stage(Recorder()), scope)
        assert result.header("location") == "https://platform.example.nl/a%20b%C3%A9%3Cx%3E"

    async def test_plain_http_allowed_when_configured(self) -> None:
        """With allow_plain_http (local development) the request passes, without HSTS."""
        inner = Recorder()
        result = await call(stage(inner, allow_plain_http=True), http_scope(scheme="http"))
        assert result.status == 200
        assert result.header("strict-transport-security") is None

    async def test_redirect_listener(self) -> None:
        """The plain-HTTP listener only redirects."""
        app = RedirectApp(redirect=RedirectTarget(public_hosts=HOSTS, https_port=8443))
        result = await call(app, http_scope("/login", scheme="http", method="POST"))
        assert result.status == 308
        assert result.header("location") == "https://platform.example.nl:8443/login"


class TestHSTS:
    async def test_every_https_response_has_hsts(self) -> None:
        """HSTS of at least a year with includeSubDomains is on every HTTPS response."""
        result = await call(stage(Recorder()), http_scope())
        assert result.header("strict-transport-security") == "max-age=31536000; includeSubDomains"

    async def test_upstream_cannot_weaken_hsts(self) -> None:
        """An upstream's own HSTS header is replaced by ours, not duplicated."""
        inner = Recorder(headers=[(b"strict-transport-security", b"max-age=0")])
        result = await call(stage(inner), http_scope())
        assert result.header_values("strict-transport-security") == [
            "max-age=31536000; includeSubDomains"
        ]

    async def test_request_id_on_response(self) -> None:
        """Every response carries the gateway's request id."""
        inner = Recorder()
        result = await call(stage(inner), http_scope())
        assert result.header("x-request-id") == inner.state.request_id


SPOOFING_HEADERS = [
    ("X-Forwarded-For", "198.51.100.1"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("Forwarded", 'for=198.51.100.1;proto=https;host="evil.example"'),
    ("X-Request-ID", "attacker-chosen-id-123"),
]


class TestUntrustedPeers:
    async def test_forwarding_headers_ignored(self) -> None:
        """From an untrusted peer, forwarding headers change neither IP, scheme, host nor id."""
        inner = Recorder()
        await call(stage(inner), http_scope(headers=SPOOFING_HEADERS))
        assert inner.state.client_ip == "203.0.113.7"
        assert inner.state.host == "platform.example.nl"
        assert inner.state.request_id != "attacker-chosen-id-123"

    async def test_forwarded_proto_cannot_skip_the_redirect(self) -> None:
        """X-Forwarded-Proto: https from an untrusted peer does not make plain HTTP secure."""
        inner = Recorder()
        scope = http_scope(scheme="http", headers=[("X-Forwarded-Proto", "https")])
        result = await call(stage(inner), scope)
        assert result.status == 308
        assert not inner.called


class TestTrustedProxies:
    async def test_x_forwarded_headers_used(self) -> None:
        """From a trusted proxy, X-Forwarded-For/Proto/Host decide IP, scheme and host."""
        inner = Recorder()
        scope = http_scope(
            scheme="http",
            client=("10.1.2.3", 40000),
            headers=[
                ("X-Forwarded-For", "198.51.100.1"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "www.platform.example.nl"),
                ("X-Request-ID", "lb-request-0001"),
            ],
        )
        result = await call(stage(inner, trusted=True), scope)
        assert result.status == 200
        assert inner.state.client_ip == "198.51.100.1"
        assert inner.state.scheme == "https"
        assert inner.state.host == "www.platform.example.nl"
        assert inner.state.request_id == "lb-request-0001"

    async def test_rightmost_untrusted_hop_is_the_client(self) -> None:
        """A client-forged X-Forwarded-For entry left of the real client is ignored."""
        inner = Recorder()
        scope = http_scope(
            client=("10.1.2.3", 40000),
            headers=[("X-Forwarded-For", "1.1.1.1, 198.51.100.9, 10.9.9.9")],
        )
        await call(stage(inner, trusted=True), scope)
        assert inner.state.client_ip == "198.51.100.9"

    async def test_rfc7239_forwarded(self) -> None:
        """The standard Forwarded header is understood, IPv6 with port included."""
        inner = Recorder()
        scope = http_scope(
            scheme="http",
            client=("10.0.0.1", 40000),
            headers=[
                ("Forwarded", 'for="[2001:db9::7]:4711";proto=https;host=platform.example.nl')
            ],
        )
        result = await call(stage(inner, trusted=True), scope)
        assert result.status == 200
        assert inner.state.client_ip == "2001:db9::7"

    async def test_invalid_request_id_replaced(self) -> None:
        """Even from a trusted proxy, a request id with odd characters is replaced."""
        inner = Recorder()
        scope = http_scope(client=("10.0.0.1", 1), headers=[("X-Request-ID", "a\u00e9<script>")])
        await call(stage(inner, trusted=True), scope)
        assert inner.state.request_id != "a\u00e9<script>"

    @pytest.mark.parametrize("peer", ["::ffff:10.0.0.5", "10.200.0.1"])
    def test_ipv4_mapped_peers(self, peer: str) -> None:
        """An IPv4-mapped IPv6 peer counts as its IPv4 address."""
        resolver = ForwardedResolver(trusted_proxies=TRUSTED)
        assert resolver.is_trusted(ipaddress.ip_address(peer))


class TestNonHttp:
    async def test_lifespan_passes_through(self) -> None:
        """Lifespan scopes reach the inner app untouched."""
        seen: list[str] = []

        async def inner(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope["type"])

        https = HTTPSStage(
            inner,
            resolver=ForwardedResolver(),
            redirect=RedirectTarget(public_hosts=HOSTS, https_port=443),
            hsts_max_age=31536000,
        )
        await https({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
        assert seen == ["lifespan"]

    async def test_plain_websocket_refused(self) -> None:
        """A ws:// upgrade is closed with policy violation, not served."""
        inner = Recorder()
        result = await call(stage(inner), http_scope(scheme="ws", scope_type="websocket"))
        assert result.messages == [{"type": "websocket.close", "code": 1008}]
        assert not inner.called


class TestPeerAddress:
    @pytest.mark.parametrize("peer", ["testclient", "", "unix:/run/sock"])
    def test_non_ip_peer_gives_no_client_ip(self, peer: str) -> None:
        """A peer that is not an IP address yields no client IP (never junk in source.ip)."""
        client_ip, _, _, trusted = ForwardedResolver().resolve(http_scope(client=(peer, 0)))
        assert client_ip is None
        assert trusted is False


class TestRequestIds:
    def test_unique_and_well_formed(self) -> None:
        """Request ids are 32 hex characters and never repeat within a process."""
        ids = [new_request_id() for _ in range(10_000)]
        assert len(set(ids)) == len(ids)
        assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)


class TestHeaderLimits:
    async def test_too_many_headers_is_a_431(self) -> None:
        """More header lines than the limit: 431, nothing reaches the next stage (CWE-770)."""
        inner = Recorder()
        headers = [(f"x-h{i}", "v") for i in range(150)]
        result = await call(stage(inner), http_scope(headers=headers))
        assert result.status == 431
        assert not inner.called

    async def test_too_many_bytes_is_a_431(self) -> None:
        """A header block over the byte limit (a huge cookie): 431."""
        inner = Recorder()
        result = await call(stage(inner), http_scope(headers=[("cookie", "a=" + "x" * 40_000)]))
        assert result.status == 431
        assert not inner.called

    async def test_within_limits_passes(self) -> None:
        """Ordinary requests are untouched."""
        inner = Recorder()
        result = await call(stage(inner), http_scope(headers=[("cookie", "a=" + "x" * 4000)]))
        assert result.status == 200
