"""The console's routes: navigation from the policy, headers, language, CSRF, error pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from console import CONSOLE_CSP, CONSOLE_PATH, STYLESHEET_PATH
from console._i18n import LANG_COOKIE
from tests.console._support import World, person, world

PAGES = [
    CONSOLE_PATH,
    CONSOLE_PATH + "/audit",
    CONSOLE_PATH + "/holds",
    CONSOLE_PATH + "/sessions",
    CONSOLE_PATH + "/subjects",
    CONSOLE_PATH + "/policies",
    CONSOLE_PATH + "/policies?view=categories",
    CONSOLE_PATH + "/policies?view=lint",
    CONSOLE_PATH + "/policies?view=diff",
    CONSOLE_PATH + "/stats",
]


def nav(page: str) -> list[str]:
    block = page.split('<nav aria-label="', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'href="([^"]+)"', block)


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[World]:
    yield from world(tmp_path, person("school_admin", tenant="school-a", subject="admin-a"))


@pytest.fixture
def reviewer(tmp_path: Path) -> Iterator[World]:
    yield from world(tmp_path, person("compliance_reviewer", subject="cr"))


class TestNavigation:
    def test_responder_sees_the_incident_pages(self, responder: World) -> None:
        """An incident responder's menu: search, holds, sessions, subject export."""
        page = responder.client.get(CONSOLE_PATH).text
        assert nav(page) == [
            CONSOLE_PATH + "/audit",
            CONSOLE_PATH + "/holds",
            CONSOLE_PATH + "/sessions",
            CONSOLE_PATH + "/subjects",
        ]

    def test_officer_has_no_sessions_page(self, officer: World) -> None:
        """A security officer may not revoke sessions, so the menu does not offer it."""
        assert CONSOLE_PATH + "/sessions" not in nav(officer.client.get(CONSOLE_PATH).text)

    def test_school_admin_sees_search_and_export(self, admin: World) -> None:
        """A school admin's menu: search and subject export only."""
        page = admin.client.get(CONSOLE_PATH).text
        assert nav(page) == [CONSOLE_PATH + "/audit", CONSOLE_PATH + "/subjects"]

    def test_reviewer_sees_review_and_statistics(self, reviewer: World) -> None:
        """A compliance reviewer's menu: policy review and statistics."""
        page = reviewer.client.get(CONSOLE_PATH).text
        assert nav(page) == [CONSOLE_PATH + "/policies", CONSOLE_PATH + "/stats"]


class TestHeaders:
    @pytest.mark.parametrize("path", PAGES)
    def test_every_page_has_the_strict_csp(self, responder: World, path: str) -> None:
        """Every page answers 200 with the console's CSP, no-store and framing refused."""
        answer = responder.client.get(path)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-security-policy"] == CONSOLE_CSP
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-frame-options"] == "DENY"

    @pytest.mark.parametrize("path", PAGES)
    def test_no_script_and_no_inline_style(self, responder: World, path: str) -> None:
        """Pages carry no script, no style element, no style attribute, no event handler."""
        body = responder.client.get(path).text.lower()
        assert "<script" not in body
        assert "<style" not in body
        assert " style=" not in body
        assert re.search(r"\son[a-z]+=", body) is None

    def test_csp_allows_no_other_origin(self) -> None:
        """The policy names no origin but the gateway's own ('self' and 'none' only)."""
        sources = {word for part in CONSOLE_CSP.split(";") for word in part.split()[1:]}
        assert sources == {"'self'", "'none'"}

    def test_stylesheet_served_with_etag(self, responder: World) -> None:
        """The stylesheet is CSS from the gateway, cached by ETag."""
        first = responder.client.get(STYLESHEET_PATH)
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/css")
        again = responder.client.get(
            STYLESHEET_PATH, headers={"if-none-match": first.headers["etag"]}
        )
        assert again.status_code == 304


class TestLanguage:
    def test_dutch_by_default(self, responder: World) -> None:
        """Pages are Dutch unless English is chosen."""
        page = responder.client.get(CONSOLE_PATH + "/audit").text
        assert '<html lang="nl">' in page
        assert "Zoeken" in page

    def test_switch_to_english_sticks(self, responder: World) -> None:
        """``?lang=en`` renders English and sets a cookie that keeps it."""
        first = responder.client.get(CONSOLE_PATH + "/audit?lang=en")
        assert '<html lang="en">' in first.text
        assert f"{LANG_COOKIE}=en" in first.headers["set-cookie"]
        assert "Secure" in first.headers["set-cookie"]
        later = responder.client.get(CONSOLE_PATH + "/holds")
        assert '<html lang="en">' in later.text

    def test_switch_link_keeps_the_query(self, responder: World) -> None:
        """The language link returns to the same search."""
        page = responder.client.get(CONSOLE_PATH + "/audit?action=logout").text
        assert "/_gateway/console/audit?action=logout&amp;lang=en" in page


class TestCsrf:
    @pytest.mark.parametrize(
        "path",
        ["/holds/confirm", "/holds", "/holds/abc/release", "/sessions/confirm", "/sessions/revoke"],
    )
    def test_every_form_refuses_a_missing_token(self, responder: World, path: str) -> None:
        """Each state-changing route answers 403 without the token, and changes nothing."""
        answer = responder.client.post(
            CONSOLE_PATH + path,
            data={"incident_id": "INC-1", "reason": "r", "user_ids": "iss|p", "user_id": "iss|p"},
        )
        assert answer.status_code == 403
        assert responder.holds.list() == []
        assert not responder.revocations.is_revoked(session_id="s", user_id="iss|p", issued_at=0)

    def test_wrong_token_refused_and_audited(self, responder: World) -> None:
        """A wrong token is a 403 page and an access_denied event with reason csrf_rejected."""
        answer = responder.client.post(
            CONSOLE_PATH + "/sessions/revoke", data={"csrf_token": "forged", "user_id": "iss|p"}
        )
        assert answer.status_code == 403
        assert "<html" in answer.text
        [event] = responder.emitted("access_denied")
        assert event["event.reason"] == "csrf_rejected"
        assert event["labels"]["csrf"] == "token_invalid"
        assert responder.emitted("sessions_revoked") == []

    def test_json_body_refused(self, responder: World) -> None:
        """Only urlencoded forms are read; JSON (which a page could send cross-site) is 400."""
        answer = responder.client.post(CONSOLE_PATH + "/sessions/revoke", json={"user_id": "iss|p"})
        assert answer.status_code == 400

    def test_forms_carry_the_session_token(self, responder: World) -> None:
        """The hold form's hidden field holds the token of the caller's session."""
        page = responder.client.get(CONSOLE_PATH + "/holds").text
        assert f'name="csrf_token" value="{responder.csrf()}"' in page
