"""The mutate stage: what the upstream may see of the client's headers, and what we add.

Order matters and is fixed here: first everything the client must not decide is removed
(hop-by-hop headers and the headers ``Connection`` names, every client-supplied identity,
forwarding and method/URL-override header in any spelling, the gateway's session cookie), and
only then the gateway adds its own headers. So a client can neither smuggle an identity in
(``X_Auth_User``, ``x-auth-user`` twice, ``X-Gateway-Subject``) nor make us drop one we add
(``Connection: X-Gateway-Assertion``).

Header names are compared after lower-casing and turning ``_``, ``.`` and every other
punctuation character into ``-``, because servers behind us (CGI/WSGI, PHP, some Node
frameworks) fold them all into the same variable.

On the way back, a ``Set-Cookie`` from the upstream for the gateway's own session cookie is
dropped: no upstream can plant or overwrite the gateway's session. So are the upstream's
``Server`` and ``X-Powered-By`` banners (:data:`DEFAULT_DROPPED_RESPONSE_HEADERS`): they tell an
attacker which software and version to aim at, and the client has no use for them.

Added, from what earlier stages set (``gateway/types.py``)::

    X-Forwarded-For     the client IP as the https stage resolved it (trusted proxies only)
    X-Forwarded-Proto   the scheme the client used
    X-Forwarded-Host    the (allow-listed) host the client asked for
    X-Request-ID        the client's, when it is well formed; otherwise the gateway's id
    X-Gateway-User-Id   issuer-qualified subject ("issuer|subject"), absent when anonymous
    X-Gateway-Issuer / X-Gateway-Subject
    X-Gateway-Roles     comma-separated, sorted
    X-Gateway-Tenant    absent when the identity has none
    X-Gateway-Auth      anonymous | session | bearer
    X-Gateway-Assertion a short-lived JWT signed by the gateway with all of the above
                        (``gateway/assertion.py``; public keys at /_gateway/jwks.json)

The plain headers are a convenience; an upstream that wants proof verifies the assertion.
Values that are not visible ASCII are percent-encoded (UTF-8), so no identity can inject a
header line.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import ClassVar

from gateway.assertion import AssertionSigner
from gateway.types import ASGIApp, Identity, Message, Receive, Scope, Send, identity, state

__all__ = [
    "DEFAULT_DROPPED_RESPONSE_HEADERS",
    "DEFAULT_IDENTITY_HEADERS",
    "DEFAULT_IDENTITY_PREFIXES",
    "DEFAULT_SESSION_COOKIE",
    "HOP_BY_HOP",
    "MutateHeaders",
    "forwardable_request_headers",
    "forwardable_response_headers",
    "normalise_name",
]

#: Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the de-facto
#: ones). ``host`` is here because the upstream client sets the upstream's own host, and
#: ``expect`` because the server in front of us already answered ``100-continue``.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"http2-settings",
        b"expect",
    }
)

#: Client-supplied headers that claim an identity or steer routing; removed on every route.
DEFAULT_IDENTITY_HEADERS: tuple[str, ...] = (
    "remote-user",
    "remote-addr",
    "forwarded",
    "via",
    "x-user",
    "x-user-id",
    "x-username",
    "x-email",
    "x-roles",
    "x-role",
    "x-groups",
    "x-tenant",
    "x-tenant-id",
    "x-organization",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
    "x-jwt-assertion",
    "x-client-ip",
    "x-real-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "true-client-ip",
    "cf-connecting-ip",
)
#: Whole families removed by prefix (after normalisation).
DEFAULT_IDENTITY_PREFIXES: tuple[str, ...] = (
    "x-gateway-",
    "x-auth-",
    "x-forwarded-",
    "x-authenticated-",
    "x-remote-",
    "remote-",  # Authelia-style Remote-User/-Groups/-Email/-Name (found by tests/security)
    "x-pomerium-",
    "x-webauth-",
    "x-ms-client-principal",
    "oidc-",
)
#: The gateway's own session cookie: never shown to the upstream.
DEFAULT_SESSION_COOKIE = "__Host-gw_session"
#: The gateway's other cookies, never forwarded nor set by the upstream (the login state).
DEFAULT_OTHER_COOKIES: tuple[str, ...] = ("__Host-gw_login",)

#: Upstream response headers never passed to the client (software banners), in any spelling.
DEFAULT_DROPPED_RESPONSE_HEADERS: tuple[str, ...] = ("server", "x-powered-by")

#: Response headers that an upstream's ``Connection`` header can never make us drop.
_PROTECTED_RESPONSE = frozenset(
    {
        b"strict-transport-security",
        b"content-security-policy",
        b"x-content-type-options",
        b"x-frame-options",
        b"referrer-policy",
        b"cross-origin-opener-policy",
        b"cross-origin-resource-policy",
        b"content-type",
        b"content-length",
        b"set-cookie",
    }
)
#: Request headers the gateway owns; a ``Connection`` header never removes them.
_PROTECTED_REQUEST_PREFIXES = (b"x-gateway-", b"x-forwarded-", b"x-request-id")

# Lower-case letters; turn every token punctuation character (RFC 9110 tchar) into "-".
_FOLD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+.^_`|~",
    b"abcdefghijklmnopqrstuvwxyz--------------",
)
_IDENTITY_CACHE_LIMIT = 10_000
_SAFE_VALUE = re.compile(r"[\x21-\x7e]*( [\x21-\x7e]+)*")


def normalise_name(name: bytes) -> bytes:
    """Lower-case, every punctuation character as ``-``: how servers behind us fold names.

    CGI/WSGI and PHP turn ``X-Auth-User``, ``X_Auth_User`` and ``X.Auth.User`` all into
    ``HTTP_X_AUTH_USER``; comparing folded names makes every such spelling one header.
    """
    return name.translate(_FOLD)


#: Folded names by name as sent: a request carries the same dozen names again and again.
#: Bounded (cleared when full), so a client sending ever new names only costs the folding.
_FOLDED: dict[bytes, bytes] = {}
_FOLDED_LIMIT = 2048


def _folded(name: bytes) -> bytes:
    norm = _FOLDED.get(name)
    if norm is None:
        norm = name.translate(_FOLD)
        if len(_FOLDED) >= _FOLDED_LIMIT:
            _FOLDED.clear()
        _FOLDED[bytes(name)] = norm
    return norm


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(normalise_name(t.strip()) for t in value.split(b",") if t.strip())
    return named


def forwardable_request_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """The client's headers without hop-by-hop ones and those its ``Connection`` names.

    Names are folded (:func:`normalise_name`), so ``Transfer_Encoding`` goes too. Headers the
    gateway owns (``X-Gateway-*``, ``X-Forwarded-*``, ``X-Request-ID``) survive a
    ``Connection`` listing: when the mutate stage ran they are ours, and a client must not be able
    to strip them.
    """
    kept: list[tuple[bytes, bytes]] = []
    connection: list[bytes] | None = None
    for name, value in headers:
        norm = _folded(name)
        if norm in HOP_BY_HOP:
            if norm == b"connection":
                connection = [*(connection or ()), value]
            continue
        kept.append((name, value))
    if connection is None:
        return kept
    named = {
        n
        for n in _connection_tokens((b"connection", value) for value in connection)
        if not n.startswith(_PROTECTED_REQUEST_PREFIXES)
    }
    return [(name, value) for name, value in kept if _folded(name) not in named]


def forwardable_response_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers without hop-by-hop ones and those its ``Connection`` names.

    Only the upstream's own ``Connection`` header counts (the client's never reaches this far),
    and security headers are kept whatever it names.
    """
    headers = list(headers)
    named = _connection_tokens(headers) - _PROTECTED_RESPONSE
    return [
        (name, value)
        for name, value in headers
        if (norm := _folded(name)) not in HOP_BY_HOP and norm not in named
    ]


