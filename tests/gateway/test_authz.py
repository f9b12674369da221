"""gateway/authz.py: deny by default, audited denials, 401 or login for anonymous callers."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import parse_qs, urlsplit

import pytest

from audit import MemorySink
from gateway.authz import AuthorizeStage
from gateway.types import ANONYMOUS, Decision, Identity, Scope, StageMissing
from tests.gateway._asgi import Recorder, call, http_scope, with_state

TEACHER = Identity(
    issuer="https://idp.example",
    subject="t1",
    roles=frozenset({"teacher"}),
    tenant="school-a",
    method="session",
)


class FakeAuthorizer:
    """Allows exactly the (method, path) pairs given; records what it was asked."""

    def __init__(self, *allowed: tuple[str, str]) -> None:
        self.allowed = set(allowed)
        self.asked: list[tuple[frozenset[str], str | None, str, str]] = []

    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        self.asked.append((frozenset(roles), tenant, method, path))
        if (method, path) in self.allowed:
            return Decision(allowed=True, reason="allowed", rule="p, teacher, ...")
        return Decision(allowed=False, reason="no_matching_rule")


class Broken:
    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        raise RuntimeError("evaluator bug")


def _scope(
    path: str,
    who: Identity = TEACHER,
    *,
    headers: list[tuple[str, str]] | None = None,
    query: bytes = b"",
) -> Scope:
    return with_state(http_scope(path, headers=headers, query=query), path=path, identity=who)


class TestDecision:
    async def test_allowed_request_passes_with_decision_recorded(self) -> None:
        """An allowed request reaches the next stage with the decision in the state."""
        inner, authorizer = Recorder(), FakeAuthorizer(("GET", "/api/schools/school-a/students"))
        stage = AuthorizeStage(inner, authorizer=authorizer, sink=MemorySink())
        result = await call(stage, _scope("/api/schools/school-a/students"))
        assert result.status == 200
        assert inner.state.decision == Decision(True, "allowed", "p, teacher, ...")
        assert authorizer.asked == [
            (frozenset({"teacher"}), "school-a", "GET", "/api/schools/school-a/students")
        ]

    async def test_decided_on_canonical_path_not_query(self) -> None:
        """The authorizer sees the canonical path only."""
        authorizer = FakeAuthorizer()
        stage = AuthorizeStage(Recorder(), authorizer=authorizer, sink=MemorySink())
        await call(stage, _scope("/activities", query=b"redirect=/api/admin"))
        assert authorizer.asked[0][3] == "/activities"

    async def test_denied_is_403_and_audited(self) -> None:
        """A denial is a generic 403 and an access_denied event with reason and rule."""
        inner, sink = Recorder(), MemorySink()
        stage = AuthorizeStage(inner, authorizer=FakeAuthorizer(), sink=sink)
        result = await call(stage, _scope("/api/schools/school-b/students"))
        assert result.status == 403
        assert not inner.called
        assert b"no_matching_rule" not in result.body
        [event] = sink.events
        assert event["event.action"] == "access_denied"
        assert event["event.reason"] == "no_matching_rule"
        assert event["rule.name"] == "no_matching_rule"
        assert event["user.id"] == "https://idp.example|t1"
        assert event["organization.id"] == "school-a"
        assert event["url.path"] == "/api/schools/school-b/students"
        assert event["http.response.status_code"] == 403

    async def test_evaluator_failure_denies(self) -> None:
        """When the evaluator raises, the request is denied (policy_error), never allowed."""
        inner, sink = Recorder(), MemorySink()
        stage = AuthorizeStage(inner, authorizer=Broken(), sink=sink)
        result = await call(stage, _scope("/activities"))
        assert result.status == 403
        assert sink.events[0]["event.reason"] == "policy_error"

    async def test_missing_identity_raises(self) -> None:
        """Without the authenticate stage the request is never decided as allowed."""
        stage = AuthorizeStage(Recorder(), authorizer=FakeAuthorizer(), sink=MemorySink())
        with pytest.raises(StageMissing):
            await call(stage, with_state(http_scope("/x"), path="/x"))


class TestAnonymous:
    async def test_api_client_gets_401(self) -> None:
        """An anonymous API client is told to authenticate, not redirected."""
        stage = AuthorizeStage(
            Recorder(), authorizer=FakeAuthorizer(), sink=MemorySink(), login_path="/_gateway/login"
        )
        scope = _scope("/api/me", ANONYMOUS, headers=[("accept", "application/json")])
        result = await call(stage, scope)
        assert result.status == 401
        assert result.header("www-authenticate") == 'Bearer realm="gateway"'

    async def test_browser_is_sent_to_login_with_return_path(self) -> None:
        """An anonymous browser GET is sent to the login page with a relative return path."""
        stage = AuthorizeStage(
            Recorder(), authorizer=FakeAuthorizer(), sink=MemorySink(), login_path="/_gateway/login"
        )
        scope = _scope("/api/me", ANONYMOUS, headers=[("accept", "text/html")], query=b"tab=1")
        result = await call(stage, scope)
        assert result.status == 303
        location = urlsplit(result.header("location") or "")
        assert location.path == "/_gateway/login"
        assert parse_qs(location.query) == {"next": ["/api/me?tab=1"]}


class TestPersonalData:
    async def test_access_to_others_personal_data_is_recorded(self) -> None:
        """An allowed read of a route tagged with others' personal data is an audit event."""
        sink = MemorySink()
        stage = AuthorizeStage(
            Recorder(),
            authorizer=FakeAuthorizer(
                ("GET", "/api/schools/school-a/students"), ("GET", "/activities")
            ),
            sink=sink,
            personal_data=lambda method, path: (
                {"audit.data_categories": ["a", "b"]} if "students" in path else None
            ),
        )
        await call(stage, _scope("/api/schools/school-a/students"))
        await call(stage, _scope("/activities"))
        [event] = sink.events
        assert event["event.action"] == "personal_data_access"
        assert event["audit.data_categories"] == ["a", "b"]
        assert event["rule.name"] == "p, teacher, ..."
