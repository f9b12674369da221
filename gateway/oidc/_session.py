"""The session cookie: AES-256-GCM encrypted and authenticated, with key rotation.

The cookie (``__Host-`` prefixed, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain) holds only
what the gateway needs: the issuer, the subject, the roles the federation asserted, the tenant,
a random session id, when it was issued, when it was last refreshed, and its absolute expiry.
Its value is ``v1.`` + base64url(key id ‖ nonce ‖ ciphertext). The key id is the first 4 bytes
of SHA-256 of the key, so rotation is: put the new key first (it encrypts), keep the old ones
after it (they still decrypt) until the absolute timeout has passed, then drop them.

Locally granted roles are not stored: they are added at every request from the current grants
file, so a revoked grant stops working at once.

Opening a cookie (base64, AES-GCM, JSON) costs about 20 µs, and a browser sends the same value
with every request until it is refreshed. :class:`SessionCodec` keeps the sessions it opened
by cookie value (bounded, each for ``cache_ttl`` seconds): the same bytes under the same keys
always open to the same session, so nothing is trusted that was not verified. Only what was
opened successfully is kept (a flood of forged values cannot evict much nor fill memory), and
the idle and absolute timeouts are checked against the clock at every request, cached or not.
Revocation and grants are the authenticator's, also checked at every request.

Federated roles (and the tenant) are what the identity provider asserted at login. They are
trusted for ``roles_max_age`` (``session.roles_max_age``, 1 hour by default) after that login:
an older session is refused with reason ``session_roles_stale`` and the browser is sent to log
in again, which recomputes roles and tenant from fresh claims. That login first asks the same
issuer with ``prompt=none`` (``_relogin.py``): an IdP that still has a session signs the person
in without a form, and one that needs them answers ``login_required``, which starts the
interactive login at once. So a role removed at the federation is gone within
``roles_max_age``. Refresh tokens are not used for this on purpose: the cookie holds no token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.oidc.errors import SessionTooLarge

PREFIX = "v1."
KEY_ID_BYTES = 4
NONCE_BYTES = 12
#: Browsers keep cookies up to 4096 bytes (name, value and attributes); stay below.
MAX_COOKIE_BYTES = 3800
SESSION_ID_BYTES = 18
#: Opened sessions kept by cookie value (oldest dropped first when full).
DEFAULT_CACHE_SIZE = 4096
#: Seconds an opened session is kept before its cookie is opened again.
DEFAULT_CACHE_TTL = 60.0

Clock = Callable[[], float]


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def decode_key(text: str) -> bytes:
    """Base64url text (padding optional) as bytes; anything else raises ValueError.

    Only the base64url alphabet: the standard alphabet's ``+`` and ``/`` and every other
    character are refused (``base64.urlsafe_b64decode`` alone maps ``+``/``/`` to the same
    bytes as ``-``/``_`` and silently drops characters outside the alphabet)."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    unpadded = text.rstrip("=")
    if len(unpadded) % 4 == 1:
        raise ValueError("not base64url (length)")
    return base64.b64decode(
        unpadded.replace("-", "+").replace("_", "/") + "=" * (-len(unpadded) % 4), validate=True
    )


def new_key() -> str:
    """A fresh base64url AES-256 key, as ``session.keys`` takes it."""
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


