"""Responses the gateway writes itself: error pages (HTML for browsers, JSON for API clients).

Dutch first, then English. Every page carries the request id so people can quote it to the
helpdesk, and nothing else about the failure. Security headers for the gateway's own pages are
added here (the https stage adds HSTS to every response).
"""

from __future__ import annotations

import html
import json
from typing import Final

from gateway.errors import GatewayError, TooManyRequests
from gateway.types import Scope, Send

_CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def own_page_csp(*, form_action: str | None = None) -> str:
    """The gateway pages' Content-Security-Policy; ``form_action`` adds one origin that a
    form on the page may submit to or be redirected to (the logout form's end-session)."""
    return _CSP.format(form_action="'self'" if not form_action else f"'self' {form_action}")


#: Headers on every page the gateway renders itself (not on forwarded responses).
OWN_PAGE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", own_page_csp().encode()),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
)

_PAGE = """<!doctype html>
<html lang="nl">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} {title_nl}</title></head>
<body>
<main>
<h1>{title_nl}</h1>
<p>{text_nl}</p>
<p lang="en"><strong>{title_en}.</strong> {text_en}</p>
<p><small>Referentie / reference: <code>{request_id}</code></small></p>
</main>
</body>
</html>
"""


def wants_json(scope: Scope) -> bool:
    """True unless the client prefers HTML (browsers send text/html in Accept)."""
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            accept = value.decode("latin-1").lower()
            return "text/html" not in accept
    return True


def render_error(error: GatewayError, request_id: str, *, as_json: bool) -> tuple[bytes, bytes]:
    """The body and content type for ``error``; generic by construction."""
    if as_json:
        body = json.dumps(
            {
                "error": error.code,
                "status": error.status_code,
                "message": error.text_en,
                "bericht": error.text_nl,
                "request_id": request_id,
            },
            ensure_ascii=False,
        ).encode()
        return body, b"application/json"
    body = _PAGE.format(
        status=error.status_code,
        title_nl=html.escape(error.title_nl),
        text_nl=html.escape(error.text_nl),
        title_en=html.escape(error.title_en),
        text_en=html.escape(error.text_en),
        request_id=html.escape(request_id),
    ).encode()
    return body, b"text/html; charset=utf-8"


async def send_error(
    scope: Scope,
    send: Send,
    error: GatewayError,
    request_id: str,
    *,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Send ``error`` as a complete response (for HEAD, without the body)."""
    body, content_type = render_error(error, request_id, as_json=wants_json(scope))
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode("latin-1", "replace")),
        *OWN_PAGE_HEADERS,
        *extra_headers,
    ]
    if isinstance(error, TooManyRequests):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send(
        {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
    )
