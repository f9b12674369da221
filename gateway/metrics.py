"""Prometheus metrics: requests by route family, decision and status; latency; audit health.

The registry is served on its own listener (localhost by default), never through the proxy.
Labels are bounded: the route family comes from a fixed table, never from the raw path.
"""

from __future__ import annotations

import itertools
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import ClassVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
#: Route families remembered per canonical path (cleared when full), for paths up to this long.
_FAMILY_CACHE_SIZE = 4096
_MAX_REMEMBERED_PATH = 256
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
    """The gateway's metrics in a registry of their own.

    The per-request figures (requests by family, decision and status; latency by family;
    requests in flight) are plain numbers the event loop's thread adds to, turned into
    Prometheus families only when scraped (:class:`_RequestCollector`): the client library's
    ``Counter``/``Histogram`` take a lock for every increment, which cost several µs per request
    on the hot path. Scrapes are served on the same loop (:class:`MetricsApp`), so the numbers
    are never read halfway through an update.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = _RequestCollector(LATENCY_BUCKETS)
        self.registry.register(self._requests)

    @property
    def in_flight(self) -> int:
        """Requests being handled now."""
        return self._requests.in_flight

    def started(self) -> None:
        """A request arrived (see :meth:`count` for its end)."""
        self._requests.in_flight += 1

    def count(self, family: str, decision: str, status: int, seconds: float) -> None:
        """One answered request, with its latency (call :meth:`started` first)."""
        stats = self._requests
        stats.in_flight -= 1
        key = (family, decision, status)
        counts = stats.counts
        counts[key] = counts.get(key, 0) + 1
        histogram = stats.latency.get(family)
        if histogram is None:
            histogram = stats.latency[family] = [0] * len(stats.bounds) + [0.0]
        histogram[bisect_left(stats.bounds, seconds)] += 1
        histogram[-1] += seconds

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


class _RequestCollector(Collector):
    """Requests by family, decision and status, latency by family, and requests in flight."""

    def __init__(self, buckets: Sequence[float]) -> None:
        #: Upper bounds of the latency buckets, +Inf last.
        self.bounds = (*sorted(buckets), math.inf)
        go_float: Callable[[float], str] = floatToGoString  # untyped in prometheus_client
        self._le = tuple(go_float(bound) for bound in self.bounds)
        self.counts: dict[tuple[str, str, int], int] = {}
        #: family -> per-bucket counts (not cumulative), then the sum of the latencies.
        self.latency: dict[str, list[float]] = {}
        self.in_flight = 0

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        return self._families(counts=list(self.counts.items()), latency=list(self.latency.items()))

    def _families(
        self,
        counts: Sequence[tuple[tuple[str, str, int], int]] = (),
        latency: Sequence[tuple[str, list[float]]] = (),
    ) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gateway_requests",
            "Requests answered, by route family, policy decision and status code.",
            labels=["family", "decision", "status"],
        )
        for (family, decision, status), value in counts:
            requests.add_metric([family, decision, str(status)], value)
        yield requests
        histogram = HistogramMetricFamily(
            "gateway_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            labels=["family"],
        )
        for family, buckets in latency:
            cumulative = list(itertools.accumulate(buckets[:-1]))
            histogram.add_metric(
                [family],
                buckets=list(zip(self._le, cumulative, strict=True)),
                sum_value=buckets[-1],
            )
        yield histogram
        yield GaugeMetricFamily(
            "gateway_requests_in_flight", "Requests being handled.", value=self.in_flight
        )


class MetricsStage:
    """Counts and times every request (outermost stage, so errors are counted too)."""

    name: ClassVar[str] = "metrics"

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self._metrics = metrics
        self._families: dict[str, str] = {}  # canonical path -> route family (bounded)

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

        self._metrics.started()
        try:
            await self.app(scope, receive, send_counting)
        finally:
            state = scope.get(SCOPE_KEY)
            path = state.path if isinstance(state, GatewayState) else None
            decision = "none"
            if isinstance(state, GatewayState) and state.decision is not None:
                decision = "allowed" if state.decision.allowed else "denied"
            family = self._families.get(path) if path is not None else None
            if family is None:
                family = route_family(path)
                if path is not None and len(path) <= _MAX_REMEMBERED_PATH:
                    if len(self._families) >= _FAMILY_CACHE_SIZE:
                        self._families.clear()
                    self._families[path] = family
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