def _header_value(value: str) -> bytes:
    if _SAFE_VALUE.fullmatch(value):
        return value.encode("ascii")
    return urllib.parse.quote(value, safe="!#$&'()*+,/:;=?@[]~|^`{}").encode("ascii")


# What the mutate stage does with a client's request header, by its name as sent.
_KEEP = 0
_DROP = 1
_COOKIE = 2
# ... and with an upstream's response header.
_PASS = 0
_BANNER = 1
_SET_COOKIE = 2
#: Names remembered per stage (cleared when full: ever new names only cost the folding).
_ACTION_CACHE_LIMIT = 2048
#: X-Forwarded-* header sets remembered, by (client address, scheme, host).
_VALUE_CACHE_LIMIT = 4096
#: Cookie headers remembered with the gateway's cookies taken out (only those up to this
#: long, so the memory stays a few MB whatever clients send).
_COOKIE_CACHE_LIMIT = 1024
_MAX_REMEMBERED_COOKIE = 4096


def _sets_cookie(name: bytes, value: bytes, cookies_lower: frozenset[bytes]) -> bool:
    """True for a ``Set-Cookie`` header that sets one of the gateway's own cookies (any case)."""
    return name.lower() == b"set-cookie" and (
        value.split(b"=", 1)[0].strip().lower() in cookies_lower
    )


