"""Sessions and CSRF: the session cookie cannot be forged, fixed, replayed after logout, or
ridden by another site.

Guards CWE-565/CWE-642 (reliance on cookies without validation: tampering), CWE-384 (session
fixation), CWE-613 (insufficient session expiration: replay after logout), CWE-294 (replay of
the OAuth ``state`` and code), CWE-352 (CSRF on logout and session revocation) and CWE-1275 /
CWE-614 (cookie without SameSite / Secure), the classes of oauth2-proxy's and Pomerium's
session and CSRF advisories.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import httpx
import pytest

from tests.security._harness import Deployment, b64url, idp_tokens, person

SESSION = "__Host-gw_session"


def _logged_in(deployment: Deployment, role: str = "student") -> tuple[httpx.Client, str]:
    """A browser (open; the caller closes it) logged in as ``role``, and its cookie value."""
    browser = deployment.client()
    deployment.log_in(browser, person(role))
    value = _session_value(browser)
    assert value
    return browser, value


def _session_value(browser: httpx.Client) -> str | None:
    found = [c.value for c in browser.cookies.jar if c.name == SESSION]
    return found[-1] if found else None


def _me(deployment: Deployment, cookie_value: str, path: str = "/api/me") -> httpx.Response:
    """``path`` from a fresh browser that sends only ``cookie_value`` as its session."""
    with deployment.client() as other:
        return other.get(path, headers={"Cookie": f"{SESSION}={cookie_value}"})


def _tampered(value: str) -> list[str]:
    middle = len(value) // 2
    flipped = value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]
    return [
        flipped,
        value[:-1],
        value[:-8],
        value + "A",
        value + ".",
        value[::-1],
        value.upper(),
        "." + value,
        "",
        "null",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZW1vLXBsYXRmb3JtLWFkbWluIn0.",
        "A" * 4000,
    ]


class TestCookieIntegrity:
    """Only a cookie the gateway issued, unchanged, is a session."""

    def test_the_issued_cookie_works(self, deployment: Deployment) -> None:
        """Baseline for the tampering cases: the untouched cookie is accepted elsewhere."""
        browser, value = _logged_in(deployment)
        browser.close()
        assert _me(deployment, value).status_code == 200

    @pytest.mark.parametrize("case", range(12))
    def test_tampered_cookie_is_no_session(self, deployment: Deployment, case: int) -> None:
        """CWE-565 (cookie tampering): a changed, truncated, extended or forged cookie is a
        401 (never a 500, never a session)."""
        browser, value = _logged_in(deployment)
        browser.close()
        response = _me(deployment, _tampered(value)[case])
        assert response.status_code == 401, response.text

    def test_cookie_attributes(self, deployment: Deployment) -> None:
        """CWE-614 / CWE-1004 / CWE-1275: the session cookie is ``__Host-``, Secure,
        HttpOnly, SameSite Lax or Strict, Path=/ and has no Domain."""
        with deployment.client() as browser:
            to_idp = browser.get("/_gateway/login", params={"next": "/"})
            chosen = httpx.post(
                to_idp.headers["location"], data={"person": person("student").subject}
            )
            back = urlsplit(chosen.headers["location"])
            done = browser.get(f"{back.path}?{back.query}")
        cookies = [v for k, v in done.headers.multi_items() if k == "set-cookie"]
        session = [c for c in cookies if c.startswith(f"{SESSION}=")]
        assert len(session) == 1, cookies
        parsed = SimpleCookie()
        parsed.load(session[0])
        morsel = parsed[SESSION]
        assert morsel["secure"] is True
        assert morsel["httponly"] is True
        assert morsel["samesite"].lower() in ("lax", "strict")
        assert morsel["path"] == "/"
        assert not morsel["domain"]


class TestLogoutAndFixation:
    """Logout ends the session; login always issues a new one."""

    def test_cookie_replayed_after_logout_is_refused(self, deployment: Deployment) -> None:
        """CWE-613 (session replay after logout): the old cookie value is a 401 afterwards,
        from any browser."""
        browser, value = _logged_in(deployment)
        try:
            assert browser.post("/_gateway/logout").status_code == 303
        finally:
            browser.close()
        assert _me(deployment, value).status_code == 401

    def test_get_logout_does_not_end_the_session(self, deployment: Deployment) -> None:
        """CWE-352 (logout CSRF through a link or image): GET only shows a form."""
        browser, value = _logged_in(deployment)
        try:
            page = browser.get("/_gateway/logout")
        finally:
            browser.close()
        assert page.status_code == 200
        assert "<form" in page.text and 'method="post"' in page.text.lower()
        assert _me(deployment, value).status_code == 200

    def test_login_replaces_a_planted_cookie(self, deployment: Deployment) -> None:
        """CWE-384 (session fixation): a cookie planted before login (a valid one of
        another person) is replaced by a new session for the person who logged in."""
        planted_browser, planted = _logged_in(deployment, "teacher")
        planted_browser.close()
        with deployment.client() as browser:
            for cookie in planted_browser.cookies.jar:
                if cookie.name == SESSION:
                    browser.cookies.jar.set_cookie(cookie)
            assert _session_value(browser) == planted
            deployment.log_in(browser, person("student"))
            fresh = _session_value(browser)
            seen = browser.get("/api/me").json()
        assert fresh and fresh != planted
        subjects = [v for k, v in seen["headers"] if k == "x-gateway-subject"]
        assert subjects == [person("student").subject]

    def test_callback_cannot_be_replayed(self, deployment: Deployment) -> None:
        """CWE-294 (replay of state and code): the same callback URL a second time does not
        log anyone in."""
        with deployment.client() as browser:
            to_idp = browser.get("/_gateway/login", params={"next": "/"})
            chosen = httpx.post(
                to_idp.headers["location"], data={"person": person("student").subject}
            )
            back = urlsplit(chosen.headers["location"])
            callback = f"{back.path}?{back.query}"
            assert browser.get(callback).status_code == 303
            login_cookie = next(
                (c.value for c in browser.cookies.jar if c.name == "__Host-gw_login"), None
            )
        with deployment.client() as replay:
            if login_cookie:
                replay.cookies.set("__Host-gw_login", login_cookie, domain="localhost")
            again = replay.get(callback)
        assert again.status_code in (400, 401, 403), again.text
        assert _session_value(replay) is None

    def test_callback_in_another_browser_is_refused(self, deployment: Deployment) -> None:
        """CWE-352 (login CSRF): a callback without the login cookie of the browser that
        started the flow does not create a session."""
        with deployment.client() as victim:
            to_idp = victim.get("/_gateway/login", params={"next": "/"})
        chosen = httpx.post(to_idp.headers["location"], data={"person": person("student").subject})
        back = urlsplit(chosen.headers["location"])
        with deployment.client() as attacker:
            response = attacker.get(f"{back.path}?{back.query}")
            assert response.status_code in (400, 401, 403), response.text
            assert _session_value(attacker) is None


class TestRevocationCSRF:
    """Session revocation accepts only JSON (no cross-site form can send it)."""

    @pytest.mark.parametrize(
        "content_type",
        ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"],
    )
    def test_form_posts_are_refused(self, deployment: Deployment, content_type: str) -> None:
        """CWE-352: an incident responder's browser posting a form (what another site can
        make it do) revokes nothing: 400, and the target's session lives on."""
        target_browser, target_cookie = _logged_in(deployment, "teacher")
        target_browser.close()
        responder, _cookie = _logged_in(deployment, "incident_responder")
        user_id = f"{deployment.idp_url}|{person('teacher').subject}"
        try:
            response = responder.post(
                "/_gateway/sessions/revoke",
                content=f'{{"user_id": "{user_id}"}}'.encode(),
                headers={"Content-Type": content_type, "Origin": "https://evil.example"},
            )
        finally:
            responder.close()
        assert response.status_code == 400, response.text
        teacher_route = "/api/schools/school-a/students"
        assert _me(deployment, target_cookie, teacher_route).status_code == 200

    def test_json_post_does_revoke(self, deployment: Deployment) -> None:
        """Control for the CSRF cases above: the same request as JSON ends the target's
        sessions, so the 400s are the content-type check, not a broken request."""
        target_browser, target_cookie = _logged_in(deployment, "lob_coordinator")
        target_browser.close()
        responder, _cookie = _logged_in(deployment, "incident_responder")
        user_id = f"{deployment.idp_url}|{person('lob_coordinator').subject}"
        try:
            response = responder.post("/_gateway/sessions/revoke", json={"user_id": user_id})
        finally:
            responder.close()
        assert response.status_code in (200, 202, 204), response.text
        route = "/api/schools/school-a/reports"
        assert _me(deployment, target_cookie, route).status_code == 401


