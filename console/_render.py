"""Rendering console pages: the Jinja2 environment, the per-request page context, the
response headers (a strict Content-Security-Policy), and small-form parsing.

Templates are autoescaped and undefined names fail loudly (``StrictUndefined``). Pages carry no
script and no inline style: the CSP allows only the gateway's own stylesheet, forms posting to
the gateway itself, and nothing else (no other origin, no frames).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import Response

from console._i18n import LANG_COOKIE, Lang, translate
from console.errors import BadForm
from gateway.types import Identity

__all__ = [
    "CONSOLE_CSP",
    "MAX_FORM_BYTES",
    "Form",
    "NavItem",
    "Page",
    "Renderer",
    "first",
    "read_form",
]

#: No script at all, styles only from the gateway, forms only to the gateway, no framing.
CONSOLE_CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
MAX_FORM_BYTES: Final = 64 * 1024
MAX_FORM_FIELDS: Final = 200
_HEADERS: Final = {
    "content-security-policy": CONSOLE_CSP,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Not no-referrer: with it Chromium sends ``Origin: null`` on the console's own form posts,
    # which the CSRF check refuses. same-origin still sends nothing to another origin.
    "referrer-policy": "same-origin",
}

Form = Mapping[str, Sequence[str]]


@dataclass(frozen=True, slots=True)
class NavItem:
    """A console page the caller may open (the policy said so)."""

    path: str
    key: str


@dataclass(slots=True)
class Page:
    """What every template gets: language, identity, CSRF token, navigation, where we are."""

    lang: Lang
    set_lang_cookie: bool
    who: Identity
    csrf_token: str | None
    nav: list[NavItem]
    path: str
    query: list[tuple[str, str]]
    request_id: str
    extra: dict[str, Any] = field(default_factory=dict)

    def t(self, key: str, **values: object) -> str:
        return translate(self.lang, key, **values)

    @property
    def other_lang(self) -> str:
        return "en" if self.lang == "nl" else "nl"

    def lang_switch_url(self) -> str:
        """This page in the other language (its query kept)."""
        kept = [(k, v) for k, v in self.query if k != "lang"]
        return self.path + "?" + urlencode([*kept, ("lang", self.other_lang)])

    def can(self, path: str) -> bool:
        return any(item.path == path for item in self.nav)


def first(form: Form, name: str) -> str | None:
    values = form.get(name) or []
    return values[0] if values else None


async def read_form(request: Request) -> dict[str, list[str]]:
    """A small urlencoded form body; BadForm when it is something else or too large."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadForm("expected a form (application/x-www-form-urlencoded)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm("the form is not valid UTF-8 or has too many fields") from exc


class Renderer:
    """The Jinja2 environment over ``console/templates``; renders pages with their headers."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("console", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["qs"] = lambda pairs: urlencode(list(pairs))

    @property
    def environment(self) -> Environment:
        return self._env

    def render(self, page: Page, template: str, *, status: int = 200, **values: Any) -> Response:
        body = self._env.get_template(template).render(page=page, t=page.t, **values)
        response = Response(body, status_code=status, media_type="text/html; charset=utf-8")
        return finish(page, response)


def finish(page: Page, response: Response) -> Response:
    """The console's headers on ``response``, and the language cookie when it changed."""
    for name, value in _HEADERS.items():
        response.headers[name] = value
    if page.set_lang_cookie:
        response.raw_headers.append(
            (
                b"set-cookie",
                f"{LANG_COOKIE}={page.lang}; Path=/; Max-Age=31536000; Secure; HttpOnly; "
                "SameSite=Lax".encode(),
            )
        )
        page.set_lang_cookie = False
    return response
