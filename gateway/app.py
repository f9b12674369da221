"""Assemble the gateway from its stages, once, at start-up.

The order reads top to bottom::

    metrics → errors → https → host → path → authenticate → authorize → dispatch
                                                                  ├─ /_gateway/…: own endpoints
                                                                  └─ everything else: forward

Every request passes every stage, the gateway's own endpoints included: they are decided by
the same policy as the platform's routes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, Router

from audit import AuditSink, AuditUnavailable
from gateway._audit import request_event
from gateway.authn import AuthenticateStage, Authenticator
from gateway.authz import AuthorizeStage, PersonalDataClassifier
from gateway.errors import GatewayError, InternalError, NotFound, ServiceUnavailable
from gateway.hosts import HostStage
from gateway.https import ForwardedResolver, HTTPSStage, RedirectTarget, new_request_id
from gateway.metrics import GatewayMetrics, MetricsStage
from gateway.pages import OWN_PAGE_HEADERS, send_error
from gateway.paths import PathStage
from gateway.settings import Settings
from gateway.types import SCOPE_KEY, ASGIApp, GatewayState, Message, Receive, Scope, Send
from policies import Authorizer

GATEWAY_PREFIX = "/_gateway/"
HEALTH_PATH = "/_gateway/health"
READY_PATH = "/_gateway/ready"
LOGIN_PATH = "/_gateway/login"

ReadinessCheck = Callable[[], Awaitable[bool]]
Hook = Callable[[], Awaitable[None]]

logger = logging.getLogger("gateway")


class ErrorStage:
    """Unexpected exceptions become a generic 500 (then re-raised to be logged); an audit log
    that cannot record becomes a 503 (fail closed)."""

    name: ClassVar[str] = "errors"

    def __init__(self, app: ASGIApp, *, sink: AuditSink) -> None:
        self.app = app
        self._sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.close"):
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except AuditUnavailable:
            logger.error("audit log cannot record; refusing the request (503)")
            await self._answer(scope, send, started, ServiceUnavailable("audit_unavailable"))
        except Exception as exc:
            try:
                self._sink.emit(
                    request_event(
                        scope,
                        action="gateway_error",
                        category=["web"],
                        event_type=["error"],
                        outcome="failure",
                        reason="internal_error",
                        **{"error.type": type(exc).__name__, "http.response.status_code": 500},
                    )
                )
            except AuditUnavailable:
                logger.error("audit log cannot record the gateway error")
            await self._answer(scope, send, started, InternalError())
            raise

    @staticmethod
    async def _answer(scope: Scope, send: Send, started: bool, error: GatewayError) -> None:
        if started:
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1011})
            return
        state = scope.get(SCOPE_KEY)
        request_id = state.request_id if isinstance(state, GatewayState) else new_request_id()
        await send_error(scope, send, error, request_id)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await send_error(scope, send, NotFound(), scope[SCOPE_KEY].request_id)


class OwnEndpoints:
    """The gateway's own endpoints under ``/_gateway/``, routed on the canonical path."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._router = Router(routes=list(routes), default=_not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = scope[SCOPE_KEY]
        routed = dict(scope, path=gateway.path, root_path="")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(k, v) for k, v in OWN_PAGE_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await self._router(routed, receive, send_with_headers)


class Dispatch:
    """After the decision: the gateway's own endpoints, or the platform upstream."""

    name: ClassVar[str] = "dispatch"

    def __init__(self, *, own: ASGIApp, forward: ASGIApp) -> None:
        self._own = own
        self._forward = forward

    @property
    def forward(self) -> ASGIApp:
        """The app requests for the platform go to (the mutate stage, then the forwarder)."""
        return self._forward

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope[SCOPE_KEY].path
        if path.startswith(GATEWAY_PREFIX) or path == GATEWAY_PREFIX.rstrip("/"):
            await self._own(scope, receive, send)
        else:
            await self._forward(scope, receive, send)


@dataclass
class Lifecycle:
    """What runs when the gateway starts and stops (audit pipeline, upstream client...)."""

    startup: list[Hook] = field(default_factory=list)
    shutdown: list[Hook] = field(default_factory=list)


