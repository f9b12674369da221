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
