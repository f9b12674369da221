"""Path canonicalisation: one unambiguous path, the one decided on and the one forwarded.

From the raw request target (``scope["raw_path"]``, still percent-encoded), the path stage:

- rejects what different servers read differently, with 400 and a stable reason:
  an encoded slash or backslash (``%2F``, ``%5C``), a raw backslash, an encoded dot
  (``%2E``, so no encoded dot segments), a percent-encoded percent sign (double encoding),
  NUL and control characters (raw or encoded), malformed percent escapes, invalid or overlong
  UTF-8, ``;`` path parameters, ``#``, a target that is not origin- or absolute-form, and dot
  segments that would climb above the root;
- decodes exactly once, resolves ``.`` and ``..`` segments, and collapses repeated slashes.

The query string never takes part: it is forwarded as received and never decided on.
:func:`encode_path` turns the canonical path back into the bytes sent upstream, so the upstream
receives exactly the path the policy decided on.
"""

from __future__ import annotations

import re
from typing import ClassVar
from urllib.parse import quote, unquote_to_bytes, urlsplit

from gateway.errors import BadRequest
from gateway.hosts import absolute_form_authority
from gateway.pages import send_error
from gateway.types import ASGIApp, Receive, Scope, Send, state

MAX_PATH_BYTES = 4096
#: Characters left as they are in a forwarded path (RFC 3986 pchar without ";" and "%").
PATH_SAFE = "/:@!$&'()*+,=-._~"

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_FORBIDDEN_ENCODED = {
    0x2F: "encoded_slash",
    0x5C: "encoded_backslash",
    0x2E: "encoded_dot",
    0x25: "double_encoding",
    0x3B: "encoded_semicolon",
    0x23: "encoded_fragment",
    0x3F: "encoded_question_mark",
}


class PathRejected(BadRequest):
    """The request path is ambiguous or malformed."""


def canonicalise(raw_path: bytes) -> str:
    """The canonical form of ``raw_path``; raises :class:`PathRejected` with a reason."""
    if len(raw_path) > MAX_PATH_BYTES:
        raise PathRejected("path_too_long")
    if absolute_form_authority(raw_path) is not None:
        raw_path = urlsplit(raw_path.decode("latin-1")).path.encode("latin-1") or b"/"
    _check_raw(raw_path)
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise PathRejected("invalid_utf8") from exc
    if _DECODED_CONTROL.search(decoded):
        raise PathRejected("control_character")
    return _resolve_segments(decoded)


_RAW_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_DECODED_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_RAW_FORBIDDEN = ((b"\\", "backslash"), (b";", "path_parameter"), (b"#", "fragment"))


def _check_raw(raw_path: bytes) -> None:
    """Reject what is ambiguous before decoding."""
    if not raw_path.startswith(b"/"):
        raise PathRejected("not_origin_form")
    if _RAW_CONTROL.search(raw_path):
        raise PathRejected("control_character")
    for needle, reason in _RAW_FORBIDDEN:
        if needle in raw_path:
            raise PathRejected(reason)
    if _BAD_ESCAPE.search(raw_path):
        raise PathRejected("malformed_escape")
    for match in _ESCAPE.finditer(raw_path):
        value = int(match.group(1), 16)
        if value in _FORBIDDEN_ENCODED:
            raise PathRejected(_FORBIDDEN_ENCODED[value])
        if value < 0x20 or value == 0x7F:
            raise PathRejected("control_character")


def _resolve_segments(path: str) -> str:
    trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
    output: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not output:
                raise PathRejected("above_root")
            output.pop()
            continue
        output.append(segment)
    canonical = "/" + "/".join(output)
    if trailing and output:
        canonical += "/"
    return canonical


def encode_path(path: str) -> str:
    """The canonical path as it is sent upstream: UTF-8, percent-encoded, deterministic."""
    return quote(path, safe=PATH_SAFE)


#: Canonical paths remembered per raw path (only accepted ones, only short ones): a client
#: asks for the same few paths again and again. Cleared when full.
CACHE_SIZE = 4096
MAX_CACHED_PATH_BYTES = 256


class PathStage:
    """Writes the canonical path into the gateway state, or answers 400.

    :func:`canonicalise` is a pure function of the raw path, so the result for an accepted raw
    path is kept (bounded); a rejected one is checked again each time.
    """

    name: ClassVar[str] = "path"

    def __init__(self, app: ASGIApp, *, cache_size: int = CACHE_SIZE) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self.app = app
        self._cache_size = cache_size
        self._cache: dict[bytes, str] = {}

    def canonical(self, raw_path: bytes) -> str:
        """:func:`canonicalise`, remembered for accepted short paths."""
        found = self._cache.get(raw_path)
        if found is not None:
            return found
        found = canonicalise(raw_path)
        if self._cache_size and len(raw_path) <= MAX_CACHED_PATH_BYTES:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[bytes(raw_path)] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        gateway = state(scope)
        raw_path = scope.get("raw_path")
        if raw_path is None:
            raw_path = quote(scope["path"], safe=PATH_SAFE + "%").encode("ascii")
        try:
            gateway.path = self.canonical(raw_path)
        except PathRejected as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_error(scope, send, exc, gateway.request_id)
            return
        await self.app(scope, receive, send)
