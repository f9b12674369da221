"""The re-login hint: which issuer a browser whose federated roles went stale logged in with.

A session older than ``session.roles_max_age`` is refused (its roles must be recomputed from
fresh claims). The session authenticator then leaves this small sealed cookie, naming only the
issuer, so the next ``/_gateway/login`` first asks that issuer for a silent re-authentication
(``prompt=none``): a person whose session at the identity provider is still alive gets new
claims without seeing a form. When the provider answers ``login_required`` (or another error
saying it needs the person), the callback starts the ordinary interactive login at once.

The hint is single-use (the login route clears it) and expires after ``HINT_TTL``; it is sealed
with the session keys (``Sealer``, its own purpose), so it can be neither read nor forged, and
it carries no subject: a browser never learns more from it than it already knew.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gateway.oidc._session import Sealer, read_cookie

__all__ = ["HINT_TTL", "RELOGIN_COOKIE", "clear_hint", "hint_cookie", "read_hint"]

RELOGIN_COOKIE: Final = "__Host-gw_relogin"
RELOGIN_PURPOSE: Final = "gateway-relogin-v1"
#: The hint is honoured this long after the stale session was refused.
HINT_TTL: Final = 600


def hint_cookie(sealer: Sealer, *, idp: str, now: float) -> bytes:
    """The ``Set-Cookie`` value of a hint naming issuer ``idp``."""
    value = sealer.seal({"i": idp, "e": now + HINT_TTL}, purpose=RELOGIN_PURPOSE)
    return (
        f"{RELOGIN_COOKIE}={value}; Path=/; Max-Age={HINT_TTL}; Secure; HttpOnly; SameSite=Lax"
    ).encode("latin-1")


def read_hint(sealer: Sealer, headers: Sequence[tuple[bytes, bytes]], *, now: float) -> str | None:
    """The issuer named by a valid, unexpired hint in the request, or None."""
    value = read_cookie(headers, RELOGIN_COOKIE)
    payload = sealer.open(value, purpose=RELOGIN_PURPOSE) if value else None
    if not payload:
        return None
    idp, expires = payload.get("i"), payload.get("e")
    if not isinstance(idp, str) or not isinstance(expires, int | float) or expires <= now:
        return None
    return idp


def clear_hint() -> bytes:
    return f"{RELOGIN_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax".encode()