def _idp_tokens_in(text: str, issuer: str) -> list[str]:
    """JWTs in ``text`` (also inside base64url blobs) whose ``iss`` is the identity provider."""
    found = []
    candidates = re.findall(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", text)
    for blob in re.findall(r"[A-Za-z0-9_-]{40,}", text):
        with contextlib.suppress(ValueError):
            decoded = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            candidates += re.findall(
                r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
                decoded.decode("latin-1"),
            )
    for token in candidates:
        with contextlib.suppress(ValueError, IndexError):
            body = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if isinstance(claims, dict) and claims.get("iss") == issuer:
                found.append(token)
    return found


class TestNoRawTokens:
    """The IdP's tokens stay inside the gateway."""

    def test_no_idp_token_reaches_the_browser_or_the_upstream(self, deployment: Deployment) -> None:
        """CWE-200 / CWE-312 (tokens exposed in cookies, pages or forwarded headers): no JWT
        issued by the IdP appears in the session cookie, any gateway page, or what the
        upstream receives."""
        seen_text = []
        with deployment.client() as browser:
            to_idp = browser.get("/_gateway/login", params={"next": "/api/me"})
            seen_text.append(str(to_idp.headers))
            chosen = httpx.post(
                to_idp.headers["location"], data={"person": person("student").subject}
            )
            back = urlsplit(chosen.headers["location"])
            done = browser.get(f"{back.path}?{back.query}")
            seen_text += [str(done.headers.multi_items()), done.text]
            for path in ("/api/me", "/_gateway/logout", "/_gateway/health", "/_gateway/ready"):
                page = browser.get(path)
                assert page.status_code == 200, (path, page.text)
                seen_text += [str(page.headers.multi_items()), page.text]
            seen_text += [f"{c.name}={c.value}" for c in browser.cookies.jar]
        assert _session_value(browser) is not None
        assert _idp_tokens_in("\n".join(seen_text), deployment.idp_url) == []

    def test_the_scanner_finds_an_idp_token(self, deployment: Deployment) -> None:
        """Control for the test above: an IdP-issued JWT (plain or base64-wrapped) is found."""
        claims = base64.urlsafe_b64encode(
            json.dumps({"iss": deployment.idp_url, "sub": "x"}).encode()
        ).rstrip(b"=")
        token = f"eyJhbGciOiJSUzI1NiJ9.{claims.decode()}.c2ln"
        wrapped = base64.urlsafe_b64encode(f"junk {token} junk".encode()).decode()
        assert _idp_tokens_in(f"a {token} b", deployment.idp_url) == [token]
        assert _idp_tokens_in(wrapped, deployment.idp_url) == [token]


class TestBackchannelLogoutForgery:
    """Only a logout token the IdP signed for this purpose ends sessions."""

    def _forged(self, deployment: Deployment) -> dict[str, str]:
        claims = {
            "iss": deployment.idp_url,
            "aud": "gateway",
            "sub": person("teacher").subject,
            "iat": int(time.time()),
            "jti": "forged-1",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }
        head_none = b64url(json.dumps({"alg": "none", "typ": "logout+jwt"}).encode())
        body = b64url(json.dumps(claims).encode())
        id_token = idp_tokens(deployment)["id_token"]
        return {
            "alg-none": f"{head_none}.{body}.",
            "id-token": id_token,
            "id-token-payload-swapped": ".".join(
                [id_token.split(".")[0], body, id_token.split(".")[2]]
            ),
            "garbage": "x",
        }

    @pytest.mark.parametrize(
        "name", ["alg-none", "id-token", "id-token-payload-swapped", "garbage"]
    )
    def test_forged_logout_token_ends_nothing(self, deployment: Deployment, name: str) -> None:
        """CWE-352 / CWE-347 (forged back-channel logout): anyone can POST to the endpoint,
        so a token that is unsigned, altered, or an ID token (signed, but no ``events``
        and with a nonce) is a 400 and the teacher's session lives on."""
        browser, cookie = _logged_in(deployment, "teacher")
        browser.close()
        token = self._forged(deployment)[name]
        with deployment.client() as attacker:
            response = attacker.post("/_gateway/backchannel-logout", data={"logout_token": token})
        assert response.status_code == 400, response.text
        route = "/api/schools/school-a/students"
        assert _me(deployment, cookie, route).status_code == 200
