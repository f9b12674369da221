"""HTTP parsing through uvicorn as deployed: what two parsers could read differently is refused.

Raw bytes over TLS to the HTTPS listener (httptools, as ``gateway/server.py`` configures it).
Guards CWE-444 (HTTP request smuggling: CL.TE, TE.CL, duplicate Content-Length, obfuscated
Transfer-Encoding, the class of Envoy CVE-2019-18801/CVE-2023-27487 and Traefik
CVE-2024-45410), CWE-113 (header injection through bare CR, LF-only lines and obsolete line
folding) and CWE-20 (invalid header names that some servers trim into ours).
"""

from __future__ import annotations

import contextlib
import re
import socket

import pytest

from tests.security._harness import Deployment, body_json

SMUGGLED = b"GET /api/admin/schools HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

#: (id, headers after Host, body). Each must be a 400, never a forwarded smuggled request.
AMBIGUOUS: list[tuple[str, bytes, bytes]] = [
    ("cl-te", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("te-cl", b"Transfer-Encoding: chunked\r\nContent-Length: 60\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("two-cl", b"Content-Length: 0\r\nContent-Length: 45\r\n", SMUGGLED),
    ("cl-list", b"Content-Length: 0, 45\r\n", SMUGGLED),
    ("te-xchunked", b"Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n", b"abcd" + SMUGGLED),
    ("te-space-colon", b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("te-tab", b"Transfer-Encoding:\tchunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("te-twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", SMUGGLED),
    ("cl-plus", b"Content-Length: +4\r\n", b"abcd" + SMUGGLED),
    ("cl-negative", b"Content-Length: -1\r\n", SMUGGLED),
    ("fold-space", b"X-Foo: a\r\n X-Gateway-Roles: platform_admin\r\n", b""),
    ("fold-tab", b"User-Agent: a\r\n\tX-Gateway-Subject: demo-platform-admin\r\n", b""),
    ("space-before-colon", b"X-Gateway-Subject : demo-platform-admin\r\n", b""),
    ("bare-cr", b"X-A: a\rX-Gateway-Roles: platform_admin\r\n", b""),
    ("nul-in-value", b"X-A: a\x00b\r\n", b""),
    ("nul-in-name", b"X-Gateway\x00-Roles: platform_admin\r\n", b""),
    ("no-colon", b"X-Gateway-Roles platform_admin\r\n", b""),
]


def _request(deployment: Deployment, headers: bytes, body: bytes) -> bytes:
    host = b"Host: localhost:" + str(deployment.https_port).encode() + b"\r\n"
    return b"GET /activities HTTP/1.1\r\n" + host + headers + b"\r\n" + body


class TestAmbiguousRequestsAreRefused:
    """Framing and header-line ambiguities end in a 400 on the spot."""

    @pytest.mark.parametrize(
        ("headers", "body"), [(h, b) for _, h, b in AMBIGUOUS], ids=[i for i, _, _ in AMBIGUOUS]
    )
    def test_rejected_with_400(self, deployment: Deployment, headers: bytes, body: bytes) -> None:
        """CWE-444 / CWE-113: the request is a 400, nothing is forwarded, and the smuggled
        request behind it is never answered."""
        status, response = deployment.raw(_request(deployment, headers, body))
        assert status == 400, response[:300]
        assert re.findall(rb"HTTP/1\.1 (\d{3})", response) == [b"400"]
        assert b'"raw_path"' not in response
        assert b"platform_admin" not in response

    def test_pipelined_requests_are_each_decided(self, deployment: Deployment) -> None:
        """CWE-444 (control for the above): two well-framed pipelined requests are two
        decisions; the second, for a denied route, is a 401, never forwarded."""
        host = b"Host: localhost:" + str(deployment.https_port).encode() + b"\r\n"
        first = b"GET /activities HTTP/1.1\r\n" + host + b"Content-Length: 0\r\n\r\n"
        second = b"GET /api/admin/schools HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
        _status, response = deployment.raw(first + second)
        assert re.findall(rb"HTTP/1\.1 (\d{3})", response) == [b"200", b"401"]
        assert re.findall(rb'"raw_path": "([^"]*)"', response) == [b"/activities"]

    def test_a_well_framed_body_is_forwarded_exactly(self, deployment: Deployment) -> None:
        """CWE-444 (control): a chunked body arrives at the upstream as sent, re-framed."""
        headers = b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
        body = b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
        status, response = deployment.raw(_request(deployment, headers, body))
        assert status == 200, response[:300]
        seen = body_json(response)
        assert seen["body"] == "abcdefg"
        names = [name.lower() for name, _ in seen["headers"]]
        assert not ("transfer-encoding" in names and "content-length" in names)


class TestOversizedHeaders:
    """Header blocks larger than the configured limits are refused before any stage."""

    @pytest.mark.parametrize(
        "headers",
        [
            b"Cookie: a=" + b"x" * 200_000 + b"\r\n",
            b"".join(b"X-H%d: v\r\n" % i for i in range(5_000)),
        ],
        ids=["200kB-cookie", "5000-lines"],
    )
    def test_oversized_header_block_is_a_431(self, deployment: Deployment, headers: bytes) -> None:
        """CWE-770 (allocation without limits): an oversized header block is a 431 (or 400),
        never forwarded."""
        status, response = deployment.raw(
            _request(deployment, headers + b"Connection: close\r\n", b"")
        )
        assert status in (400, 431), response[:300]
        assert b'"raw_path"' not in response


class TestSlowClients:
    """A client that does not finish its request head is disconnected."""

    @pytest.mark.parametrize("partial", [b"", b"GET /activities HTTP/1.1\r\nHost: localhost\r\n"])
    def test_incomplete_head_is_closed(self, deployment: Deployment, partial: bytes) -> None:
        """CWE-400 (slowloris): the gateway closes the connection (or answers 408) within
        the header timeout plus a margin."""
        plain = socket.create_connection(("127.0.0.1", deployment.https_port), timeout=20)
        sock = deployment.ssl_context.wrap_socket(plain, server_hostname="localhost")
        with contextlib.closing(sock):
            if partial:
                sock.sendall(partial)
            try:
                data = sock.recv(100)
            except TimeoutError:
                pytest.fail("connection still open after 20 s")
            assert data == b"" or data.startswith(b"HTTP/1.1 408")
