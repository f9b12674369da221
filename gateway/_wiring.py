"""Build the running gateway from settings: components, listeners, demo mode.

Interim wiring while the policy, audit and forwarding work lands (issues #5, #6 and the
forwarding half of #3): the authorizer allows only the public routes, audit events are written
as JSON lines to the ``audit`` logger, and requests that would be forwarded are answered 502.
Each is replaced by the real component as it lands.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from gateway.app import GatewayApp, create_app
from gateway.errors import UpstreamUnavailable
from gateway.https import RedirectApp, RedirectTarget
from gateway.metrics import GatewayMetrics, MetricsApp
from gateway.pages import send_error
from gateway.server import Listener, run
from gateway.settings import Settings, SettingsError, load_settings, with_overrides
from gateway.tls import build_ssl_context, ensure_self_signed
from gateway.types import Decision, Receive, Scope, Send, state

logger = logging.getLogger("gateway")
audit_logger = logging.getLogger("audit")

PUBLIC_GET = ("/", "/activities", "/_gateway/health", "/_gateway/ready")


class PublicRoutesOnly:
    """Interim authorizer: GET/HEAD of the public catalogue and health endpoints, nothing else."""

    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        if method in ("GET", "HEAD") and (
            path in PUBLIC_GET or (path.startswith("/activities/") and path.count("/") == 2)
        ):
            return Decision(allowed=True, reason="allowed", rule="interim_public_routes")
        return Decision(allowed=False, reason="no_matching_rule")


class LogSink:
    """Interim audit sink: one JSON line per event on the ``audit`` logger."""

    def emit(self, event: Mapping[str, Any]) -> None:
        audit_logger.info(json.dumps(dict(event), default=str, sort_keys=True))


async def not_forwarding(scope: Scope, receive: Receive, send: Send) -> None:
    await send_error(
        scope, send, UpstreamUnavailable("forwarding_not_wired"), state(scope).request_id
    )


def build(settings: Settings) -> tuple[GatewayApp, list[Listener]]:
    metrics = GatewayMetrics()
    app = create_app(
        settings,
        authorizer=PublicRoutesOnly(),
        sink=LogSink(),
        forward=not_forwarding,
        metrics=metrics,
    )
    server = settings.server
    listeners = [_main_listener(settings, app)]
    if server.http_port and not server.allow_plain_http:
        redirect = RedirectTarget(
            public_hosts=server.public_hosts, https_port=settings.redirect_port
        )
        listeners.append(
            Listener("http-redirect", RedirectApp(redirect=redirect), server.host, server.http_port)
        )
    if server.metrics_port:
        listeners.append(
            Listener(
                "metrics", MetricsApp(metrics=metrics), server.metrics_host, server.metrics_port
            )
        )
    return app, listeners


def _main_listener(settings: Settings, app: GatewayApp) -> Listener:
    server = settings.server
    cert, key = server.tls_cert_file, server.tls_key_file
    if cert is None or key is None:
        return Listener("http", app, server.host, server.https_port, lifespan=True)
    password = server.tls_key_password.reveal() if server.tls_key_password else None
    build_ssl_context(cert, key, password)  # fail now, with a clear message, not in the loop
    return Listener(
        "https",
        app,
        server.host,
        server.https_port,
        ssl=lambda: build_ssl_context(cert, key, password),
        lifespan=True,
    )


def _start(settings: Settings) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for relaxation in settings.relaxations():
        logger.warning("security relaxed by setting: %s", relaxation)
    try:
        _app, listeners = build(settings)
    except ValueError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2

    def announce() -> None:
        for listener in listeners:
            print(f"gateway {listener.name} listener at {listener.url}", flush=True)
        main = listeners[0]
        print(f"health check: {main.url}/_gateway/health", flush=True)

    run(listeners, graceful_timeout=float(settings.server.graceful_timeout), started=announce)
    return 0


def run_from_settings(config: Path | None) -> int:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        return 2
    return _start(settings)


def run_demo(config: Path | None) -> int:
    """Demo mode: self-signed certificate for localhost, HTTPS 8443, redirect 8080."""
    try:
        settings = load_settings(config, environ={**os.environ, "GATEWAY_DEMO__ENABLED": "true"})
    except SettingsError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        return 2
    hosts = settings.server.public_hosts or ("localhost", "127.0.0.1")
    cert, key = ensure_self_signed(settings.demo.state_dir / "tls", list(hosts))
    settings = with_overrides(
        settings,
        server={
            "host": "127.0.0.1",
            "public_hosts": hosts,
            "tls_cert_file": cert,
            "tls_key_file": key,
        },
    )
    print(f"demo certificate: {cert} (self-signed; your browser will warn)", flush=True)
    return _start(settings)
