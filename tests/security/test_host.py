"""Host: only the configured public host names (and the gateway's ports) are served.

Requests are raw bytes over TLS to the gateway as deployed, so the ``Host`` lines are exactly
what is tested. Guards CWE-644 / host-header injection (password-reset and cache-poisoning
attacks that trust ``Host``), CWE-436 (a front proxy and the gateway reading a different
host: duplicate ``Host``, RFC 9112 §3.2 requires a 400), CWE-1007 (IDN homoglyphs) and the
DNS-rebinding class (any host name reaching the gateway).
"""

from __future__ import annotations

import pytest

from tests.security._harness import Deployment, body_json


def _request(host_lines: list[bytes], *, version: bytes = b"HTTP/1.1") -> bytes:
    request = b"GET /activities " + version + b"\r\n"
    for line in host_lines:
        request += b"Host: " + line + b"\r\n"
    return request + b"Connection: close\r\n\r\n"


def _port(deployment: Deployment) -> bytes:
    return str(deployment.https_port).encode()


#: Spellings of the configured host (``{port}`` is the HTTPS port): served.
ACCEPTED: list[bytes] = [
    b"localhost:{port}",
    b"localhost",
    b"LOCALHOST:{port}",
    b"LocalHost",
    b"localhost.:{port}",
    b"localhost.",
    b"127.0.0.1:{port}",
    b"localhost:443",  # the public port behind a port mapping (gateway/app.py)
    b"localhost:",  # RFC 3986 §3.2.3: an empty port is the default port
]

#: Hosts that are not ours, or not well formed: 400.
REJECTED: list[bytes] = [
    b"evil.example",
    b"evil.example:{port}",
    b"localhost.evil.example",
    b"evil.example.localhost",
    b"localhost:{port}.evil.example",
    b"localhost:1",
    b"localhost:0",
    b"localhost:99999",
    b"localhost:-1",
    b"localhost:+{port}",
    b"localhost:{port}:{port}",
    b"localhost:abc",
    b"localhost..",
    b".localhost",
    b"evil@localhost",
    b"localhost@evil.example",
    b"localhost:{port}@evil.example",
    b"localhost/evil",
    b"localhost:{port}/",
    b"localhost#evil.example",
    b"localhost\\evil.example",
    b"localhost%2eevil.example",
    b"localhost evil.example",
    b"l\xd0\xbecalhost",  # Cyrillic o, UTF-8
    b"xn--lcalhost-9vg",
    b"xn--localhost",
    b"[::1]:{port}",
    b"[::ffff:127.0.0.1]:{port}",
    b"127.1",
    b"2130706433",
    b"0x7f.0.0.1",
    b"0177.0.0.1",
    b"127.0.0.2",
    b"",
    b" ",
]


class TestHostAllowList:
    """The host stage serves configured hosts only."""

    @pytest.mark.parametrize("host", ACCEPTED, ids=lambda h: h.decode("latin-1"))
    def test_configured_host_in_any_spelling_is_served(
        self, deployment: Deployment, host: bytes
    ) -> None:
        """CWE-644: case, a trailing dot and an omitted or explicit gateway port all name the
        configured host (and the upstream never sees the client's Host line)."""
        line = host.replace(b"{port}", _port(deployment))
        status, response = deployment.raw(_request([line]))
        assert status == 200, response[:300]
        seen = body_json(response)
        hosts = [v for k, v in seen["headers"] if k.lower() == "host"]
        assert hosts == [deployment.settings.upstream.url.split("//", 1)[1]]

    @pytest.mark.parametrize("host", REJECTED, ids=lambda h: h.decode("latin-1"))
    def test_other_or_malformed_host_is_a_400(self, deployment: Deployment, host: bytes) -> None:
        """CWE-644 / CWE-1007 (host header injection, IDN homoglyphs, numeric IP tricks):
        anything but a configured host and port is a 400, never forwarded."""
        line = host.replace(b"{port}", _port(deployment))
        status, response = deployment.raw(_request([line]))
        assert status == 400, response[:300]
        assert b'"raw_path"' not in response

    def test_missing_host_is_a_400(self, deployment: Deployment) -> None:
        """CWE-644 (RFC 9112 §3.2): an HTTP/1.1 request without Host is a 400."""
        status, response = deployment.raw(_request([]))
        assert status == 400, response[:300]

    def test_http_10_without_host_is_a_400(self, deployment: Deployment) -> None:
        """CWE-644: HTTP/1.0 has no required Host; the gateway still needs one of its own."""
        status, response = deployment.raw(_request([], version=b"HTTP/1.0"))
        assert status == 400, response[:300]

    def test_duplicate_host_with_a_foreign_first_line_is_a_400(
        self, deployment: Deployment
    ) -> None:
        """CWE-436 (duplicate Host, RFC 9112 §3.2): a foreign first Host line is never served
        (for a configured first line see FINDINGS.md 3)."""
        ours = b"localhost:" + _port(deployment)
        status, response = deployment.raw(_request([b"evil.example", ours]))
        assert status == 400, response[:300]


class TestDuplicateHost:
    """Found by this suite, fixed in gateway/hosts.py."""

    @pytest.mark.parametrize(
        "lines",
        [
            [b"localhost:{port}", b"localhost:{port}"],
            [b"localhost:{port}", b"evil.example"],
            [b"evil.example", b"localhost:{port}"],
        ],
        ids=["same", "ours-then-evil", "evil-then-ours"],
    )
    def test_duplicate_host_is_a_400(self, deployment: Deployment, lines: list[bytes]) -> None:
        """CWE-436 (RFC 9112 §3.2): more than one Host line is a 400."""
        port = _port(deployment)
        status, response = deployment.raw(
            _request([line.replace(b"{port}", port) for line in lines])
        )
        assert status == 400, response[:300]
