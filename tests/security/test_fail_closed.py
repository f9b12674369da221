"""Fail closed: when the identity provider or the upstream cannot be reached, nothing is let
through unchecked and nothing pretends to work.

Each case runs a deployment whose IdP or upstream port is bound but not listening (connections
refused). Guards CWE-636 (not failing securely), CWE-755 (improper handling of exceptional
conditions) and the class of gateway advisories where an unreachable JWKS or IdP downgraded
authentication to "allow".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security._harness import Deployment, deployed

#: An RS256-looking token whose key the gateway must fetch from the (unreachable) IdP.
UNVERIFIABLE = "eyJhbGciOiJSUzI1NiIsImtpZCI6InVua25vd24ifQ.eyJzdWIiOiJkZW1vLWFkbWluIn0.c2ln"


@pytest.fixture(scope="module")
def idp_down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("idp-down"), idp_up=False) as running:
        yield running


@pytest.fixture(scope="module")
def upstream_down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("upstream-down"), upstream_up=False) as running:
        yield running


class TestIdentityProviderUnreachable:
    """No IdP: no login, no bearer identity; public routes keep working anonymously."""

    def test_login_is_an_error_not_a_redirect(self, idp_down: Deployment) -> None:
        """CWE-636: login answers 5xx with an error page, sets no session, and redirects
        nowhere."""
        with idp_down.client() as browser:
            response = browser.get("/_gateway/login", params={"next": "/"})
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "login_unavailable"
            assert "location" not in response.headers
            assert not [c for c in browser.cookies.jar if c.name == "__Host-gw_session"]

    @pytest.mark.parametrize("path", ["/api/me", "/activities", "/api/admin/schools"])
    def test_unverifiable_bearer_token_is_refused(self, idp_down: Deployment, path: str) -> None:
        """CWE-636 (JWKS unreachable): a token whose key cannot be fetched is refused (401
        or 503), never accepted or downgraded to anonymous."""
        with idp_down.client() as client:
            response = client.get(path, headers={"Authorization": f"Bearer {UNVERIFIABLE}"})
        assert response.status_code in (401, 503), response.text
        assert "raw_path" not in response.text

    def test_protected_route_stays_protected(self, idp_down: Deployment) -> None:
        """CWE-636: without a session a protected route is still a 401."""
        with idp_down.client() as client:
            assert client.get("/api/me").status_code == 401


class TestUpstreamUnreachable:
    """No upstream: a clear 502, and decisions are still made first."""

    def test_public_route_is_a_502_error_page(self, upstream_down: Deployment) -> None:
        """CWE-755: an allowed request the upstream cannot take is a 502 with the gateway's
        error body (and HSTS), not a hang or a 500 with a trace."""
        with upstream_down.client() as client:
            response = client.get("/activities")
        assert response.status_code == 502, response.text
        assert response.json()["error"] == "upstream_unavailable"
        assert "Traceback" not in response.text
        assert response.headers["strict-transport-security"].startswith("max-age=")

    def test_denied_route_is_still_denied(self, upstream_down: Deployment) -> None:
        """CWE-636: authorization comes before forwarding: a denied request is a 401, not a
        502 that would reveal the route is routable."""
        with upstream_down.client() as client:
            assert client.get("/api/admin/schools").status_code == 401

    def test_readiness_reports_not_ready(self, upstream_down: Deployment) -> None:
        """CWE-636: the readiness probe says not ready, so a load balancer stops sending."""
        with upstream_down.client() as client:
            response = client.get("/_gateway/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["upstream"] is False
