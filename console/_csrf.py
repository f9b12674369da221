"""CSRF tokens bound to the login session (synchronizer tokens, no server-side state).

A token is ``HMAC-SHA256(k, "console-csrf-v1|" + session_id)`` where ``k`` is derived from a
session key of the gateway (so every instance behind a load balancer agrees, and rotating the
session keys rotates the tokens). It is put into every state-changing form as a hidden field and
checked on submission against every configured key (newest first; constant-time compare). A
request without a session (anonymous or a bearer token) has no token and can change nothing
through the console. SameSite cookies are a second line, not the defence: a sibling subdomain
or a same-site page could still post a form.

On top, a request whose ``Sec-Fetch-Site`` says ``cross-site`` or whose ``Origin`` is another
origin than the gateway's is refused whatever token it carries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

from console.errors import CsrfRejected
from gateway.types import Identity, Scope, state

__all__ = ["CSRF_FIELD", "CsrfTokens"]

CSRF_FIELD: Final = "csrf_token"
_KEY_LABEL: Final = b"onderwijs-gateway console csrf key v1"
_TOKEN_LABEL: Final = "console-csrf-v1|"  # noqa: S105 - a domain-separation label
_MAX_TOKEN: Final = 128


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _origin(value: str) -> str:
    """``scheme://host[:port]`` lower-cased, the default port left out."""
    value = value.lower()
    for scheme, port in (("https://", ":443"), ("http://", ":80")):
        if value.startswith(scheme) and value.endswith(port):
            return value[: -len(port)]
    return value


class CsrfTokens:
    """Issues and checks the console's CSRF tokens; ``keys`` are the session keys, newest
    first (raw bytes)."""

    def __init__(self, *, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("console CSRF tokens need at least one session key")
        self._keys = [hmac.new(key, _KEY_LABEL, hashlib.sha256).digest() for key in keys]

    def _token(self, key: bytes, session_id: str) -> str:
        mac = hmac.new(key, (_TOKEN_LABEL + session_id).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, who: Identity) -> str | None:
        """The token for ``who``'s session, or None when there is no session."""
        if who.method != "session" or not who.session_id:
            return None
        return self._token(self._keys[0], who.session_id)

    def check(self, scope: Scope, who: Identity, token: str | None) -> None:
        """Raise :class:`CsrfRejected` unless ``token`` belongs to ``who``'s session and the
        request comes from the gateway's own origin."""
        if who.method != "session" or not who.session_id:
            raise CsrfRejected("no_session")
        if (_header(scope, b"sec-fetch-site") or "").lower() == "cross-site":
            raise CsrfRejected("cross_site")
        origin = _header(scope, b"origin")
        if origin is not None and origin != "null":
            if _origin(origin) != _origin(f"{state(scope).scheme}://{state(scope).host}"):
                raise CsrfRejected("foreign_origin")
        elif origin == "null":
            raise CsrfRejected("opaque_origin")
        if not token or len(token) > _MAX_TOKEN or not token.isascii():
            raise CsrfRejected("token_missing")
        given = token.encode()
        if not any(
            hmac.compare_digest(given, self._token(key, who.session_id).encode())
            for key in self._keys
        ):
            raise CsrfRejected("token_invalid")
