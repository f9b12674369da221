"""Path bypass: the path the policy decides on is the path the upstream receives.

Every payload is sent as raw bytes over TLS to the gateway served by uvicorn as deployed (an
HTTP client would normalise most of them). Each either is rejected with 400, or is decided and
forwarded on one canonical path: a route the policy denies stays denied however it is
spelled, and a forwarded request reaches the upstream with exactly the canonical path.

Guards CWE-22/CWE-23 (path traversal), CWE-177/CWE-174 (improper handling of URL encoding,
double decoding), CWE-176 (overlong UTF-8), CWE-158 (NUL byte), CWE-436 (interpretation
conflict: ``;`` parameters as in Tomcat ``..;/``, backslashes as in IIS), and the normalisation
mismatches of Envoy (CVE-2019-9901, CVE-2021-29492 encoded slashes), Pomerium
(CVE-2021-41230 class) and Traefik (CVE-2024-45410 class).
"""

from __future__ import annotations

import pytest

from tests.security._harness import Deployment, body_json, person

DENIED = "/api/admin/schools"

#: Spellings that try to reach DENIED (anonymous: 401 there) through a public route.
TO_DENIED: list[bytes] = [
    b"/activities/../api/admin/schools",
    b"/activities/./../api/admin/schools",
    b"/activities/..%2fapi/admin/schools",
    b"/activities/..%2Fapi%2Fadmin%2Fschools",
    b"/activities%2f..%2f..%2fapi/admin/schools",
    b"/activities/%2e%2e/api/admin/schools",
    b"/activities/%2E%2E/api/admin/schools",
    b"/activities/.%2e/api/admin/schools",
    b"/activities/%252e%252e/api/admin/schools",
    b"/activities/%252e%252e%252fapi/admin/schools",
    b"/activities/%25%32%65%25%32%65/api/admin/schools",
    b"/activities/..\\api\\admin\\schools",
    b"/activities\\..\\api\\admin\\schools",
    b"/activities/..%5capi/admin/schools",
    b"/activities/..%5Capi%5Cadmin%5Cschools",
    b"/activities/..;/api/admin/schools",
    b"/activities;/../api/admin/schools",
    b"/api/admin/schools;/activities",
    b"/api/admin/schools;.css",
    b"/api/admin/schools%3b/activities",
    b"/api/admin/schools%3f/activities",
    b"/api/admin/schools%23/activities",
    b"/api/admin/schools#/activities",
    b"/activities/%c0%ae%c0%ae/api/admin/schools",
    b"/activities/%e0%80%ae%e0%80%ae/api/admin/schools",
    b"/activities/..%c0%afapi/admin/schools",
    b"/activities/..%c1%9capi/admin/schools",
    b"/activities/%uff0e%uff0e/api/admin/schools",
    b"/api/admin/schools%00/activities",
    b"/activities%00/../api/admin/schools",
    b"/api/admin/schools%0a",
    b"/api/admin/schools%0d%0aX-Injected:%201",
    b"/api/admin/schools%09",
    b"/api/admin/schools%7f",
    b"//api/admin/schools",
    b"///api//admin///schools",
    b"/./api/./admin/./schools",
    b"/api/admin/schools/",
    b"/api/admin/schools/.",
    b"/api/admin/x/../schools",
    b"/api/admin/schools?/activities",
    b"/api/admin/schools?x=/activities",
    b"/API/ADMIN/SCHOOLS",
    b"/Api/Admin/Schools",
    b"/api/admin/SCHOOLS",
    b"/%61pi/admin/schools",
    b"/api/%61dmin/schools",
    b"/api/admin/schoo%6cs",
    b"/%ef%bd%81pi/admin/schools",
    b"/../api/admin/schools",
    b"/activities/../../api/admin/schools",
    b"/%2e%2e/api/admin/schools",
    b"api/admin/schools",
    b"*",
]

#: Spellings of public routes: (raw target, canonical path the upstream must receive, query).
PUBLIC: list[tuple[bytes, str, str]] = [
    (b"/activities", "/activities", ""),
    (b"/api/../activities", "/activities", ""),
    (b"/api/admin/schools/../../../activities", "/activities", ""),
    (b"//activities", "/activities", ""),
    (b"/./activities", "/activities", ""),
    (b"/activities/./act-1", "/activities/act-1", ""),
    (b"/%61ctivities", "/activities", ""),
    (b"/activities/act%2d1", "/activities/act-1", ""),
    (b"/activities?/../api/admin/schools", "/activities", "/../api/admin/schools"),
    (b"/activities?next=/api/admin/schools", "/activities", "next=/api/admin/schools"),
    (b"/activities?a=%2e%2e%2f%2e%2e", "/activities", "a=%2e%2e%2f%2e%2e"),
]


def _denied_or_rejected(status: int, response: bytes) -> None:
    assert status in (400, 401), response[:300]
    assert b'"raw_path"' not in response


