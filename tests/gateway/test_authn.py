"""gateway/authn.py: authenticators decline, accept or reject; rejection is never anonymous."""

from __future__ import annotations

from typing import ClassVar

from audit import MemorySink
from gateway.authn import AuthenticateStage, AuthenticationFailed, add_set_cookie
from gateway.types import ANONYMOUS, Identity, Scope
from tests.gateway._asgi import Recorder, call, http_scope, with_state

TEACHER = Identity(
    issuer="https://idp.example",
    subject="t1",
    roles=frozenset({"teacher"}),
    tenant="school-a",
    method="session",
)


class Declines:
    name: ClassVar[str] = "declines"

    def __init__(self) -> None:
        self.calls = 0

    async def authenticate(self, scope: Scope) -> Identity | None:
        self.calls += 1
        return None


class Accepts:
    name: ClassVar[str] = "accepts"

    async def authenticate(self, scope: Scope) -> Identity | None:
        return TEACHER


class Rejects:
    name: ClassVar[str] = "rejects"

    async def authenticate(self, scope: Scope) -> Identity | None:
        raise AuthenticationFailed("token_expired", action="bearer_token_rejected")


class TestAuthenticateStage:
    async def test_no_credentials_means_anonymous(self) -> None:
        """When every authenticator declines, the identity is anonymous."""
        inner, first, second = Recorder(), Declines(), Declines()
        stage = AuthenticateStage(inner, authenticators=[first, second], sink=MemorySink())
        await call(stage, with_state(http_scope()))
        assert inner.state.identity is ANONYMOUS
        assert (first.calls, second.calls) == (1, 1)

    async def test_first_identity_wins(self) -> None:
        """The first authenticator that recognises the request decides, the rest are skipped."""
        inner, later = Recorder(), Declines()
        stage = AuthenticateStage(inner, authenticators=[Accepts(), later], sink=MemorySink())
        await call(stage, with_state(http_scope()))
        assert inner.state.identity is TEACHER
        assert later.calls == 0

    async def test_rejection_is_401_and_audited(self) -> None:
        """An invalid credential stops the request with 401 and an audit event with its reason."""
        inner, sink = Recorder(), MemorySink()
        stage = AuthenticateStage(inner, authenticators=[Declines(), Rejects()], sink=sink)
        result = await call(stage, with_state(http_scope(headers=[("user-agent", "curl/8")])))
        assert result.status == 401
        assert result.header("www-authenticate") == 'Bearer error="invalid_token"'
        assert not inner.called
        [event] = sink.events
        assert event["event.action"] == "bearer_token_rejected"
        assert event["event.reason"] == "token_expired"
        assert event["event.outcome"] == "failure"
        assert event["source.ip"] == "203.0.113.7"
        assert event["trace.id"] == "test-request-id"
        assert event["user_agent.original"] == "curl/8"

    async def test_rejected_websocket_is_closed(self) -> None:
        """A WebSocket upgrade with a bad credential is closed, not accepted."""
        inner = Recorder()
        stage = AuthenticateStage(inner, authenticators=[Rejects()], sink=MemorySink())
        result = await call(stage, with_state(http_scope(scope_type="websocket")))
        assert result.messages == [{"type": "websocket.close", "code": 1008}]
        assert not inner.called


class AlreadyAudited:
    name: ClassVar[str] = "audited"

    async def authenticate(self, scope: Scope) -> Identity | None:
        raise AuthenticationFailed("invalid_token", audited=True)


class TestAuditedRejection:
    async def test_no_second_event(self) -> None:
        """An authenticator that audited its rejection itself gets no second event."""
        sink = MemorySink()
        stage = AuthenticateStage(Recorder(), authenticators=[AlreadyAudited()], sink=sink)
        result = await call(stage, with_state(http_scope()))
        assert result.status == 401
        assert sink.events == []


class SetsCookies:
    """Asks for Set-Cookie values, then declines (a refused session) or accepts."""

    name: ClassVar[str] = "sets_cookies"

    def __init__(self, *values: bytes, accept: bool = False) -> None:
        self.values = values
        self.accept = accept

    async def authenticate(self, scope: Scope) -> Identity | None:
        for value in self.values:
            add_set_cookie(scope, value)
        return TEACHER if self.accept else None


class TestSetCookies:
    async def test_requested_cookies_reach_the_response(self) -> None:
        """Set-Cookie values an authenticator asked for are on the response."""
        stage = AuthenticateStage(
            Recorder(), authenticators=[SetsCookies(b"a=1", accept=True)], sink=MemorySink()
        )
        result = await call(stage, with_state(http_scope("/")))
        assert result.header_values("set-cookie") == ["a=1"]

    async def test_response_cookie_wins(self) -> None:
        """A refresh of the old session never overrides a cookie the response sets (login)."""
        inner = Recorder(headers=[(b"set-cookie", b"__Host-gw_session=new")])
        asks = SetsCookies(b"__Host-gw_session=old", b"b=2", accept=True)
        stage = AuthenticateStage(inner, authenticators=[asks], sink=MemorySink())
        result = await call(stage, with_state(http_scope("/")))
        assert result.header_values("set-cookie") == ["__Host-gw_session=new", "b=2"]

    async def test_cookies_on_the_rejection(self) -> None:
        """A cookie asked for before another authenticator rejects is on the 401."""
        clears = SetsCookies(b"__Host-gw_session=; Max-Age=0")
        stage = AuthenticateStage(Recorder(), authenticators=[clears, Rejects()], sink=MemorySink())
        result = await call(stage, with_state(http_scope("/")))
        assert result.status == 401
        assert result.header_values("set-cookie") == ["__Host-gw_session=; Max-Age=0"]

    async def test_send_not_wrapped_without_cookies(self) -> None:
        """Without requested cookies the next stage gets the server's send itself."""
        seen: list[object] = []

        async def inner(scope: Scope, receive: object, send: object) -> None:
            seen.append(send)

        async def server_send(message: object) -> None:
            return None

        async def receive() -> dict[str, object]:
            return {"type": "http.request"}

        stage = AuthenticateStage(inner, authenticators=[Accepts()], sink=MemorySink())
        await stage(with_state(http_scope("/")), receive, server_send)
        assert seen == [server_send]
