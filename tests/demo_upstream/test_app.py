"""demo_upstream: the reference route map, the identity echo and the assertion check."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from demo_upstream import AssertionChecker, create_app
from gateway.assertion import AssertionSigner, generate_key
from gateway.types import Identity
from tests.gateway._gateway import gateway_app
from tests.gateway._servers import REPO, free_port, serve_thread

ISS = "https://gateway.example"
AUD = "platform"
SIGNER = AssertionSigner(keys=[generate_key()], issuer=ISS, audience=AUD)
STUDENT = Identity(
    issuer="https://idp.example",
    subject="s-1",
    roles=frozenset({"student"}),
    tenant="school-a",
    method="session",
)

ROUTES = [
    ("GET", "/", 200),
    ("GET", "/activities", 200),
    ("GET", "/activities/act-1", 200),
    ("GET", "/activities/nope", 404),
    ("GET", "/api/me", 200),
    ("PUT", "/api/me", 200),
    ("GET", "/api/me/registrations", 200),
    ("POST", "/api/me/registrations", 201),
    ("GET", "/api/me/registrations/reg-1", 200),
    ("DELETE", "/api/me/registrations/reg-1", 200),
    ("GET", "/api/schools/school-a/students", 200),
    ("GET", "/api/schools/school-a/students/stu-1", 200),
    ("GET", "/api/schools/school-a/students/stu-3", 404),
    ("GET", "/api/schools/school-a/registrations", 200),
    ("POST", "/api/schools/school-a/registrations/reg-9", 201),
    ("PUT", "/api/schools/school-a/registrations/reg-2", 200),
    ("DELETE", "/api/schools/school-a/registrations/reg-2", 200),
    ("GET", "/api/schools/school-a/reports", 200),
    ("GET", "/api/providers/org-techniek/activities", 200),
    ("POST", "/api/providers/org-techniek/activities", 201),
    ("PUT", "/api/providers/org-techniek/activities/act-1", 200),
    ("DELETE", "/api/providers/org-techniek/activities/act-2", 200),
    ("GET", "/api/providers/org-techniek/activities/act-1/registrations", 200),
    ("GET", "/api/admin/schools", 200),
    ("POST", "/api/admin/schools", 201),
    ("GET", "/api/admin/providers", 200),
    ("POST", "/api/admin/providers", 201),
    ("POST", "/api/admin/newsletters", 202),
]

BODIES: dict[str, dict[str, Any]] = {
    "/api/me/registrations": {"activity": "act-2"},
    "/api/schools/school-a/registrations/reg-9": {"student": "stu-2", "activity": "act-1"},
}


class TestRouteMap:
    @pytest.mark.parametrize(("method", "path", "status"), ROUTES)
    def test_route(self, method: str, path: str, status: int) -> None:
        """Every route of the reference map answers with JSON and the expected status."""
        with TestClient(create_app()) as client:
            response = client.request(
                method, path, json=BODIES.get(path, {}), headers={"x-gateway-subject": "s-1"}
            )
        assert response.status_code == status
        assert "data" in response.json()

    def test_unknown_method_refused(self) -> None:
        """A method the route map does not list is 405."""
        with TestClient(create_app()) as client:
            assert client.delete("/activities").status_code == 405

    def test_supplier_sees_only_own_activities(self) -> None:
        """A supplier's activity list holds only its own activities."""
        with TestClient(create_app()) as client:
            data = client.get("/api/providers/org-zorg/activities").json()["data"]
        assert {a["provider"] for a in data} == {"org-zorg"}


