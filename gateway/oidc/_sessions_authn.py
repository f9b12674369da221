"""The session authenticator and the stage that writes session cookies onto responses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from audit import AuditSink
from gateway.authn import add_set_cookie
from gateway.oidc._audit import session_event
from gateway.oidc._claims import Grants
from gateway.oidc._relogin import hint_cookie
from gateway.oidc._revocation import RevocationStore
from gateway.oidc._session import Session, SessionCodec, cookie_in_header
from gateway.oidc.errors import RevocationsUnavailable, SessionCheckUnavailable
from gateway.pages import send_error
from gateway.types import ASGIApp, Identity, Receive, Scope, Send, state

#: Identities kept for reuse, by (session id, roles); cleared when full.
IDENTITY_CACHE_SIZE = 4096
#: Cookie header values kept with the session cookie's value found in them; cleared when full.
COOKIE_HEADER_CACHE_SIZE = 4096
#: Longer Cookie headers are parsed at every request (the cache stays a few MB).
MAX_REMEMBERED_COOKIE_HEADER = 4096


class SessionAuthenticator:
    """Recognises the encrypted session cookie.

    Declines (anonymous) without the cookie; an altered, expired, idle or revoked cookie is
    cleared, recorded as a ``session_rejected`` event with the reason, and the request goes on
    anonymous, so a browser is sent to log in again rather than shown an error. When the
    revocation record cannot say whether the session is revoked (its store has been away for
    longer than it may be), :class:`RevocationsUnavailable` is raised after the event and
    :class:`SessionCookieStage` answers 503 (fail closed). A session used
    after ``refresh_interval`` is re-issued (idle clock reset). Locally granted roles are added
    from the current grants file at every request.
    """

    name: ClassVar[str] = "session"

    def __init__(
        self,
        *,
        codec: SessionCodec,
        revocations: RevocationStore,
        grants: Grants,
        sink: AuditSink,
    ) -> None:
        self._codec = codec
        self._revocations = revocations
        self._grants = grants
        self._sink = sink
        self._identities: dict[tuple[str, frozenset[str]], Identity] = {}
        self._cookie_name = codec.cookie_name.encode("latin-1")
        # Cookie header value -> the session cookie's value in it (None: not there).
        self._cookie_headers: dict[bytes, str | None] = {}
        # id(session) -> (session, its user id, the grants it was seen with, its identity).
        self._seen: dict[int, tuple[Session, str, frozenset[str], Identity]] = {}

    def _cookie(self, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """:func:`read_cookie` for the session cookie, each Cookie header's answer remembered
        (a browser sends the same header with every request; the answer depends on nothing
        else)."""
        remembered = self._cookie_headers
        for name, raw in headers:
            if name != b"cookie":
                continue
            if raw in remembered:
                found = remembered[raw]
            else:
                found = cookie_in_header(raw, self._cookie_name)
                if len(raw) <= MAX_REMEMBERED_COOKIE_HEADER:
                    if len(remembered) >= COOKIE_HEADER_CACHE_SIZE:
                        remembered.clear()
                    remembered[bytes(raw)] = found
            if found is not None:
                return found
        return None

    async def authenticate(self, scope: Scope) -> Identity | None:
        value = self._cookie(scope.get("headers", ()))
        if not value:
            return None
        codec = self._codec
        now = codec.clock()
        session, reason = codec.decode(value, now=now)
        seen = None if session is None else self._seen.get(id(session))
        if seen is not None and seen[0] is not session:
            seen = None
        try:
            revoked = session is not None and self._revocations.is_revoked(
                session_id=session.session_id,
                user_id=session.user_id if seen is None else seen[1],
                issued_at=session.issued_at,
            )
        except RevocationsUnavailable:
            # Not known revoked, but the record is too old to say it is not: neither accepted
            # nor cleared (the session may be fine); the session stage answers 503.
            self._sink.emit(
                session_event(
                    scope,
                    action="session_rejected",
                    event_type=["denied"],
                    outcome="failure",
                    reason=RevocationsUnavailable.reason,
                    **{"http.response.status_code": 503},
                )
            )
            raise
        if revoked:
            session, reason = None, "session_revoked"
        if session is None:
            self._reject(scope, reason)
            if reason == "session_roles_stale":
                stale = self._codec.opened(value)
                if stale is not None:
                    # Only the roles are old: the next login first tries a silent one there.
                    now = self._codec.clock()
                    add_set_cookie(scope, hint_cookie(self._codec.sealer, idp=stale.idp, now=now))
            return None
        granted = self._grants.roles_for(session.idp, session.subject, session.tenant)
        if seen is not None and seen[2] is granted:
            who = seen[3]  # the same session object with the same grants object: same roles
            roles = who.roles
        else:
            roles = session.roles | granted if granted else session.roles
            if not roles:
                self._reject(scope, "no_role_mapping")
                return None
            who = self._identity(session, roles)
            self._remember(session, granted, who)
        if codec.needs_refresh(session, now=now):
            refreshed = codec.refreshed(session)
            add_set_cookie(scope, codec.set_cookie(codec.encode(refreshed)))
            event = session_event(
                scope, action="session_refresh", event_type=["change"], outcome="success"
            )
            event["user.id"] = who.user_id
            event["user.roles"] = sorted(roles)
            if who.tenant is not None:
                event["organization.id"] = who.tenant
            self._sink.emit(event)
        return who

    def _remember(self, session: Session, granted: frozenset[str], who: Identity) -> None:
        """Keep ``who`` for ``session`` (this very object, as the codec hands it out again
        for the same cookie value) while :meth:`Grants.roles_for` answers ``granted``."""
        if len(self._seen) >= IDENTITY_CACHE_SIZE:
            self._seen.clear()
        self._seen[id(session)] = (session, session.user_id, granted, who)

    def _identity(self, session: Session, roles: frozenset[str]) -> Identity:
        """The identity of ``session`` with ``roles``: the same object as last time when
        nothing changed, so the later stages' look-ups keyed on it (assertion, identity
        headers) find it by identity rather than comparing field by field."""
        key = (session.session_id, roles)
        who = self._identities.get(key)
        if (
            who is None
            or who.issuer != session.issuer
            or who.subject != session.subject
            or who.tenant != session.tenant
        ):
            who = Identity(
                issuer=session.issuer,
                subject=session.subject,
                roles=roles,
                tenant=session.tenant,
                method="session",
                session_id=session.session_id,
            )
            if len(self._identities) >= IDENTITY_CACHE_SIZE:
                self._identities.clear()
            self._identities[key] = who
        return who

    def _reject(self, scope: Scope, reason: str) -> None:
        add_set_cookie(scope, self._codec.clear_cookie())
        self._sink.emit(
            session_event(
                scope,
                action="session_rejected",
                event_type=["end"],
                outcome="failure",
                reason=reason,
            )
        )


class SessionCookieStage:
    """Answers 503 when the session authenticator cannot check a session against the
    revocation record (:class:`RevocationsUnavailable`, raised before any response starts).

    Place it before the authenticate stage (after https, which creates the gateway state).
    The ``Set-Cookie`` headers the session authenticator asks for (a refreshed or cleared
    session) are added by the authenticate stage (:func:`gateway.authn.add_set_cookie`), which
    wraps ``send`` only for the requests that have some: wrapping it here, for every request,
    cost about a microsecond per request (``bench/PROFILE.md``).
    """

    name: ClassVar[str] = "session_cookie"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except RevocationsUnavailable:
            await send_error(
                scope,
                send,
                SessionCheckUnavailable(RevocationsUnavailable.reason),
                state(scope).request_id,
            )
