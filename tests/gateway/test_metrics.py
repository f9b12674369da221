"""gateway/metrics.py: bounded labels, counted requests, exported samples."""

from __future__ import annotations

import pytest

from gateway.metrics import GatewayMetrics, MetricsApp, MetricsStage, route_family
from gateway.types import Decision, Receive, Scope, Send
from tests.gateway._asgi import Recorder, call, http_scope, with_state


class TestRouteFamily:
    @pytest.mark.parametrize(
        ("path", "family"),
        [
            ("/", "catalogue"),
            ("/activities/12", "catalogue"),
            ("/api/me/registrations", "me"),
            ("/api/schools/brin-1/students", "schools"),
            ("/api/providers/org/activities", "providers"),
            ("/api/admin/schools", "admin"),
            ("/_gateway/health", "gateway"),
            ("/some/random/path/123", "other"),
            (None, "unparsed"),
        ],
    )
    def test_families_are_a_fixed_set(self, path: str | None, family: str) -> None:
        """Paths map to a small fixed set of labels, never to the raw path."""
        assert route_family(path) == family


class TestMetricsStage:
    async def test_counts_by_family_decision_and_status(self) -> None:
        """A request is counted with its family, decision and status, and timed."""
        metrics = GatewayMetrics()

        class Decided(Recorder):
            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                scope["gateway"].decision = Decision(allowed=False, reason="no_matching_rule")
                await super().__call__(scope, receive, send)

        stage = MetricsStage(Decided(), metrics=metrics)
        await call(stage, with_state(http_scope("/api/me"), path="/api/me"))
        text = metrics.render().decode()
        assert 'gateway_requests_total{decision="denied",family="me",status="200"} 1.0' in text
        assert 'gateway_request_duration_seconds_count{family="me"} 1.0' in text


class TestGatewayMetrics:
    def test_latency_buckets_are_cumulative(self) -> None:
        """Each latency lands in the first bucket whose bound it does not exceed, cumulatively."""
        metrics = GatewayMetrics()
        for seconds in (0.0004, 0.001, 0.003, 20.0):
            metrics.started()
            metrics.count("me", "allowed", 200, seconds)
        text = metrics.render().decode()
        bucket = 'gateway_request_duration_seconds_bucket{family="me",le="%s"} %s'
        assert bucket % ("0.0005", "1.0") in text
        assert bucket % ("0.001", "2.0") in text
        assert bucket % ("0.0025", "2.0") in text
        assert bucket % ("0.005", "3.0") in text
        assert bucket % ("10.0", "3.0") in text
        assert bucket % ("+Inf", "4.0") in text
        assert 'gateway_request_duration_seconds_count{family="me"} 4.0' in text
        assert 'gateway_request_duration_seconds_sum{family="me"} 20.0044' in text

    def test_counts_are_kept_apart_by_label(self) -> None:
        """Requests differing in family, decision or status are separate series."""
        metrics = GatewayMetrics()
        for labels in [("me", "allowed", 200), ("me", "allowed", 200), ("me", "denied", 403)]:
            metrics.started()
            metrics.count(*labels, 0.01)
        text = metrics.render().decode()
        assert 'gateway_requests_total{decision="allowed",family="me",status="200"} 2.0' in text
        assert 'gateway_requests_total{decision="denied",family="me",status="403"} 1.0' in text

    async def test_in_flight_while_answering(self) -> None:
        """A request is in flight from its arrival until its response ends, errors included."""
        metrics = GatewayMetrics()
        seen: list[int] = []

        async def inner(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(metrics.in_flight)
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await call(
                MetricsStage(inner, metrics=metrics),
                with_state(http_scope("/api/me"), path="/api/me"),
            )
        assert seen == [1]
        assert metrics.in_flight == 0
        text = metrics.render().decode()
        assert "gateway_requests_in_flight 0.0" in text
        assert 'gateway_requests_total{decision="none",family="me",status="500"} 1.0' in text


class TestExport:
    def test_samples_become_counters_and_gauges(self) -> None:
        """Exported samples are read at each scrape, counters by their _total suffix."""
        metrics = GatewayMetrics()
        depth = [3.0]
        metrics.export(
            lambda: [
                ("audit_queue_depth", {}, depth[0]),
                ("audit_events_dropped_total", {"category": "errors"}, 2.0),
            ]
        )
        first = metrics.render().decode()
        depth[0] = 7.0
        second = metrics.render().decode()
        assert "# TYPE audit_queue_depth gauge" in first
        assert "audit_queue_depth 3.0" in first
        assert "audit_queue_depth 7.0" in second
        assert "# TYPE audit_events_dropped_total counter" in first
        assert 'audit_events_dropped_total{category="errors"} 2.0' in first


class TestMetricsApp:
    async def test_serves_metrics_and_health_only(self) -> None:
        """The local listener serves /metrics and /health, and nothing else."""
        app = MetricsApp(metrics=GatewayMetrics())
        assert (await call(app, http_scope("/metrics"))).status == 200
        assert (await call(app, http_scope("/health"))).body == b'{"status":"ok"}'
        assert (await call(app, http_scope("/_gateway/health"))).status == 404