class TestDeniedRouteStaysDenied:
    """No spelling of a denied route reaches the upstream."""

    @pytest.mark.parametrize("target", TO_DENIED, ids=lambda t: t.decode("latin-1"))
    def test_anonymous(self, deployment: Deployment, target: bytes) -> None:
        """CWE-22/CWE-177/CWE-436 (Envoy CVE-2019-9901 class): rejected (400) or decided on
        the canonical path and refused (401), never forwarded."""
        status, response = deployment.raw(deployment.raw_get(target))
        _denied_or_rejected(status, response)

    @pytest.mark.parametrize("target", TO_DENIED, ids=lambda t: t.decode("latin-1"))
    def test_logged_in_student(self, deployment: Deployment, target: bytes) -> None:
        """CWE-22/CWE-436: a logged-in student (denied the admin family) is refused with 400
        or 403 for every spelling."""
        cookie = _student_cookie(deployment)
        status, response = deployment.raw(deployment.raw_get(target, cookie=cookie))
        assert status in (400, 403), response[:300]
        assert b'"raw_path"' not in response

    @pytest.mark.parametrize(
        "target",
        [
            b"/activities/..%2f..%2fapi/schools/school-b/students",
            b"/api/schools/school-a/../school-b/students",
            b"/api/schools/school-a/..%2fschool-b/students",
            b"/api/schools/school-a%2f..%2fschool-b/students",
            b"/api/schools/school-a;/../school-b/students",
            b"/api/schools/SCHOOL-B/students",
            b"/api/schools/school-b%00/students",
            b"/api/schools/school-%62/students",
        ],
        ids=lambda t: t.decode("latin-1"),
    )
    def test_teacher_cannot_reach_another_tenant(
        self, deployment: Deployment, target: bytes
    ) -> None:
        """CWE-639 via CWE-22: a school-a teacher never reaches school-b's students by path
        tricks; either 400, 403, or forwarded for school-a only."""
        cookie = _cookie_for(deployment, "teacher")
        status, response = deployment.raw(deployment.raw_get(target, cookie=cookie))
        if status == 200:
            seen = body_json(response)
            assert seen["raw_path"].startswith("/api/schools/school-a/")
        else:
            assert status in (400, 403), response[:300]
            assert b'"raw_path"' not in response


class TestForwardedOnTheCanonicalPath:
    """What is decided is what is forwarded."""

    @pytest.mark.parametrize(("target", "path", "query"), PUBLIC, ids=lambda v: str(v)[:50])
    def test_upstream_receives_the_canonical_path(
        self, deployment: Deployment, target: bytes, path: str, query: str
    ) -> None:
        """CWE-436 (interpretation conflict): the upstream gets exactly the canonical path
        the policy allowed; the query string is passed as received, never decided on."""
        status, response = deployment.raw(deployment.raw_get(target))
        assert status == 200, response[:300]
        seen = body_json(response)
        assert seen["raw_path"] == path
        assert seen["query"] == query

    @pytest.mark.parametrize(
        "target",
        [
            b"https://localhost:{port}/activities",
            b"HTTPS://LOCALHOST:{port}/activities",
            b"https://localhost:{port}/api/../activities",
        ],
    )
    def test_absolute_form_on_our_host_is_canonicalised(
        self, deployment: Deployment, target: bytes
    ) -> None:
        """RFC 9112 §3.2.2 absolute-form: decided and forwarded on the path, not the URL."""
        raw = target.replace(b"{port}", str(deployment.https_port).encode())
        status, response = deployment.raw(deployment.raw_get(raw))
        assert status == 200, response[:300]
        assert body_json(response)["raw_path"] == "/activities"

    @pytest.mark.parametrize(
        "target",
        [
            b"https://localhost:{port}/api/admin/schools",
            b"https://localhost:{port}/activities/../api/admin/schools",
            b"http://localhost:{port}/api/admin/schools",
            b"https://evil.example#@localhost:{port}/activities",
        ],
    )
    def test_absolute_form_cannot_reach_denied_routes(
        self, deployment: Deployment, target: bytes
    ) -> None:
        """CWE-441 (unintended proxy) via absolute-form targets: a denied path stays denied
        (for another host's authority see FINDINGS.md 2)."""
        raw = target.replace(b"{port}", str(deployment.https_port).encode())
        status, response = deployment.raw(deployment.raw_get(raw))
        _denied_or_rejected(status, response)


def _cookie_for(deployment: Deployment, role: str) -> str:
    with deployment.client() as browser:
        deployment.log_in(browser, person(role))
        value = browser.cookies.get("__Host-gw_session")
    assert value
    return f"__Host-gw_session={value}"


_STUDENT: dict[int, str] = {}


def _student_cookie(deployment: Deployment) -> str:
    """One login per deployment for the many student cases."""
    if deployment.https_port not in _STUDENT:
        _STUDENT[deployment.https_port] = _cookie_for(deployment, "student")
    return _STUDENT[deployment.https_port]


class TestAbsoluteForm:
    """Found by this suite, fixed in gateway/server.py and gateway/hosts.py."""

    @pytest.mark.parametrize(
        "target",
        [
            b"https://evil.example/activities",
            b"https://evil.example:{port}/activities",
            b"https://localhost:{port}@evil.example/activities",
        ],
    )
    def test_absolute_form_naming_another_host_is_rejected(
        self, deployment: Deployment, target: bytes
    ) -> None:
        """CWE-441 (unintended proxy) / CWE-436: an absolute-form target naming another host
        is a 400, as gateway/hosts.py documents."""
        raw = target.replace(b"{port}", str(deployment.https_port).encode())
        status, response = deployment.raw(deployment.raw_get(raw))
        assert status == 400, response[:300]
