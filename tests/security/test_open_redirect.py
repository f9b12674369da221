"""Open redirect: after login and logout the browser is only ever sent to this gateway (or to
the identity provider, with a return address on this gateway).

Each ``next`` payload goes through the whole authorization code flow with the dev identity
provider; the final ``Location`` is read the way a browser reads it (tabs and newlines
removed, backslashes as slashes) and must stay on the gateway's origin. Guards CWE-601 (URL
redirection to untrusted site), the class of oauth2-proxy's redirect bypasses
(CVE-2020-5233 ``/\\``, CVE-2020-11053 ``/\\t/``, CVE-2021-21291 subdomain matching),
Authelia's (CVE-2021-32637 class) and CWE-113 (header splitting in ``Location``).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from tests.security._harness import HOST, Deployment, person

EVIL = "evil.example"

#: Our own research list of redirect tricks (port-dependent ones use ``{port}``).
PAYLOADS: list[str] = [
    "/\uff0fevil.example",
    "/\u2215evil.example",
    "//evil.example",
    "//evil.example/",
    "///evil.example",
    "////evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    "/\\\\evil.example",
    "https:evil.example",
    "https:/evil.example",
    "http:evil.example",
    "https://evil.example",
    "http://evil.example",
    "HTTPS://EVIL.EXAMPLE",
    "//evil.example@localhost",
    "https://localhost@evil.example",
    "https://localhost:{port}@evil.example",
    "https://localhost:{port}.evil.example",
    "https://localhost:{port}\\@evil.example",
    "https://evil.example#@localhost:{port}",
    "https://evil.example?@localhost:{port}",
    "\t//evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    " //evil.example",
    "/ /evil.example",
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d%0aLocation:%20https://evil.example",
    "/%0d%0aSet-Cookie:%20x=1",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%2f%2fevil.example",
    "/%5cevil.example",
    "/%5C%5Cevil.example",
    "%5C%5Cevil.example",
    "/%252F%252Fevil.example",
    "%252F%252Fevil.example",
    "/%25252F%25252Fevil.example",
    "/%2525252F%2525252Fevil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "javascript://%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "\uff0f\uff0fevil.example",
    "\u3031evil.example",
    "//evil\u3002example",
    "//\u0435vil.example",
    "%E3%80%B1evil.example",
    "/%EF%BC%8F/evil.example",
    "evil.example",
    ".evil.example",
    "@evil.example",
    "/..//evil.example",
    "/.//evil.example",
    "/%2e%2e//evil.example",
    "/login?next=//evil.example",
    "/#//evil.example",
    "/" + "a" * 3000,
]


def _browser_target(base: str, location: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) a browser would go to for ``location`` on page ``base``."""
    assert "\r" not in location and "\n" not in location
    cleaned = re.sub(r"[\t\r\n]", "", location).strip("\x00 ").replace("\\", "/")
    resolved = urlsplit(urljoin(base + "/", cleaned))
    return resolved.scheme, (resolved.hostname or ""), resolved.port


def _payload(deployment: Deployment, template: str) -> str:
    return template.replace("{port}", str(deployment.https_port))


class TestAfterLogin:
    """The callback's redirect stays on the gateway, whatever ``next`` was."""

    @pytest.mark.parametrize("template", PAYLOADS, ids=lambda p: p[:40])
    def test_next_never_leaves_the_site(self, deployment: Deployment, template: str) -> None:
        """CWE-601 (oauth2-proxy CVE-2020-5233 / CVE-2020-11053 class): after the full login
        flow the browser lands on the gateway's own origin."""
        payload = _payload(deployment, template)
        with deployment.client() as browser:
            location = _final_location(deployment, browser, payload)
        scheme, host, port = _browser_target(deployment.base, location)
        assert (scheme, host, port) == ("https", HOST, deployment.https_port), location
        assert location.startswith("/") and not location.startswith(("//", "/\\"))

    def test_a_safe_relative_next_is_kept(self, deployment: Deployment) -> None:
        """CWE-601: the filter is not a blanket ``/``: a plain relative path survives."""
        with deployment.client() as browser:
            location = _final_location(deployment, browser, "/api/me?tab=registrations")
        assert location == "/api/me?tab=registrations"


