"""Where the gateway may send a browser after login or logout: a relative path on itself, or a
URL on an exactly allow-listed origin (``oidc.return_origins``).

A return path is accepted when, decoded any number of times, it still starts with exactly one
``/`` followed by something other than ``/`` or ``\\``, and contains no control characters,
backslashes, scheme or user-info. Anything else becomes ``/``. The accepted path is the
original text (never the decoded one), so what is checked is what is sent; non-ASCII
characters in it are percent-encoded (UTF-8), since a ``Location`` header must be ASCII.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import quote, unquote, urlsplit

DEFAULT_TARGET = "/"
MAX_TARGET_LENGTH = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_next(candidate: str | None, origins: Collection[str] = ()) -> str:
    """``candidate`` when it is a safe relative path on this gateway or a URL on one of
    ``origins`` (exact ``https://host[:port]`` strings), else ``/``."""
    if not candidate or len(candidate) > MAX_TARGET_LENGTH:
        return DEFAULT_TARGET
    if is_safe_relative(candidate) or (origins and _on_allowed_origin(candidate, origins)):
        return _ascii(candidate)
    return DEFAULT_TARGET


#: ASCII that may stand in a Location as it is; everything else is percent-encoded (UTF-8).
_LOCATION_SAFE = "/?&=%:@!$'()*+,;-._~#[]"


def _ascii(target: str) -> str:
    """``target`` with non-ASCII characters percent-encoded: a ``Location`` header is
    Latin-1 at best, and a non-ASCII one crashed the callback (found by tests/security)."""
    return target if target.isascii() else quote(target, safe=_LOCATION_SAFE)


def _on_allowed_origin(candidate: str, origins: Collection[str]) -> bool:
    if any(char.isspace() for char in candidate) or _CONTROL.search(candidate):
        return False
    if "\\" in candidate:
        return False
    try:
        parts = urlsplit(candidate)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or "%" in parts.netloc or "@" in parts.netloc:
        return False
    if not parts.hostname:
        return False
    origin = f"https://{parts.hostname}" + (f":{port}" if port is not None else "")
    rest = candidate[len(f"{parts.scheme}://{parts.netloc}") :]
    return origin in origins and (rest == "" or rest.startswith(("/", "?")))


def is_safe_relative(candidate: str) -> bool:
    if any(char.isspace() for char in candidate):
        return False  # what is sent must need no further encoding
    text = candidate
    for _ in range(4):  # double and triple encodings included
        if not _safe_once(text):
            return False
        decoded = unquote(text)
        if decoded == text:
            return True
        text = decoded
    return False  # still changing after four decodings: refuse


def _safe_once(text: str) -> bool:
    if not text.startswith("/") or text.startswith(("//", "/\\")):
        return False
    if "\\" in text or _CONTROL.search(text):
        return False
    parts = urlsplit(text)
    return not parts.scheme and not parts.netloc and "@" not in text.split("?", 1)[0]
