"""gateway/app.py: the application answers its health check."""

from __future__ import annotations

from starlette.testclient import TestClient

from gateway import create_app


class TestHealth:
    def test_health_answers_ok(self) -> None:
        """GET /_gateway/health is 200 with a JSON status and is never cached."""
        with TestClient(create_app()) as client:
            response = client.get("/_gateway/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert response.headers["cache-control"] == "no-store"

    def test_health_refuses_post(self) -> None:
        """The health check is read-only."""
        with TestClient(create_app()) as client:
            assert client.post("/_gateway/health").status_code == 405
