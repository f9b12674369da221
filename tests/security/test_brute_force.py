"""Brute force: rejected bearer tokens are counted per client IP, and a client cannot reset
its counter by claiming another address.

Runs on its own deployment with the default throttle (``throttle.max_failures``). Guards
CWE-307 (improper restriction of excessive authentication attempts) and CWE-348 (the counter
keyed on a spoofable forwarding header, as in rate-limit bypasses through
``X-Forwarded-For``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security._harness import Deployment, deployed

FORGED = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZW1vLXBsYXRmb3JtLWFkbWluIn0."
SPOOFS = [
    {"X-Forwarded-For": "203.0.113.1"},
    {"X-Real-IP": "203.0.113.2"},
    {"Forwarded": "for=203.0.113.3"},
    {"X-Forwarded-For": "127.0.0.2"},
    {"True-Client-IP": "203.0.113.4", "CF-Connecting-IP": "203.0.113.5"},
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("brute-force")) as running:
        yield running


class TestBearerFailuresAreThrottled:
    """After ``max_failures`` rejected tokens the client IP is blocked."""

    def test_spoofed_addresses_share_the_peers_counter(self, deployment: Deployment) -> None:
        """CWE-307 / CWE-348: failures beyond the limit are 429 with Retry-After, and
        rotating forwarding headers (one new fake address per try) do not reset them."""
        limit = deployment.settings.throttle.max_failures
        statuses = []
        with deployment.client() as client:
            for number in range(limit):
                spoof = {"X-Forwarded-For": f"198.51.100.{number + 1}"}
                response = client.get(
                    "/api/me", headers={"Authorization": f"Bearer {FORGED}", **spoof}
                )
                statuses.append(response.status_code)
            assert set(statuses) <= {401, 429}
            assert statuses[0] == 401
            for spoof in SPOOFS:
                response = client.get(
                    "/api/me", headers={"Authorization": f"Bearer {FORGED}", **spoof}
                )
                assert response.status_code == 429, response.text
                assert int(response.headers["retry-after"]) > 0