class Sealer:
    """Encrypts and authenticates small JSON payloads; the first key encrypts, all decrypt."""

    def __init__(self, *, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one session key is required")
        self._keys: dict[bytes, AESGCM] = {}
        self._order: list[bytes] = []
        for key in keys:
            if len(key) != 32:
                raise ValueError("session keys must be 32 bytes")
            key_id = hashlib.sha256(key).digest()[:KEY_ID_BYTES]
            self._keys.setdefault(key_id, AESGCM(key))
            self._order.append(key_id)

    def seal(self, payload: dict[str, Any], *, purpose: str) -> str:
        key_id = self._order[0]
        nonce = os.urandom(NONCE_BYTES)
        data = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        sealed = self._keys[key_id].encrypt(nonce, data, purpose.encode())
        return PREFIX + base64.urlsafe_b64encode(key_id + nonce + sealed).rstrip(b"=").decode()

    def open(self, value: str, *, purpose: str) -> dict[str, Any] | None:
        """The payload, or None when the value is not one of ours (any key) or was altered."""
        if not value.startswith(PREFIX) or len(value) > MAX_COOKIE_BYTES:
            return None
        try:
            raw = decode_key(value[len(PREFIX) :])
        except (binascii.Error, ValueError):
            return None
        key_id, nonce = raw[:KEY_ID_BYTES], raw[KEY_ID_BYTES : KEY_ID_BYTES + NONCE_BYTES]
        aead = self._keys.get(key_id)
        if aead is None or len(raw) <= KEY_ID_BYTES + NONCE_BYTES:
            return None
        try:
            data = aead.decrypt(nonce, raw[KEY_ID_BYTES + NONCE_BYTES :], purpose.encode())
            payload = json.loads(data)
        except (InvalidTag, ValueError):
            return None
        return payload if isinstance(payload, dict) else None


@dataclass(frozen=True, slots=True)
class Session:
    """What the session cookie holds."""

    idp: str  #: the configured issuer name
    issuer: str  #: the issuer's ``iss``
    subject: str
    roles: frozenset[str]  #: as mapped from the federation's claims at login
    tenant: str | None
    session_id: str
    issued_at: float
    refreshed_at: float
    expires_at: float  #: absolute expiry

    def to_payload(self) -> dict[str, Any]:
        return {
            "idp": self.idp,
            "iss": self.issuer,
            "sub": self.subject,
            "roles": sorted(self.roles),
            "ten": self.tenant,
            "sid": self.session_id,
            "iat": int(self.issued_at),
            "ref": int(self.refreshed_at),
            "exp": int(self.expires_at),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Session | None:
        try:
            roles = payload["roles"]
            tenant = payload["ten"]
            session = cls(
                idp=str(payload["idp"]),
                issuer=str(payload["iss"]),
                subject=str(payload["sub"]),
                roles=frozenset(str(role) for role in roles),
                tenant=None if tenant is None else str(tenant),
                session_id=str(payload["sid"]),
                issued_at=float(payload["iat"]),
                refreshed_at=float(payload["ref"]),
                expires_at=float(payload["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return session if isinstance(roles, list) else None

    @property
    def user_id(self) -> str:
        return f"{self.issuer}|{self.subject}"


SESSION_PURPOSE = "gateway-session-v1"


class SessionCodec:
    """Turns a :class:`Session` into a cookie value and back, enforcing both timeouts."""

    def __init__(
        self,
        *,
        sealer: Sealer,
        cookie_name: str,
        idle_timeout: float,
        absolute_timeout: float,
        refresh_interval: float,
        roles_max_age: float | None = None,
        clock: Clock = time.time,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> None:
        if cache_size < 0 or cache_ttl < 0:
            raise ValueError("cache_size and cache_ttl must not be negative")
        self.sealer = sealer
        #: Federated roles are trusted this long after login (default: the absolute timeout).
        self.roles_max_age = absolute_timeout if roles_max_age is None else roles_max_age
        self.cookie_name = cookie_name
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.refresh_interval = refresh_interval
        self.clock = clock
        self._purpose = f"{SESSION_PURPOSE}|{cookie_name}"
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._opened: dict[str, tuple[float, Session]] = {}  # value -> (opened at, session)

    def new(
        self, *, idp: str, issuer: str, subject: str, roles: frozenset[str], tenant: str | None
    ) -> Session:
        """A fresh session with a new id (at every login)."""
        now = self.clock()
        return Session(
            idp=idp,
            issuer=issuer,
            subject=subject,
            roles=roles,
            tenant=tenant,
            session_id=new_session_id(),
            issued_at=now,
            refreshed_at=now,
            expires_at=now + self.absolute_timeout,
        )

    def encode(self, session: Session) -> str:
        value = self.sealer.seal(session.to_payload(), purpose=self._purpose)
        if len(self.set_cookie(value)) > MAX_COOKIE_BYTES:
            raise SessionTooLarge(f"session cookie of {len(value)} bytes")
        return value

    def decode(self, value: str, *, now: float | None = None) -> tuple[Session | None, str]:
        """(session, "ok") or (None, reason): ``session_invalid``/``_expired``/``_idle``/
        ``_roles_stale``. ``now`` is the codec's clock unless given (read once per request)."""
        if now is None:
            now = self.clock()
        cached = self._opened.get(value)
        if cached is not None and 0 <= now - cached[0] < self._cache_ttl:
            session = cached[1]
        else:
            payload = self.sealer.open(value, purpose=self._purpose)
            opened = None if payload is None else Session.from_payload(payload)
            if opened is None:
                return None, "session_invalid"
            session = opened
            self._remember(value, now, session)
        if now >= session.expires_at:
            return None, "session_expired"
        if now - session.refreshed_at >= self.idle_timeout:
            return None, "session_idle_timeout"
        if now - session.issued_at >= self.roles_max_age:
            return None, "session_roles_stale"
        return session, "ok"

    def opened(self, value: str) -> Session | None:
        """The session in ``value`` whatever its age, or None when it is not one of ours
        (for the re-login hint of a stale session: never to let a request in)."""
        cached = self._opened.get(value)
        if cached is not None:
            return cached[1]
        payload = self.sealer.open(value, purpose=self._purpose)
        return None if payload is None else Session.from_payload(payload)

    def _remember(self, value: str, now: float, session: Session) -> None:
        opened = self._opened
        opened.pop(value, None)  # re-inserted last: the dict's order is the age order
        if self._cache_size == 0:
            return
        while len(opened) >= self._cache_size:
            try:
                del opened[next(iter(opened))]
            except (KeyError, RuntimeError, StopIteration):  # changed meanwhile: good enough
                break
        opened[value] = (now, session)

    def needs_refresh(self, session: Session, *, now: float | None = None) -> bool:
        if now is None:
            now = self.clock()
        return now - session.refreshed_at >= self.refresh_interval

    def refreshed(self, session: Session) -> Session:
        return replace(session, refreshed_at=self.clock())

    def set_cookie(self, value: str) -> bytes:
        """The ``Set-Cookie`` header value: a session cookie (no Max-Age: gone with the browser)."""
        return f"{self.cookie_name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax".encode(
            "latin-1"
        )

    def clear_cookie(self) -> bytes:
        return (f"{self.cookie_name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax").encode(
            "latin-1"
        )


def read_cookie(headers: Sequence[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie ``name`` from the request headers (first one wins), or None."""
    wanted = name.encode("latin-1")
    for key, value in headers:
        if key != b"cookie":
            continue
        found = cookie_in_header(value, wanted)
        if found is not None:
            return found
    return None


def cookie_in_header(value: bytes, wanted: bytes) -> str | None:
    """The value of cookie ``wanted`` in one ``Cookie`` header's value (first one wins)."""
    for part in value.split(b";"):
        cookie_name, sep, cookie_value = part.strip().partition(b"=")
        if sep and cookie_name == wanted:
            return cookie_value.decode("latin-1")
    return None
