"""Where the gateway may send a browser after login or logout: only a relative path on itself.

A return path is accepted when, decoded any number of times, it still starts with exactly one
``/`` followed by something other than ``/`` or ``\\``, and contains no control characters,
backslashes, scheme or user-info. Anything else becomes ``/``. The accepted path is the
original text (never the decoded one), so what is checked is what is sent.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

DEFAULT_TARGET = "/"
MAX_TARGET_LENGTH = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_next(candidate: str | None) -> str:
    """``candidate`` when it is a safe relative path on this gateway, else ``/``."""
    if not candidate or len(candidate) > MAX_TARGET_LENGTH:
        return DEFAULT_TARGET
    return candidate if is_safe_relative(candidate) else DEFAULT_TARGET


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
