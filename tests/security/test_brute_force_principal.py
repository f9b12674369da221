"""Brute force keyed on the canonical principal: spellings of one client address (IPv4-mapped
IPv6, addresses of one IPv6 /64) share one counter, and a verified subject failing from many
addresses is blocked as that subject.

The deployment trusts 127.0.0.1 as a proxy, so ``X-Forwarded-For`` names the client (as
behind a real load balancer). Guards CWE-307 (improper restriction of excessive
authentication attempts), in the variants-of-one-principal form of rate-limit bypasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

import devidp._server
from devidp import Person
from devidp._people import by_subject as original
from tests.security._harness import Deployment, deployed, person

FORGED = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZW1vLXBsYXRmb3JtLWFkbWluIn0."
MAX_FAILURES = 3


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    environ = {
        "GATEWAY_SERVER__TRUSTED_PROXIES": "127.0.0.1/32",
        "GATEWAY_THROTTLE__MAX_FAILURES": str(MAX_FAILURES),
    }
    with deployed(tmp_path_factory.mktemp("brute-force-principal"), environ) as running:
        yield running


def _bearer(deployment: Deployment, address: str) -> int:
    with deployment.client() as client:
        response = client.get(
            "/api/me", headers={"Authorization": f"Bearer {FORGED}", "X-Forwarded-For": address}
        )
    return response.status_code


def _login(deployment: Deployment, who: Person, address: str) -> httpx.Response:
    """The whole code flow from ``address``; the callback's response."""
    forwarded = {"X-Forwarded-For": address}
    with deployment.client() as browser:
        to_idp = browser.get("/_gateway/login", params={"next": "/"}, headers=forwarded)
        assert to_idp.status_code == 303, to_idp.text
        chosen = httpx.post(to_idp.headers["location"], data={"person": who.subject})
        assert chosen.status_code == 302, chosen.text
        back = urlsplit(chosen.headers["location"])
        return browser.get(f"{back.path}?{back.query}", headers=forwarded)


class TestAddressVariantsShareACounter:
    @pytest.mark.parametrize(
        ("variants", "other"),
        [
            (["192.0.2.10", "::ffff:192.0.2.10", "::ffff:c000:20a"], "192.0.2.11"),
            (["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"], "2001:db8:1:3::1"),
        ],
        ids=["ipv4-mapped", "ipv6-64"],
    )
    def test_variants_are_one_client(
        self, deployment: Deployment, variants: list[str], other: str
    ) -> None:
        """CWE-307: rejected tokens from spellings of one address (or one IPv6 /64) add up
        and block all of them; another address is not blocked."""
        assert [_bearer(deployment, address) for address in variants] == [401] * MAX_FAILURES
        for address in variants:
            assert _bearer(deployment, address) == 429
        assert _bearer(deployment, other) == 401


class TestSubjectCounter:
    def test_subject_blocked_across_addresses(
        self, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CWE-307: a verified subject whose logins keep failing (here: no role mapping)
        from a new address each time is blocked as that subject: its next login, from yet
        another address and with a valid role again, is a 429; another person is not."""
        teacher = person("teacher")
        unmapped = dataclasses.replace(teacher, roles=("janitor",))

        def janitor(subject: str) -> Person | None:
            return unmapped if subject == teacher.subject else original(subject)

        monkeypatch.setattr(devidp._server, "by_subject", janitor)
        for number in range(MAX_FAILURES):
            failed = _login(deployment, teacher, f"198.51.100.{number + 1}")
            assert failed.status_code == 401, failed.text
        monkeypatch.setattr(devidp._server, "by_subject", original)
        blocked = _login(deployment, teacher, "198.51.100.77")
        assert blocked.status_code == 429, blocked.text
        assert int(blocked.headers["retry-after"]) > 0
        assert _login(deployment, person("student"), "198.51.100.78").status_code == 303
