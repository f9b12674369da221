"""gateway/pages.py: error pages are generic, bilingual, and chosen by Accept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import (
    AccessDenied,
    BadRequest,
    GatewayError,
    TooManyRequests,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.pages import render_error, send_error, wants_json


def _scope(accept: bytes | None, method: str = "GET") -> dict[str, Any]:
    headers = [(b"accept", accept)] if accept is not None else []
    return {"type": "http", "method": method, "headers": headers}


async def _capture(scope: dict[str, Any], error: GatewayError) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await send_error(scope, send, error, "req-123")
    return sent


class TestContentNegotiation:
    @pytest.mark.parametrize(
        ("accept", "expected"),
        [
            (b"text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", False),
            (b"application/json", True),
            (b"*/*", True),
            (None, True),
        ],
    )
    def test_browsers_get_html_others_json(self, accept: bytes | None, expected: bool) -> None:
        """Only clients that ask for HTML get HTML."""
        assert wants_json(_scope(accept)) is expected


class TestRenderError:
    @pytest.mark.parametrize(
        "error", [BadRequest(), AccessDenied("no_matching_rule"), UpstreamUnavailable()]
    )
    def test_json_body_is_generic(self, error: GatewayError) -> None:
        """The JSON body names the code, status and request id, and not the internal reason."""
        body, content_type = render_error(error, "req-1", as_json=True)
        data = json.loads(body)
        assert content_type == b"application/json"
        assert data["error"] == error.code
        assert data["status"] == error.status_code
        assert data["request_id"] == "req-1"
        assert "no_matching_rule" not in body.decode()

    def test_html_is_dutch_first_then_english(self) -> None:
        """The page is in Dutch with an English line after it."""
        body, content_type = render_error(UpstreamTimeout(), "req-1", as_json=False)
        text = body.decode()
        assert content_type.startswith(b"text/html")
        assert '<html lang="nl">' in text
        assert text.index("Time-out") < text.index('lang="en"')

    def test_request_id_is_escaped(self) -> None:
        """A hostile request id cannot inject markup."""
        body, _ = render_error(BadRequest(), "<script>x</script>", as_json=False)
        assert b"<script>" not in body


class TestSendError:
    async def test_status_headers_and_body(self) -> None:
        """The response carries the status, security headers and the request id."""
        sent = await _capture(_scope(b"application/json"), AccessDenied())
        start, body = sent
        headers = dict(start["headers"])
        assert start["status"] == 403
        assert headers[b"x-request-id"] == b"req-123"
        assert headers[b"x-content-type-options"] == b"nosniff"
        assert b"frame-ancestors 'none'" in headers[b"content-security-policy"]
        assert int(headers[b"content-length"]) == len(body["body"])

    async def test_head_has_no_body(self) -> None:
        """HEAD gets the headers only."""
        sent = await _capture(_scope(None, "HEAD"), BadRequest())
        assert sent[1]["body"] == b""

    async def test_retry_after_on_429(self) -> None:
        """Throttled clients are told when to come back."""
        sent = await _capture(_scope(None), TooManyRequests(retry_after=30))
        assert dict(sent[0]["headers"])[b"retry-after"] == b"30"
