"""Prometheus metrics: requests by route family, decision and status; latency; audit health.

The registry is served on its own listener (localhost by default), never through the proxy.
Labels are bounded: the route family comes from a fixed table, never from the raw path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import ClassVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from gateway.types import SCOPE_KEY, ASGIApp, GatewayState, Message, Receive, Scope, Send

#: (prefix, family) in order; the first matching prefix names the family.
DEFAULT_FAMILIES: tuple[tuple[str, str], ...] = (
    ("/_gateway/", "gateway"),
    ("/api/me", "me"),
    ("/api/schools/", "schools"),
    ("/api/providers/", "providers"),
    ("/api/admin/", "admin"),
    ("/activities", "catalogue"),
)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def route_family(path: str | None, families: tuple[tuple[str, str], ...] = DEFAULT_FAMILIES) -> str:
    if path is None:
        return "unparsed"
    if path == "/":
        return "catalogue"
    for prefix, family in families:
        if path.startswith(prefix) or path == prefix.rstrip("/"):
            return family
    return "other"


class GatewayMetrics:
    """The gateway's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route family, policy decision and status code.",
            ["family", "decision", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            ["family"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being handled.", registry=self.registry
        )
        self.policy_reloads = Counter(
            "gateway_policy_reloads",
            "Policy reload attempts by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._audit_gauges: dict[str, Gauge] = {}
        self._audit_source: Callable[[], Mapping[str, float]] | None = None

    def watch_audit(self, source: Callable[[], Mapping[str, float]]) -> None:
        """Export the audit pipeline's numbers (queue depth, spool bytes...) at each scrape."""
        self._audit_source = source

    def render(self) -> bytes:
        if self._audit_source is not None:
            for key, value in self._audit_source().items():
                gauge = self._audit_gauges.get(key)
                if gauge is None:
                    gauge = Gauge(
                        f"gateway_audit_{key}", f"Audit pipeline: {key}.", registry=self.registry
                    )
                    self._audit_gauges[key] = gauge
                gauge.set(value)
        return generate_latest(self.registry)


class MetricsStage:
    """Counts and times every request (outermost stage, so errors are counted too)."""

    name: ClassVar[str] = "metrics"

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self._metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_counting)
        finally:
            self._metrics.in_flight.dec()
            state = scope.get(SCOPE_KEY)
            path = state.path if isinstance(state, GatewayState) else None
            decision = "none"
            if isinstance(state, GatewayState) and state.decision is not None:
                decision = "allowed" if state.decision.allowed else "denied"
            family = route_family(path)
            self._metrics.requests.labels(family, decision, str(status or 500)).inc()
            self._metrics.latency.labels(family).observe(time.perf_counter() - started)


class MetricsApp:
    """The local operations listener: ``/metrics`` (Prometheus) and ``/health`` (liveness, for
    container health checks that cannot pass the host allow-list); 404 for anything else."""

    def __init__(self, *, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, body, content_type = 404, b"", b"text/plain"
        if scope["method"] in ("GET", "HEAD") and scope["path"] == "/metrics":
            status, body, content_type = 200, self._metrics.render(), CONTENT_TYPE_LATEST.encode()
        elif scope["method"] in ("GET", "HEAD") and scope["path"] == "/health":
            status, body, content_type = 200, b'{"status":"ok"}', b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