def _final_location(deployment: Deployment, browser: httpx.Client, next_path: str) -> str:
    """The callback's ``Location`` after logging in with ``next=next_path``."""
    to_idp = browser.get("/_gateway/login", params={"next": next_path})
    assert to_idp.status_code == 303, to_idp.text
    assert to_idp.headers["location"].startswith(deployment.idp_url)
    chosen = httpx.post(to_idp.headers["location"], data={"person": person("student").subject})
    assert chosen.status_code == 302, chosen.text
    back = urlsplit(chosen.headers["location"])
    assert f"{back.scheme}://{back.netloc}" == deployment.base
    done = browser.get(f"{back.path}?{back.query}")
    assert done.status_code == 303, done.text
    location: str = done.headers["location"]
    return location


class TestAfterLogout:
    """Logout sends the browser home or to the identity provider, never elsewhere."""

    @pytest.mark.parametrize("template", PAYLOADS[:24], ids=lambda p: p[:40])
    def test_logout_ignores_next_and_forwarding_headers(
        self, deployment: Deployment, template: str
    ) -> None:
        """CWE-601 (post-logout redirect): the target is ``/`` or the IdP's end-session
        endpoint with a ``post_logout_redirect_uri`` on the gateway's own origin."""
        payload = _payload(deployment, template)
        with deployment.client() as browser:
            deployment.log_in(browser, person("teacher"))
            response = browser.post(
                "/_gateway/logout",
                params={"next": payload, "post_logout_redirect_uri": payload, "rd": payload},
                headers={
                    "X-Forwarded-Host": EVIL,
                    "Forwarded": f"host={EVIL}",
                    "Referer": f"https://{EVIL}/",
                    "Origin": deployment.base,
                },
            )
        assert response.status_code == 303, response.text
        location = response.headers["location"]
        if location.startswith(deployment.idp_url):
            query = parse_qs(urlsplit(location).query)
            assert query["post_logout_redirect_uri"] == [f"{deployment.base}/"]
        else:
            assert location == "/"


#: Raw request targets for the plain-HTTP listener, which redirects to HTTPS on the same path.
HTTP_LISTENER_TARGETS: list[bytes] = [
    b"//evil.example/",
    b"///evil.example/",
    b"/\\evil.example/",
    b"/%2F%2Fevil.example/",
    b"/%5Cevil.example",
    b"/%0d%0aLocation:%20https://evil.example/",
    b"/%0d%0aSet-Cookie:%20__Host-gw_session=x",
    b"/x?%0d%0aLocation:%20https://evil.example/",
    b"/x?next=//evil.example",
    b"/@evil.example",
    b"/:@evil.example",
    b"https://evil.example/",
]


class TestPlainHTTPRedirect:
    """The HTTP-to-HTTPS redirect keeps the path but never the destination."""

    @pytest.mark.parametrize("target", HTTP_LISTENER_TARGETS, ids=lambda t: t.decode("latin-1"))
    def test_redirect_stays_on_the_configured_origin(
        self, deployment: Deployment, target: bytes
    ) -> None:
        """CWE-601 / CWE-113 (open redirect and header splitting in the HTTPS upgrade): one
        ``Location``, on the configured host and HTTPS port, with no header injected."""
        request = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        status, response = deployment.raw(request, tls=False)
        head = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        locations = [
            line.split(":", 1)[1].strip() for line in head if line.lower().startswith("location:")
        ]
        assert status == 308, response[:300]
        assert len(locations) == 1, head
        assert not [line for line in head if line.lower().startswith("set-cookie:")]
        scheme, host, port = _browser_target("http://localhost", locations[0])
        assert (scheme, host, port) == ("https", HOST, deployment.https_port), locations[0]

    def test_raw_non_ascii_target_is_refused(self, deployment: Deployment) -> None:
        """CWE-601 with Unicode look-alikes (fullwidth solidus as raw UTF-8): the parser
        refuses the request line, so no redirect is built from it."""
        target = b"/\xef\xbc\x8f\xef\xbc\x8fevil.example"
        request = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        status, response = deployment.raw(request, tls=False)
        assert status == 400, response[:300]
        assert b"location:" not in response.lower()


class TestNonAsciiNext:
    """Found by this suite, fixed in gateway/oidc/_redirects.py."""

    @pytest.mark.parametrize("next_path", ["/\uff0fevil.example", "/\u2215x", "/caf\u00e9"])
    def test_non_ascii_next_keeps_the_login(self, deployment: Deployment, next_path: str) -> None:
        """CWE-116 (improper encoding of output) on ``Location``: a non-ASCII ``next`` is
        sent ASCII-encoded, on this site, and the session is set."""
        with deployment.client() as browser:
            location = _final_location(deployment, browser, next_path)
            assert location.isascii()
            assert browser.cookies.get("__Host-gw_session")
        scheme, host, port = _browser_target(deployment.base, location)
        assert (scheme, host, port) == ("https", HOST, deployment.https_port)
