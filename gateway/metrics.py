"""Prometheus metrics: requests by route family, decision and status; latency; audit health.

The registry is served on its own listener (localhost by default), never through the proxy.
Labels are bounded: the route family comes from a fixed table, never from the raw path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

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
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being handled.", registry=self.registry
        )

    def count(self, family: str, decision: str, status: int, seconds: float) -> None:
        """One answered request (label children cached: ``labels()`` is slow per call)."""
        key = (family, decision, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self.requests.labels(family, decision, str(status))
            self._request_children[key] = counter
        counter.inc()
        histogram = self._latency_children.get(family)
        if histogram is None:
            histogram = self._latency_children[family] = self.latency.labels(family)
        histogram.observe(seconds)

    def export(self, source: SampleSource) -> None:
        """Export numbers another component keeps (audit pipeline, policy store) at each
        scrape: ``source()`` returns (name, labels, value); names ending in ``_total`` are
        counters, the rest gauges."""
        self.registry.register(_SampleCollector(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)


SampleSource = Callable[[], Iterable[tuple[str, Mapping[str, str], float]]]


class _SampleCollector(Collector):
    def __init__(self, source: SampleSource) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []  # names are only known at collection time

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name, labels, value in self._source():
            family = families.get(name)
            if family is None:
                keys = sorted(labels)
                if name.endswith("_total"):
                    family = CounterMetricFamily(name[: -len("_total")], name, labels=keys)
                else:
                    family = GaugeMetricFamily(name, name, labels=keys)
                families[name] = family
            family.add_metric([labels[key] for key in sorted(labels)], value)
        yield from families.values()


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
            self._metrics.count(family, decision, status or 500, time.perf_counter() - started)


class MetricsApp:
    """The local operations listener: ``/metrics`` (Prometheus) and ``/health`` (liveness, for
    container health checks that cannot pass the host allow-list); 404 for anything else.
    Served with lifespan off (see :mod:`gateway.server`)."""

    def __init__(self, *, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