class GatewayApp:
    """The assembled gateway: handles lifespan itself and passes requests to the stages."""

    def __init__(self, pipeline: ASGIApp, *, lifecycle: Lifecycle, metrics: GatewayMetrics) -> None:
        self.pipeline = pipeline
        self.lifecycle = lifecycle
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.pipeline(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for hook in self.lifecycle.startup:
                        await hook()
                except Exception as exc:
                    logger.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for hook in reversed(self.lifecycle.shutdown):
                    try:
                        await hook()
                    except Exception:
                        logger.exception("a shutdown step failed")
                await send({"type": "lifespan.shutdown.complete"})
                return


def health_route() -> Route:
    async def health(_request: Request) -> Response:
        """Liveness: the process runs and its event loop answers."""
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    return Route(HEALTH_PATH, health, methods=["GET", "HEAD"])


def ready_route(checks: Mapping[str, ReadinessCheck]) -> Route:
    async def ready(_request: Request) -> Response:
        """Readiness: every dependency (upstream, audit store) answers."""
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                results[name] = bool(await check())
            except Exception:  # a failing check is "not ready", with the cause logged
                logger.exception("readiness check %s failed", name)
                results[name] = False
        ok = all(results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": results},
            status_code=200 if ok else 503,
            headers={"cache-control": "no-store"},
        )

    return Route(READY_PATH, ready, methods=["GET", "HEAD"])


def create_app(
    settings: Settings,
    *,
    authorizer: Authorizer,
    sink: AuditSink,
    forward: ASGIApp,
    authenticators: Sequence[Authenticator] = (),
    routes: Sequence[BaseRoute] = (),
    readiness: Mapping[str, ReadinessCheck] | None = None,
    personal_data: PersonalDataClassifier | None = None,
    lifecycle: Lifecycle | None = None,
    metrics: GatewayMetrics | None = None,
    login_path: str | None = None,
    before_authenticate: Sequence[Middleware] = (),
) -> GatewayApp:
    """The gateway's ASGI application: every stage configured from ``settings``.

    ``before_authenticate`` are stages placed after the path stage and before authenticate
    (the OIDC session-cookie writer and the bearer-token throttle).
    """
    server = settings.server
    metrics = metrics or GatewayMetrics()
    redirect = RedirectTarget(public_hosts=server.public_hosts, https_port=settings.redirect_port)
    ports = {server.https_port, settings.redirect_port, 443}
    if server.allow_plain_http and server.http_port:
        ports |= {server.http_port, 80}
    own = OwnEndpoints([health_route(), ready_route(readiness or {}), *routes])
    stages: list[Middleware] = [
        Middleware(MetricsStage, metrics=metrics),
        Middleware(ErrorStage, sink=sink),
        Middleware(
            HTTPSStage,
            resolver=ForwardedResolver(trusted_proxies=server.trusted_proxies),
            redirect=redirect,
            hsts_max_age=int(server.hsts_max_age),
            hsts_preload=server.hsts_preload,
            allow_plain_http=server.allow_plain_http,
            max_header_bytes=server.max_header_bytes,
            max_header_count=server.max_header_count,
        ),
        Middleware(HostStage, public_hosts=server.public_hosts, ports=sorted(ports)),
        Middleware(PathStage),
        *before_authenticate,
        Middleware(AuthenticateStage, authenticators=authenticators, sink=sink),
        Middleware(
            AuthorizeStage,
            authorizer=authorizer,
            sink=sink,
            login_path=login_path,
            personal_data=personal_data,
        ),
    ]
    app: ASGIApp = Dispatch(own=own, forward=forward)
    for cls, args, kwargs in reversed(stages):
        app = cls(app, *args, **kwargs)
    return GatewayApp(app, lifecycle=lifecycle or Lifecycle(), metrics=metrics)


__all__ = [
    "GATEWAY_PREFIX",
    "HEALTH_PATH",
    "READY_PATH",
    "Dispatch",
    "ErrorStage",
    "GatewayApp",
    "Lifecycle",
    "OwnEndpoints",
    "create_app",
]
