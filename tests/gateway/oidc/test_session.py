"""gateway/oidc/_session.py and _sessions_authn.py: the encrypted session cookie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from audit import MemorySink
from gateway.authn import AuthenticateStage
from gateway.oidc import (
    MemoryRevocations,
    Sealer,
    Session,
    SessionAuthenticator,
    SessionCodec,
    SessionCookieStage,
    decode_key,
    new_key,
)
from gateway.oidc import _sessions_authn as sessions_authn
from gateway.oidc._session import MAX_COOKIE_BYTES, cookie_in_header, read_cookie
from gateway.oidc.errors import RevocationsUnavailable, SessionTooLarge
from gateway.types import Scope, state
from tests.gateway._asgi import Recorder, call, http_scope, with_state
from tests.gateway.oidc._support import Clock, codec, grants, key


def _new(
    c: SessionCodec, roles: frozenset[str] = frozenset({"teacher"}), tenant: str = "school-a"
) -> Session:
    return c.new(idp="surf", issuer="https://idp.example", subject="s1", roles=roles, tenant=tenant)


class TestSealer:
    def test_round_trip(self) -> None:
        """What is sealed opens again with the same key and purpose."""
        sealer = Sealer(keys=[key()])
        assert sealer.open(sealer.seal({"a": 1}, purpose="p"), purpose="p") == {"a": 1}

    def test_payload_is_not_readable(self) -> None:
        """The cookie value does not show its content."""
        sealer = Sealer(keys=[key()])
        assert "secret-subject" not in sealer.seal({"sub": "secret-subject"}, purpose="p")

    def test_altered_value_refused(self) -> None:
        """Changing any character makes the value unreadable (authenticated encryption)."""
        sealer = Sealer(keys=[key()])
        value = sealer.seal({"a": 1}, purpose="p")
        flipped = value[:-3] + ("A" if value[-3] != "A" else "B") + value[-2:]
        assert sealer.open(flipped, purpose="p") is None

    def test_other_purpose_refused(self) -> None:
        """A login-state value cannot be replayed as a session (purpose is bound)."""
        sealer = Sealer(keys=[key()])
        assert sealer.open(sealer.seal({"a": 1}, purpose="login"), purpose="session") is None

    def test_rotation_old_key_still_opens(self) -> None:
        """After rotation the new key encrypts and values sealed with the old one still open."""
        old, new = key(), key()
        before = Sealer(keys=[old]).seal({"a": 1}, purpose="p")
        rotated = Sealer(keys=[new, old])
        assert rotated.open(before, purpose="p") == {"a": 1}
        after = rotated.seal({"b": 2}, purpose="p")
        assert Sealer(keys=[new]).open(after, purpose="p") == {"b": 2}
        assert Sealer(keys=[old]).open(after, purpose="p") is None

    def test_dropped_key_no_longer_opens(self) -> None:
        """Once a key is removed, its cookies are refused."""
        old = key()
        value = Sealer(keys=[old]).seal({"a": 1}, purpose="p")
        assert Sealer(keys=[key()]).open(value, purpose="p") is None

    @pytest.mark.parametrize("value", ["", "v1.", "v2.abc", "v1.!!!", "v1.AAAA", "x" * 5000])
    def test_garbage_refused(self, value: str) -> None:
        """Malformed values are refused, never an exception."""
        assert Sealer(keys=[key()]).open(value, purpose="p") is None

    def test_new_key_decodes_to_32_bytes(self) -> None:
        """new_key makes keys in the format session.keys takes."""
        assert len(decode_key(new_key())) == 32

    def test_standard_base64_spelling_refused(self) -> None:
        """A sealed value re-spelt in the standard alphabet (``-`` → ``+``, ``_`` → ``/``)
        decodes to the same bytes but is refused: only base64url is accepted."""
        sealer = Sealer(keys=[key()])
        while True:  # a value that has at least one of the two characters to re-spell
            value = sealer.seal({"a": 1}, purpose="p")
            if "-" in value or "_" in value:
                break
        assert sealer.open(value, purpose="p") == {"a": 1}
        standard = value.replace("-", "+").replace("_", "/")
        assert sealer.open(standard, purpose="p") is None

    @pytest.mark.parametrize("extra", ["!", ".", " ", "%", "\n", "=A"])
    def test_characters_outside_the_alphabet_refused(self, extra: str) -> None:
        """A character outside base64url anywhere in the value makes it unreadable (the
        lenient decoder would silently drop it)."""
        sealer = Sealer(keys=[key()])
        value = sealer.seal({"a": 1}, purpose="p")
        middle = len(value) // 2
        assert sealer.open(value[:middle] + extra + value[middle:], purpose="p") is None

    @pytest.mark.parametrize("text", ["a+b/", "ab cd", "abcde", "ab!c"])
    def test_decode_key_strict(self, text: str) -> None:
        """decode_key refuses the standard alphabet, stray characters and impossible
        lengths."""
        with pytest.raises(ValueError, match="base64url"):
            decode_key(text)


class TestSessionCodec:
    def test_round_trip(self) -> None:
        """A session survives encode and decode."""
        clock = Clock()
        c = codec(clock)
        session = _new(c)
        decoded, reason = c.decode(c.encode(session))
        assert reason == "ok"
        assert decoded == session

    def test_new_session_id_each_time(self) -> None:
        """Every login gets a fresh random session id."""
        c = codec(Clock())
        assert _new(c).session_id != _new(c).session_id

    def test_idle_timeout(self) -> None:
        """A session unused for the idle timeout is refused."""
        clock = Clock()
        c = codec(clock)
        value = c.encode(_new(c))
        clock.advance(1800)
        assert c.decode(value) == (None, "session_idle_timeout")

    def test_refresh_resets_idle_clock(self) -> None:
        """A refreshed session lives another idle period."""
        clock = Clock()
        c = codec(clock)
        session = _new(c)
        clock.advance(1700)
        assert c.needs_refresh(session)
        value = c.encode(c.refreshed(session))
        clock.advance(1700)
        assert c.decode(value)[1] == "ok"

    def test_federated_roles_go_stale(self) -> None:
        """A session kept alive by refreshes is refused once its login is roles_max_age old
        (the federation's roles must be asserted again), not a second earlier."""
        clock = Clock()
        c = SessionCodec(
            sealer=Sealer(keys=[key()]),
            cookie_name="__Host-gw_session",
            idle_timeout=1800,
            absolute_timeout=12 * 3600,
            refresh_interval=300,
            roles_max_age=3600,
            clock=clock,
        )
        session = _new(c)
        for _ in range(3):
            clock.advance(1199)
            session = c.refreshed(session)
        clock.advance(2)  # 3599 s after login
        assert c.decode(c.encode(session))[1] == "ok"
        clock.advance(1)
        assert c.decode(c.encode(session)) == (None, "session_roles_stale")

    def test_absolute_timeout(self) -> None:
        """No refresh extends a session past its absolute expiry."""
        clock = Clock()
        c = codec(clock)
        session = _new(c)
        for _ in range(12 * 4):
            clock.advance(900)
            session = c.refreshed(session)
        assert c.decode(c.encode(session)) == (None, "session_expired")

    def test_cookie_attributes(self) -> None:
        """__Host- prefix, Secure, HttpOnly, SameSite=Lax, Path=/ and no Domain."""
        header = codec(Clock()).set_cookie("v").decode()
        assert header.startswith("__Host-gw_session=v;")
        for attribute in ("Path=/", "Secure", "HttpOnly", "SameSite=Lax"):
            assert attribute in header
        assert "domain" not in header.lower()

    def test_oversized_session_refused(self) -> None:
        """A session that would not fit in a cookie is an error, never silently dropped."""
        c = codec(Clock())
        roles = frozenset(f"role_{n:04d}" for n in range(400))
        with pytest.raises(SessionTooLarge):
            c.encode(_new(c, roles=roles))

    def test_normal_session_well_below_limit(self) -> None:
        """A usual session is far below the browser limit."""
        c = codec(Clock())
        assert len(c.set_cookie(c.encode(_new(c)))) < MAX_COOKIE_BYTES // 4


class _CountingSealer(Sealer):
    def __init__(self) -> None:
        super().__init__(keys=[key()])
        self.opened = 0

    def open(self, value: str, *, purpose: str) -> dict[str, Any] | None:
        self.opened += 1
        return super().open(value, purpose=purpose)


def _counting_codec(clock: Clock, **options: Any) -> tuple[SessionCodec, _CountingSealer]:
    sealer = _CountingSealer()
    c = SessionCodec(
        sealer=sealer,
        cookie_name="__Host-gw_session",
        idle_timeout=1800,
        absolute_timeout=12 * 3600,
        refresh_interval=300,
        clock=clock,
        **options,
    )
    return c, sealer


class TestDecodeCache:
    def test_same_value_opened_once(self) -> None:
        """A cookie value sent again within the cache time is not decrypted again."""
        c, sealer = _counting_codec(Clock())
        value = c.encode(_new(c))
        first, second = c.decode(value), c.decode(value)
        assert first == second
        assert first[1] == "ok"
        assert sealer.opened == 1

    def test_timeouts_checked_on_cached_sessions(self) -> None:
        """A cached session still expires: the idle timeout is checked at every decode."""
        clock = Clock()
        c, sealer = _counting_codec(clock, cache_ttl=3600)
        value = c.encode(_new(c))
        assert c.decode(value)[1] == "ok"
        clock.advance(1800)
        assert c.decode(value) == (None, "session_idle_timeout")
        assert sealer.opened == 1

    def test_opened_again_after_the_cache_time(self) -> None:
        """After cache_ttl seconds the cookie is decrypted again."""
        clock = Clock()
        c, sealer = _counting_codec(clock, cache_ttl=10)
        value = c.encode(_new(c))
        c.decode(value)
        clock.advance(11)
        assert c.decode(value)[1] == "ok"
        assert sealer.opened == 2

    def test_altered_value_never_served_from_the_cache(self) -> None:
        """A value differing in one character is opened (and refused), not looked up."""
        c, _sealer = _counting_codec(Clock())
        value = c.encode(_new(c))
        c.decode(value)
        altered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
        assert c.decode(altered) == (None, "session_invalid")

    def test_failures_not_cached_and_cache_bounded(self) -> None:
        """Refused values are opened every time; the cache never holds more than its size."""
        c, sealer = _counting_codec(Clock(), cache_size=3)
        for _ in range(2):
            c.decode("v1.forged")
        assert sealer.opened == 2
        values = [c.encode(_new(c)) for _ in range(5)]
        for value in values:
            c.decode(value)
        assert len(c._opened) == 3
        assert list(c._opened) == values[2:]  # the oldest went first

    def test_size_zero_disables_the_cache(self) -> None:
        """cache_size=0 opens every cookie every time."""
        c, sealer = _counting_codec(Clock(), cache_size=0)
        value = c.encode(_new(c))
        c.decode(value)
        c.decode(value)
        assert sealer.opened == 2


class TestReadCookie:
    def test_finds_named_cookie(self) -> None:
        """The named cookie is found among others."""
        headers = [(b"cookie", b"a=1; __Host-gw_session=xyz; b=2")]
        assert read_cookie(headers, "__Host-gw_session") == "xyz"

    def test_missing(self) -> None:
        """No such cookie: None."""
        assert read_cookie([(b"cookie", b"a=1")], "__Host-gw_session") is None


def _scope(value: str | None) -> Scope:
    headers = [("cookie", f"__Host-gw_session={value}")] if value else []
    return with_state(http_scope("/", headers=headers))


class TestSessionAuthenticator:
    def _auth(self, tmp_path: Path, clock: Clock, text: str = "", **kw):  # type: ignore[no-untyped-def]
        sink = MemorySink()
        c = kw.pop("c", None) or codec(clock)
        revocations = MemoryRevocations(clock=clock)
        auth = SessionAuthenticator(
            codec=c, revocations=revocations, grants=grants(tmp_path, text), sink=sink
        )
        return auth, c, revocations, sink

    async def test_declines_without_cookie(self, tmp_path: Path) -> None:
        """No session cookie: not this authenticator's request."""
        auth, *_ = self._auth(tmp_path, Clock())
        assert await auth.authenticate(_scope(None)) is None

    async def test_valid_session_is_identity(self, tmp_path: Path) -> None:
        """A valid cookie yields the identity it holds."""
        clock = Clock()
        auth, c, _, _ = self._auth(tmp_path, clock)
        session = _new(c)
        who = await auth.authenticate(_scope(c.encode(session)))
        assert who is not None
        assert who.roles == {"teacher"}
        assert who.tenant == "school-a"
        assert who.method == "session"
        assert who.session_id == session.session_id
        assert who.user_id == "https://idp.example|s1"

    async def test_grants_added_at_request_time(self, tmp_path: Path) -> None:
        """Local grants for the session's tenant are added to the federated roles."""
        text = (
            '[[grants]]\nissuer = "surf"\nsubject = "s1"\ntenant = "school-a"\n'
            'roles = ["lob_coordinator"]\n'
        )
        clock = Clock()
        auth, c, _, _ = self._auth(tmp_path, clock, text)
        who = await auth.authenticate(_scope(c.encode(_new(c))))
        assert who is not None
        assert who.roles == {"teacher", "lob_coordinator"}

    async def test_same_session_same_identity_until_grants_change(self, tmp_path: Path) -> None:
        """A session seen again yields the same identity object; a withdrawn grant is gone
        at the next request all the same (grants are read per request)."""
        text = (
            '[[grants]]\nissuer = "surf"\nsubject = "s1"\ntenant = "school-a"\n'
            'roles = ["lob_coordinator"]\n'
        )
        auth, c, _, _ = self._auth(tmp_path, Clock(), text)
        value = c.encode(_new(c))
        first = await auth.authenticate(_scope(value))
        assert first is not None and await auth.authenticate(_scope(value)) is first
        (tmp_path / "grants.toml").write_text("")
        auth._grants.reload()
        later = await auth.authenticate(_scope(value))
        assert later is not None and later.roles == {"teacher"}

    async def test_remembered_identity_does_not_outlive_revocation(self, tmp_path: Path) -> None:
        """A session whose identity was seen before is refused once it is revoked."""
        clock = Clock()
        auth, c, revocations, sink = self._auth(tmp_path, clock)
        session = _new(c)
        value = c.encode(session)
        assert await auth.authenticate(_scope(value)) is not None
        revocations.revoke_session(session.session_id, until=session.expires_at)
        assert await auth.authenticate(_scope(value)) is None
        assert sink.events[-1]["event.reason"] == "session_revoked"

    async def test_tampered_cookie_rejected_and_cleared(self, tmp_path: Path) -> None:
        """A forged cookie is anonymous, audited and cleared."""
        auth, _, _, sink = self._auth(tmp_path, Clock())
        scope = _scope("v1.forged")
        assert await auth.authenticate(scope) is None
        assert sink.events[-1]["event.action"] == "session_rejected"
        assert sink.events[-1]["event.reason"] == "session_invalid"
        cookies = state(scope).extra["oidc.set_cookie"]
        assert b"Max-Age=0" in cookies[0]

    async def test_revoked_session_refused(self, tmp_path: Path) -> None:
        """A session id in the revocation record is refused at once."""
        clock = Clock()
        auth, c, revocations, sink = self._auth(tmp_path, clock)
        session = _new(c)
        revocations.revoke_session(session.session_id, until=session.expires_at)
        assert await auth.authenticate(_scope(c.encode(session))) is None
        assert sink.events[-1]["event.reason"] == "session_revoked"

    async def test_subject_revocation_spares_later_sessions(self, tmp_path: Path) -> None:
        """Revoking a subject ends its sessions issued before, not those after."""
        clock = Clock()
        auth, c, revocations, _ = self._auth(tmp_path, clock)
        old = _new(c)
        revocations.revoke_subject(old.user_id, before=clock(), until=clock() + 99999)
        clock.advance(1)
        new = _new(c)
        assert await auth.authenticate(_scope(c.encode(old))) is None
        assert await auth.authenticate(_scope(c.encode(new))) is not None

    async def test_stale_session_reissued(self, tmp_path: Path) -> None:
        """A session used after the refresh interval gets a new cookie."""
        clock = Clock()
        auth, c, _, _ = self._auth(tmp_path, clock)
        value = c.encode(_new(c))
        clock.advance(400)
        scope = _scope(value)
        assert await auth.authenticate(scope) is not None
        (cookie,) = state(scope).extra["oidc.set_cookie"]
        fresh = cookie.decode().split(";")[0].split("=", 1)[1]
        decoded, _ = c.decode(fresh)
        assert decoded is not None
        assert decoded.refreshed_at == clock()

    async def test_refresh_audited(self, tmp_path: Path) -> None:
        """A re-issued session is a session_refresh event with the current roles."""
        clock = Clock()
        auth, c, _, sink = self._auth(tmp_path, clock)
        value = c.encode(_new(c))
        assert await auth.authenticate(_scope(value)) is not None
        assert sink.actions() == []
        clock.advance(400)
        assert await auth.authenticate(_scope(value)) is not None
        assert sink.actions() == ["session_refresh"]
        assert sink.events[0]["user.roles"] == ["teacher"]
        assert sink.events[0]["organization.id"] == "school-a"


class TestAuthenticatorCaches:
    """What the session authenticator remembers between requests, and what it never does."""

    def _auth(self, tmp_path: Path, clock: Clock, text: str = ""):  # type: ignore[no-untyped-def]
        sink = MemorySink()
        c = codec(clock)
        revocations = MemoryRevocations(clock=clock)
        auth = SessionAuthenticator(
            codec=c, revocations=revocations, grants=grants(tmp_path, text), sink=sink
        )
        return auth, c, revocations, sink

    async def test_cookie_header_parsed_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same Cookie header sent again is not split again."""
        calls: list[bytes] = []

        def counting(value: bytes, wanted: bytes) -> str | None:
            calls.append(value)
            return cookie_in_header(value, wanted)

        monkeypatch.setattr(sessions_authn, "cookie_in_header", counting)
        auth, c, _, _ = self._auth(tmp_path, Clock())
        value = c.encode(_new(c))
        assert await auth.authenticate(_scope(value)) is not None
        assert await auth.authenticate(_scope(value)) is not None
        assert len(calls) == 1

    async def test_cookie_header_cache_bounded(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ever new Cookie headers never make the cache hold more than its size."""
        monkeypatch.setattr(sessions_authn, "COOKIE_HEADER_CACHE_SIZE", 4)
        auth, *_ = self._auth(tmp_path, Clock())
        for n in range(20):
            scope = with_state(http_scope("/", headers=[("cookie", f"other={n}")]))
            assert await auth.authenticate(scope) is None
        assert 0 < len(auth._cookie_headers) <= 4

    async def test_long_cookie_header_not_remembered(self, tmp_path: Path) -> None:
        """A Cookie header above the size limit is parsed, found and not kept."""
        auth, c, _, _ = self._auth(tmp_path, Clock())
        value = c.encode(_new(c))
        padding = "x" * sessions_authn.MAX_REMEMBERED_COOKIE_HEADER
        headers = [("cookie", f"pad={padding}; __Host-gw_session={value}")]
        assert await auth.authenticate(with_state(http_scope("/", headers=headers))) is not None
        assert auth._cookie_headers == {}

    async def test_first_cookie_header_with_the_cookie_wins(self, tmp_path: Path) -> None:
        """Across several Cookie headers the first one holding the session cookie counts."""
        auth, c, _, _ = self._auth(tmp_path, Clock())
        value = c.encode(_new(c))
        headers = [("cookie", "a=1"), ("cookie", f"__Host-gw_session={value}")]
        for _ in range(2):  # parsed, then remembered
            who = await auth.authenticate(with_state(http_scope("/", headers=headers)))
            assert who is not None

    async def test_idle_session_refused_after_being_remembered(self, tmp_path: Path) -> None:
        """A session authenticated a moment ago is refused once its idle timeout passed."""
        clock = Clock()
        auth, c, _, sink = self._auth(tmp_path, clock)
        value = c.encode(_new(c))
        assert await auth.authenticate(_scope(value)) is not None
        clock.advance(1800)
        assert await auth.authenticate(_scope(value)) is None
        assert sink.events[-1]["event.reason"] == "session_idle_timeout"

    async def test_expired_session_refused_after_being_remembered(self, tmp_path: Path) -> None:
        """A session authenticated a moment ago is refused once its absolute expiry passed."""
        clock = Clock()
        auth, c, _, sink = self._auth(tmp_path, clock)
        session = _new(c)
        value = c.encode(session)
        assert await auth.authenticate(_scope(value)) is not None
        clock.now = session.expires_at
        assert await auth.authenticate(_scope(value)) is None
        assert sink.events[-1]["event.reason"] == "session_expired"

    async def test_subject_revocation_seen_at_once(self, tmp_path: Path) -> None:
        """Revoking the subject refuses its remembered session at the next request."""
        clock = Clock()
        auth, c, revocations, sink = self._auth(tmp_path, clock)
        session = _new(c)
        value = c.encode(session)
        assert await auth.authenticate(_scope(value)) is not None
        revocations.revoke_subject(session.user_id, before=clock(), until=clock() + 99999)
        assert await auth.authenticate(_scope(value)) is None
        assert sink.events[-1]["event.reason"] == "session_revoked"

    async def test_new_grant_seen_at_once(self, tmp_path: Path) -> None:
        """A grant added after the session was remembered is in its next identity."""
        auth, c, _, _ = self._auth(tmp_path, Clock())
        value = c.encode(_new(c))
        first = await auth.authenticate(_scope(value))
        assert first is not None and first.roles == {"teacher"}
        (tmp_path / "grants.toml").write_text(
            '[[grants]]\nissuer = "surf"\nsubject = "s1"\ntenant = "school-a"\n'
            'roles = ["lob_coordinator"]\n'
        )
        auth._grants.reload()
        later = await auth.authenticate(_scope(value))
        assert later is not None and later.roles == {"teacher", "lob_coordinator"}

    async def test_remembered_identities_bounded(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Many sessions never make the remembered identities exceed their size."""
        monkeypatch.setattr(sessions_authn, "IDENTITY_CACHE_SIZE", 3)
        auth, c, _, _ = self._auth(tmp_path, Clock())
        for _ in range(10):
            assert await auth.authenticate(_scope(c.encode(_new(c)))) is not None
        assert 0 < len(auth._seen) <= 3
        assert 0 < len(auth._identities) <= 3


class TestSessionCookieStage:
    async def test_unknown_revocation_state_is_503(self) -> None:
        """A session the revocation record cannot vouch for is answered 503, not let in."""

        async def inner(scope, receive, send):  # type: ignore[no-untyped-def]
            raise RevocationsUnavailable("revocation record not synchronised")

        result = await call(SessionCookieStage(inner), with_state(http_scope("/")))
        assert result.status == 503

    async def test_passes_the_request_on(self) -> None:
        """Otherwise the request goes on, its response unchanged."""
        inner = Recorder(headers=[(b"set-cookie", b"a=1")])
        result = await call(SessionCookieStage(inner), with_state(http_scope("/")))
        assert result.status == 200
        assert result.header_values("set-cookie") == ["a=1"]

    async def test_refreshed_cookie_reaches_the_response(self, tmp_path: Path) -> None:
        """With the authenticate stage after it, a re-issued session cookie is on the response."""
        clock = Clock()
        c = codec(clock)
        auth = SessionAuthenticator(
            codec=c,
            revocations=MemoryRevocations(clock=clock),
            grants=grants(tmp_path),
            sink=MemorySink(),
        )
        value = c.encode(_new(c))
        clock.advance(400)
        stage = SessionCookieStage(
            AuthenticateStage(Recorder(), authenticators=[auth], sink=MemorySink())
        )
        result = await call(stage, _scope(value))
        (cookie,) = result.header_values("set-cookie")
        assert cookie.startswith("__Host-gw_session=v1.")
