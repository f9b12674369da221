"""gateway/app.py: the assembled pipeline, the gateway's own endpoints, errors and lifespan."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import pytest

from audit import AuditUnavailable, MemorySink
from gateway.app import GatewayApp, Lifecycle, ReadinessCheck, create_app
from gateway.settings import Settings, load_settings
from gateway.types import Decision, Receive, Scope, Send
from tests.gateway._asgi import Recorder, call, http_scope


class Policy:
    def __init__(self, allow: bool) -> None:
        self.allow = allow

    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        if self.allow:
            return Decision(allowed=True, reason="allowed", rule="test-allow")
        return Decision(allowed=False, reason="no_matching_rule")


def settings() -> Settings:
    return load_settings(
        environ={
            "GATEWAY_SERVER__PUBLIC_HOSTS": "platform.example.nl",
            "GATEWAY_SERVER__TLS_CERT_FILE": "/nonexistent/cert.pem",
            "GATEWAY_ASSERTION__KEY_FILES": "/nonexistent/assertion.pem",
            "GATEWAY_SERVER__TLS_KEY_FILE": "/nonexistent/key.pem",
        }
    )


def app(
    *,
    allow: bool = True,
    forward: Any = None,
    sink: MemorySink | None = None,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    lifecycle: Lifecycle | None = None,
) -> GatewayApp:
    return create_app(
        settings(),
        authorizer=Policy(allow),
        sink=sink or MemorySink(),
        forward=forward or Recorder(),
        readiness=readiness,
        lifecycle=lifecycle,
    )


class TestPipeline:
    async def test_forwarded_request_passes_every_stage(self) -> None:
        """An allowed request reaches the forwarder with path, identity and decision set."""
        upstream = Recorder()
        result = await call(app(forward=upstream), http_scope("/activities/./7"))
        assert result.status == 200
        state = upstream.state
        assert state.path == "/activities/7"
        assert state.identity is not None and state.identity.is_anonymous
        assert state.decision is not None and state.decision.allowed
        assert result.header("strict-transport-security")

    async def test_stage_order_rejects_bad_host_before_policy(self) -> None:
        """A request for an unknown host is refused before authentication and policy."""
        sink, upstream = MemorySink(), Recorder()
        result = await call(app(sink=sink, forward=upstream), http_scope(host="evil.example"))
        assert result.status == 400
        assert not upstream.called

    async def test_own_endpoints_are_decided_by_policy_too(self) -> None:
        """With a policy that allows nothing, even the health check is refused."""
        result = await call(app(allow=False), http_scope("/_gateway/health"))
        assert result.status == 401

    async def test_unknown_own_endpoint_is_a_generic_404(self) -> None:
        """An unknown /_gateway/ path gets the gateway's 404 page, not the upstream's."""
        upstream = Recorder()
        result = await call(app(forward=upstream), http_scope("/_gateway/nope"))
        assert result.status == 404
        assert not upstream.called
        assert result.header("x-content-type-options") == "nosniff"


class TestOwnEndpoints:
    async def test_health(self) -> None:
        """Health answers ok with the own-page security headers and HSTS."""
        result = await call(app(), http_scope("/_gateway/health"))
        assert result.status == 200
        assert result.body == b'{"status":"ok"}'
        assert "frame-ancestors 'none'" in (result.header("content-security-policy") or "")
        assert result.header("referrer-policy") == "no-referrer"
        assert result.header("strict-transport-security")

    async def test_ready_when_every_check_passes(self) -> None:
        """Ready is 200 when every dependency answers."""

        async def ok() -> bool:
            return True

        result = await call(
            app(readiness={"upstream": ok, "audit": ok}), http_scope("/_gateway/ready")
        )
        assert result.status == 200

    async def test_not_ready_when_a_check_fails_or_raises(self) -> None:
        """Ready is 503, naming the failing check, when one fails or raises."""

        async def ok() -> bool:
            return True

        async def broken() -> bool:
            raise ConnectionError("secret internal address 10.0.0.1")

        result = await call(
            app(readiness={"upstream": ok, "audit": broken}), http_scope("/_gateway/ready")
        )
        assert result.status == 503
        assert b'"audit":false' in result.body
        assert b"10.0.0.1" not in result.body


class TestErrors:
    async def test_unexpected_exception_is_a_generic_500_and_audited(self) -> None:
        """A bug becomes a 500 without detail and a gateway_error event, then is re-raised."""

        async def buggy(scope: Scope, receive: Receive, send: Send) -> None:
            raise RuntimeError("password=hunter2 leaked in an exception")

        sink = MemorySink()
        messages: list[Any] = []

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            messages.append(message)

        with pytest.raises(RuntimeError):
            await app(forward=buggy, sink=sink)(
                http_scope("/x", headers=[("accept", "*/*")]), receive, send
            )
        assert messages[0]["status"] == 500
        assert b"hunter2" not in messages[1]["body"]
        [event] = [e for e in sink.events if e["event.action"] == "gateway_error"]
        assert event["error.type"] == "RuntimeError"
        assert "hunter2" not in repr(event)

    async def test_audit_that_cannot_record_fails_closed(self) -> None:
        """When the audit log refuses an event (block policy), the request gets 503."""

        class FullSink(MemorySink):
            def emit(self, event: Mapping[str, Any]) -> None:
                raise AuditUnavailable("spool full")

        upstream = Recorder()
        gateway = create_app(
            settings(), authorizer=Policy(False), sink=FullSink(), forward=upstream
        )
        result = await call(gateway, http_scope("/api/me"))
        assert result.status == 503
        assert not upstream.called


class TestLifespan:
    async def _lifespan(self, gateway: GatewayApp) -> list[str]:
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> Any:
            return incoming.pop(0)

        async def send(message: Any) -> None:
            sent.append(message["type"])

        await gateway({"type": "lifespan"}, receive, send)
        return sent

    async def test_hooks_run_in_order_and_reverse(self) -> None:
        """Start-up hooks run in order, shutdown hooks in reverse order."""
        ran: list[str] = []

        def hook(name: str) -> Any:
            async def run() -> None:
                ran.append(name)

            return run

        lifecycle = Lifecycle(startup=[hook("a"), hook("b")], shutdown=[hook("x"), hook("y")])
        sent = await self._lifespan(app(lifecycle=lifecycle))
        assert ran == ["a", "b", "y", "x"]
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    async def test_failed_startup_is_reported(self) -> None:
        """A failing start-up hook makes the server refuse to start."""

        async def fail() -> None:
            raise OSError("audit store unreachable")

        sent = await self._lifespan(app(lifecycle=Lifecycle(startup=[fail])))
        assert sent == ["lifespan.startup.failed"]