class TestIdentityEcho:
    def test_echoes_gateway_headers_not_the_assertion(self) -> None:
        """Identity and forwarding headers are echoed; the assertion is only reported on."""
        with TestClient(create_app()) as client:
            body = client.get(
                "/", headers={"x-gateway-roles": "student", "x-gateway-assertion": "abc"}
            ).json()
        assert body["_gateway"]["headers"] == {"x-gateway-roles": "student"}
        assert body["_gateway"]["assertion"] == {
            "present": True,
            "valid": None,
            "error": "no JWKS configured",
        }

    def test_valid_assertion(self) -> None:
        """An assertion signed by the gateway verifies against its JWKS."""
        checker = AssertionChecker(issuer=ISS, audience=AUD, jwks=SIGNER.jwks())
        with TestClient(create_app(checker=checker)) as client:
            body = client.get("/", headers={"x-gateway-assertion": SIGNER.sign(STUDENT)}).json()
        assert body["_gateway"]["assertion"]["valid"] is True
        assert body["_gateway"]["assertion"]["claims"]["sub"] == "https://idp.example|s-1"

    def test_foreign_assertion_invalid(self) -> None:
        """An assertion signed by another key is reported invalid."""
        other = AssertionSigner(keys=[generate_key()], issuer=ISS, audience=AUD)
        checker = AssertionChecker(issuer=ISS, audience=AUD, jwks=SIGNER.jwks())
        with TestClient(create_app(checker=checker)) as client:
            body = client.get("/", headers={"x-gateway-assertion": other.sign(STUDENT)}).json()
        assert body["_gateway"]["assertion"]["valid"] is False

    def test_wrong_audience_invalid(self) -> None:
        """An assertion for another audience is reported invalid."""
        checker = AssertionChecker(issuer=ISS, audience="other", jwks=SIGNER.jwks())
        with TestClient(create_app(checker=checker)) as client:
            body = client.get("/", headers={"x-gateway-assertion": SIGNER.sign(STUDENT)}).json()
        assert body["_gateway"]["assertion"] == {
            "present": True,
            "valid": False,
            "error": "InvalidClaimError",
        }

    async def test_jwks_from_url(self) -> None:
        """The JWKS can be fetched from the gateway's URL."""

        async def jwks(_request: object) -> Response:
            return Response(SIGNER.jwks_json(), media_type="application/json")

        with serve_thread(Starlette(routes=[Route("/_gateway/jwks.json", jwks)])) as url:
            checker = AssertionChecker(
                issuer=ISS, audience=AUD, jwks_url=url + "/_gateway/jwks.json"
            )
            result = await checker.check(SIGNER.sign(STUDENT))
        assert result["valid"] is True

    def test_exactly_one_key_source(self) -> None:
        """The checker needs one JWKS source, not none and not two."""
        with pytest.raises(ValueError, match="exactly one"):
            AssertionChecker(issuer=ISS, audience=AUD)
        with pytest.raises(ValueError, match="exactly one"):
            AssertionChecker(issuer=ISS, audience=AUD, jwks={}, jwks_url="http://127.0.0.1/")


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    checker = AssertionChecker(issuer=ISS, audience=AUD, jwks=SIGNER.jwks())
    with serve_thread(create_app(checker=checker)) as url:
        yield url


class TestBehindTheGateway:
    def test_spoofed_identity_not_seen_and_assertion_valid(self, demo_url: str) -> None:
        """Through forward + mutate, the demo sees our identity only and a valid assertion."""
        app = gateway_app(demo_url, who=STUDENT, signer=SIGNER)
        with (
            serve_thread(app, lifespan="on") as url,
            httpx.Client(base_url=url) as client,
        ):
            body = client.get(
                "/api/me", headers={"X_Gateway_Subject": "admin", "X-Auth-User": "admin"}
            ).json()
        seen = body["_gateway"]
        assert seen["headers"]["x-gateway-subject"] == "s-1"
        assert "admin" not in str(seen["headers"])
        assert seen["assertion"]["valid"] is True
        assert body["data"]["id"] == "stu-1"


class TestCommandLine:
    def test_python_m_demo_upstream(self) -> None:
        """``python -m demo_upstream --port N`` serves the route map."""
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "demo_upstream", "--port", str(port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/activities", timeout=2)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=10)
        assert response.status_code == 200
        assert len(response.json()["data"]) == 3