def _strip_cookie(value: bytes, cookies_lower: frozenset[bytes]) -> bytes:
    """``value`` without the gateway's cookies, compared in any letter case (upstream
    frameworks that fold cookie names must not see a look-alike either)."""
    kept = [
        part.strip()
        for part in value.split(b";")
        if part.strip() and part.strip().split(b"=", 1)[0].strip().lower() not in cookies_lower
    ]
    return b"; ".join(kept)


class MutateHeaders:
    """Rewrite the request headers for the upstream (see the module docstring).

    Needs the https stage (request id, client IP, scheme, host) and the authenticate stage
    (identity) to have run; raises :class:`gateway.types.StageMissing` otherwise.
    """

    name: ClassVar[str] = "mutate"

    def __init__(
        self,
        app: ASGIApp,
        *,
        signer: AssertionSigner,
        identity_headers: Sequence[str] = DEFAULT_IDENTITY_HEADERS,
        identity_prefixes: Sequence[str] = DEFAULT_IDENTITY_PREFIXES,
        session_cookie: str = DEFAULT_SESSION_COOKIE,
        other_cookies: Sequence[str] = DEFAULT_OTHER_COOKIES,
        dropped_response_headers: Sequence[str] = DEFAULT_DROPPED_RESPONSE_HEADERS,
    ) -> None:
        for header in (*identity_headers, *identity_prefixes, *dropped_response_headers):
            if not header or header != header.strip() or not header.isascii():
                raise ValueError(f"invalid header name in identity header list: {header!r}")
        if not identity_prefixes or "x-gateway-" not in (p.lower() for p in identity_prefixes):
            raise ValueError("identity_prefixes must include 'x-gateway-' (our own headers)")
        for cookie in (session_cookie, *other_cookies):
            if not cookie or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", cookie):
                raise ValueError(f"not a valid cookie name: {cookie!r}")
        self.app = app
        self._signer = signer
        self._drop = frozenset(normalise_name(h.encode()) for h in identity_headers)
        self._drop_prefixes = tuple(normalise_name(p.encode()) for p in identity_prefixes)
        self._cookies_lower = frozenset(
            c.encode().lower() for c in (session_cookie, *other_cookies)
        )
        self._drop_response = frozenset(
            normalise_name(h.encode()) for h in dropped_response_headers
        )
        # Identity headers with their assertion, rebuilt whenever the signer issues a new one;
        # by id(identity) (hashing a frozen dataclass runs Python code), the entry holding the
        # object so its id is not reused while the entry lives.
        self._identity_cache: dict[int, tuple[Identity, str, list[tuple[bytes, bytes]]]] = {}
        # (client address, scheme, host) -> the X-Forwarded-* headers for them.
        self._forwarded: dict[
            tuple[str | None, str, str | None], tuple[tuple[bytes, bytes], ...]
        ] = {}
        # Per header name as sent: what to do with it (see _request_action/_response_action).
        self._request_actions: dict[bytes, int] = {}
        self._response_actions: dict[bytes, int] = {}
        self._cookies: dict[bytes, bytes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope["headers"] = self.rewrite(scope)
        actions = self._response_actions
        classify = self._response_action
        cookies = self._cookies_lower

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                kept = []
                for name, value in headers:
                    action = actions.get(name)
                    if action is None:
                        action = classify(name)
                    if action == _PASS or (
                        action == _SET_COOKIE and not _sets_cookie(name, value, cookies)
                    ):
                        kept.append((name, value))
                if len(kept) != len(headers):
                    message = dict(message)
                    message["headers"] = kept
            await send(message)

        await self.app(scope, receive, send_guarded)

    def _response_action(self, name: bytes) -> int:
        norm = normalise_name(name)
        if norm in self._drop_response:
            action = _BANNER
        elif norm == b"set-cookie":
            action = _SET_COOKIE
        else:
            action = _PASS
        if len(self._response_actions) >= _ACTION_CACHE_LIMIT:
            self._response_actions.clear()
        self._response_actions[bytes(name)] = action
        return action

    def _request_action(self, name: bytes) -> int:
        norm = normalise_name(name)
        if norm in HOP_BY_HOP or norm == b"x-request-id":
            # x-request-id: ours replaces it (the https stage trusts only trusted proxies' ids)
            action = _DROP
        elif norm in self._drop or norm.startswith(self._drop_prefixes):
            action = _DROP
        elif norm == b"cookie":
            action = _COOKIE
        else:
            action = _KEEP
        if len(self._request_actions) >= _ACTION_CACHE_LIMIT:
            self._request_actions.clear()
        self._request_actions[bytes(name)] = action
        return action

    def _cookie_value(self, value: bytes) -> bytes:
        """``value`` without the gateway's cookies (:func:`_strip_cookie`), remembered per
        value: a browser sends the same Cookie header with every request."""
        found = self._cookies.get(value)
        if found is None:
            found = _strip_cookie(value, self._cookies_lower)
            if len(value) <= _MAX_REMEMBERED_COOKIE:
                if len(self._cookies) >= _COOKIE_CACHE_LIMIT:
                    self._cookies.clear()
                self._cookies[bytes(value)] = found
        return found

    def rewrite(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The header list to forward for ``scope`` (public for tests and the benchmark).

        One pass over the client's headers, each name's fate looked up by the name as sent;
        then, only when the client sent ``Connection``, the headers it names are dropped too.
        """
        gw = state(scope)
        who = identity(scope)
        actions = self._request_actions
        kept: list[tuple[bytes, bytes]] = []
        connection: list[bytes] | None = None
        for name, value in scope["headers"]:
            action = actions.get(name)
            if action is None:
                action = self._request_action(name)
            if action == _KEEP:
                kept.append((name, value))
            elif action == _COOKIE:
                cookies = self._cookie_value(value)
                if cookies:
                    kept.append((name, cookies))
            elif name.lower() == b"connection":
                connection = [*(connection or ()), value]
        if connection is not None:
            named = {
                n
                for n in _connection_tokens((b"connection", value) for value in connection)
                if not n.startswith(_PROTECTED_REQUEST_PREFIXES)
            }
            kept = [(name, value) for name, value in kept if _folded(name) not in named]
        key = (gw.client_ip, gw.scheme, gw.host)
        forwarded = self._forwarded.get(key)
        if forwarded is None:
            forwarded = self._forwarded_headers(key)
        kept.extend(forwarded)
        kept.append((b"x-request-id", gw.request_id.encode("ascii")))
        kept.extend(self._identity_headers(who))
        return kept

    def _forwarded_headers(
        self, key: tuple[str | None, str, str | None]
    ) -> tuple[tuple[bytes, bytes], ...]:
        """The X-Forwarded-For/-Proto/-Host headers of (client address, scheme, host),
        remembered (bounded: cleared when full)."""
        client_ip, scheme, host = key
        headers: list[tuple[bytes, bytes]] = []
        if client_ip:
            headers.append((b"x-forwarded-for", _header_value(client_ip)))
        headers.append((b"x-forwarded-proto", _header_value(scheme)))
        if host:
            headers.append((b"x-forwarded-host", _header_value(host)))
        found = tuple(headers)
        if len(self._forwarded) >= _VALUE_CACHE_LIMIT:
            self._forwarded.clear()
        self._forwarded[key] = found
        return found

    def _identity_headers(self, who: Identity) -> list[tuple[bytes, bytes]]:
        token = self._signer.sign(who)
        cached = self._identity_cache.get(id(who))
        if cached is not None and cached[0] is who and cached[1] is token:
            return cached[2]
        added = [
            (b"x-gateway-auth", who.method.encode()),
            (b"x-gateway-roles", _header_value(",".join(sorted(who.roles)))),
        ]
        if who.user_id is not None and who.issuer is not None and who.subject is not None:
            added.append((b"x-gateway-user-id", _header_value(who.user_id)))
            added.append((b"x-gateway-issuer", _header_value(who.issuer)))
            added.append((b"x-gateway-subject", _header_value(who.subject)))
        if who.tenant is not None:
            added.append((b"x-gateway-tenant", _header_value(who.tenant)))
        added.append((b"x-gateway-assertion", token.encode("ascii")))
        if len(self._identity_cache) >= _IDENTITY_CACHE_LIMIT:
            self._identity_cache.clear()
        self._identity_cache[id(who)] = (who, token, added)
        return added
