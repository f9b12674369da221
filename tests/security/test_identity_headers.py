"""Identity headers: a client can never hand the upstream an identity.

Every identity-bearing header a client sends is removed before forwarding, in every spelling a
server behind us could fold into the same name (case, ``_``, ``.``), and when repeated; the
upstream sees exactly one of each of the gateway's own headers, with the gateway's values.
Guards CWE-290 (authentication bypass by spoofing) and CWE-644 (improper neutralisation of
HTTP headers), the class of oauth2-proxy's ``X-Forwarded-*`` and underscore-header bypass
(CVE-2022-41967 / nginx ``underscores_in_headers`` class), Pomerium's JWT-assertion header
spoofing (CVE-2023-33189 class) and Authelia's ``Remote-User`` trust problems.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from devidp import Person
from tests.security._harness import Deployment, person, upstream_headers

#: Identity headers of our gateway and of the gateways whose advisories we learned from.
IDENTITY_NAMES = [
    "X-Gateway-User-Id",
    "X-Gateway-Subject",
    "X-Gateway-Issuer",
    "X-Gateway-Roles",
    "X-Gateway-Tenant",
    "X-Gateway-Auth",
    "X-Gateway-Assertion",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Access-Token",
    "X-Forwarded-For",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Access-Token",
    "X-Pomerium-Jwt-Assertion",
    "X-Pomerium-Claim-Email",
    "Remote-User",
    "X-Remote-User",
    "X-Authenticated-User",
    "X-Webauth-User",
    "X-User",
    "X-User-Id",
    "X-Email",
    "X-Roles",
    "X-Groups",
    "X-Tenant",
    "X-Tenant-Id",
    "X-Userinfo",
    "X-Id-Token",
    "X-Access-Token",
    "X-Jwt-Assertion",
    "X-Ms-Client-Principal",
    "X-Ms-Client-Principal-Name",
    "Oidc-Claim-Sub",
    "X-Real-IP",
    "X-Request-Id",
]


def spellings(name: str) -> list[str]:
    """``name`` as different clients and frameworks might write it."""
    lower = name.lower()
    return sorted(
        {
            name,
            lower,
            name.upper(),
            name.replace("-", "_"),
            lower.replace("-", "_"),
            name.replace("-", "."),
            "".join(c.upper() if i % 2 else c for i, c in enumerate(lower)),
        }
    )


#: Every (spelling, value) pair; each value is unique so any leak is traceable.
VARIANTS: list[tuple[str, str]] = [
    (spelling, f"injected-{index}-{number}")
    for index, name in enumerate(IDENTITY_NAMES)
    for number, spelling in enumerate(spellings(name))
]

#: The gateway's own headers and the ones it sets: exactly one of each must arrive.
OURS = ("x-gateway-auth", "x-gateway-roles", "x-gateway-assertion", "x-forwarded-for")

#: A forwarded route of each family, with who may reach it (None: anonymous).
FAMILIES: list[tuple[str, str | None]] = [
    ("/", None),
    ("/activities", None),
    ("/activities/act-1", None),
    ("/api/me", "student"),
    ("/api/me/registrations", "student"),
    ("/api/schools/school-a/students", "teacher"),
    ("/api/schools/school-a/reports", "lob_coordinator"),
    ("/api/providers/org-techniek/activities", "supplier"),
    ("/api/admin/schools", "platform_staff"),
]


def _fold(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


def _get(browser: httpx.Client, path: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    response = browser.get(path, headers=headers)
    assert response.status_code == 200, response.text
    seen: dict[str, Any] = response.json()
    return seen


def _assert_no_injection(seen: dict[str, Any]) -> None:
    leaked = [(k, v) for k, v in upstream_headers(seen) if "injected-" in v]
    assert leaked == []
    counts: dict[str, int] = {}
    for name, _value in upstream_headers(seen):
        counts[_fold(name)] = counts.get(_fold(name), 0) + 1
    for name in OURS:
        assert counts.get(name) == 1, (name, counts)
    assert counts.get("x-request-id") == 1


def _assert_identity(seen: dict[str, Any], who: Person | None) -> None:
    received = {_fold(k): v for k, v in upstream_headers(seen) if _fold(k).startswith("x-gateway-")}
    if who is None:
        assert received["x-gateway-auth"] == "anonymous"
        assert received["x-gateway-roles"] == "anonymous"
        assert "x-gateway-subject" not in received
        assert "x-gateway-tenant" not in received
        return
    assert received["x-gateway-auth"] == "session"
    assert received["x-gateway-subject"] == who.subject
    assert received["x-gateway-roles"] == ",".join(sorted(who.roles))
    assert received.get("x-gateway-tenant") == who.tenant


#: Injected headers per request in the all-at-once test: below the gateway's default header
#: count limit (100), leaving room for the client's own headers and the session cookie.
BATCH = 80


class TestInjectedIdentityHeaders:
    """Client identity headers never reach the upstream."""

    @pytest.mark.parametrize(("name", "value"), VARIANTS, ids=[n for n, _ in VARIANTS])
    def test_each_spelling_is_removed(self, deployment: Deployment, name: str, value: str) -> None:
        """CWE-290: one injected header, in one spelling, never reaches the upstream."""
        with deployment.client() as browser:
            seen = _get(browser, "/activities", [(name, value)])
        _assert_no_injection(seen)
        _assert_identity(seen, None)

    @pytest.mark.parametrize("name", IDENTITY_NAMES)
    def test_duplicates_are_removed(self, deployment: Deployment, name: str) -> None:
        """CWE-290 (duplicate-header confusion): the header twice, and in two spellings,
        never arrives and never doubles one of ours."""
        headers = [
            (name, "injected-dup-1"),
            (name, "injected-dup-2"),
            (name.lower().replace("-", "_"), "injected-dup-3"),
        ]
        with deployment.client() as browser:
            seen = _get(browser, "/activities", headers)
        _assert_no_injection(seen)

    @pytest.mark.parametrize(("path", "role"), FAMILIES, ids=[p for p, _ in FAMILIES])
    def test_every_route_family_gets_only_the_gateways_identity(
        self, deployment: Deployment, path: str, role: str | None
    ) -> None:
        """CVE-2023-33189 class: with the variants injected many at once (in batches under the
        gateway's header-count limit, above which it answers 431), on each forwarded route
        family, logged in or not, the upstream sees exactly the gateway's identity."""
        who = person(role) if role is not None else None
        with deployment.client() as browser:
            if who is not None:
                deployment.log_in(browser, who)
            for start in range(0, len(VARIANTS), BATCH):
                seen = _get(browser, path, VARIANTS[start : start + BATCH])
                assert seen["raw_path"] == path
                _assert_no_injection(seen)
                _assert_identity(seen, who)

    def test_logged_in_user_cannot_claim_another_identity(self, deployment: Deployment) -> None:
        """CWE-639 (authorization bypass through user-controlled key): a logged-in student
        naming another person and tenant is forwarded as themself."""
        student = person("student")
        claims = [
            ("X-Gateway-Subject", "demo-platform-admin"),
            ("X_Gateway_Subject", "demo-platform-admin"),
            ("X-Gateway-Tenant", "school-b"),
            ("x.gateway.tenant", "school-b"),
            ("X-Gateway-Roles", "platform_admin"),
            ("X-Gateway-User-Id", "other|demo-platform-admin"),
        ]
        with deployment.client() as browser:
            deployment.log_in(browser, student)
            seen = _get(browser, "/api/me", claims)
        _assert_identity(seen, student)
        values = [v for _, v in upstream_headers(seen)]
        assert "demo-platform-admin" not in values
        assert "school-b" not in values


class TestSessionCookieNeverForwarded:
    """The gateway's session cookie stays between the browser and the gateway."""

    @pytest.mark.parametrize(
        "cookie_name", ["__Host-gw_session", "__host-gw_session", "__HOST-GW_SESSION"]
    )
    def test_session_cookie_is_stripped(self, deployment: Deployment, cookie_name: str) -> None:
        """CWE-200 (exposure of sensitive information): the upstream never receives the
        session cookie nor a look-alike in another letter case, while other cookies pass."""
        with deployment.client() as browser:
            deployment.log_in(browser, person("student"))
            session = browser.cookies.get("__Host-gw_session")
        assert session
        with deployment.client() as browser:
            response = browser.get(
                "/api/me",
                headers={
                    "Cookie": f"theme=dark; __Host-gw_session={session}; "
                    f"{cookie_name}=injected-cookie; x=1"
                },
            )
        assert response.status_code == 200, response.text
        cookies = [v for k, v in upstream_headers(response.json()) if k == "cookie"]
        assert cookies == ["theme=dark; x=1"]


AUTHELIA_NAMES = ["Remote-Groups", "Remote-Email", "Remote-Name"]


class TestAutheliaHeaders:
    """Authelia's forward-auth identity headers never reach the upstream."""

    @pytest.mark.parametrize(
        ("name", "value"),
        [(s, f"injected-{s}") for n in AUTHELIA_NAMES for s in spellings(n)],
    )
    def test_remote_family_is_removed(self, deployment: Deployment, name: str, value: str) -> None:
        """CWE-290 (Authelia ``Remote-*`` header trust): a client's ``Remote-Groups``,
        ``Remote-Email`` or ``Remote-Name`` never reaches the upstream, in any spelling."""
        with deployment.client() as browser:
            seen = _get(browser, "/activities", [(name, value), (name, value)])
        _assert_no_injection(seen)


class TestHeaderFlood:
    def test_more_headers_than_the_limit_is_a_431(self, deployment: Deployment) -> None:
        """CWE-770: every variant at once (over 100 header lines) is refused with 431 before
        anything is decided or forwarded."""
        assert len(VARIANTS) > 100
        with deployment.client() as browser:
            response = browser.get("/activities", headers=VARIANTS)
        assert response.status_code == 431
