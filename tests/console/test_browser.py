"""The console in a real browser (Playwright driving Debian's Chromium) through the whole
gateway: OIDC login at the dev identity provider, the shipped policy, TLS, the audit pipeline.

What the issue asks to see: a security officer searches and opens an event; an incident
responder places a hold, sees it listed, releases it, and revokes a person's sessions; a school
admin sees only their own tenant's events; a supplier and a student are refused with the 403
page; CSRF without or with a wrong token is refused; the CSP header is on every page and the
pages work under it (no violation reported, the stylesheet applied); the main forms work with
the keyboard alone. Each page is saved as a screenshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from console import CONSOLE_CSP, CONSOLE_PATH
from devidp import PEOPLE, Person
from tests.console._browser import Session, eventually, launch
from tests.security._harness import Deployment, deployed
from tools.ensure_chromium import ChromiumUnavailable, ensure

AUDIT = CONSOLE_PATH + "/audit"


def person(role: str, tenant: str | None = None) -> Person:
    return next(p for p in PEOPLE if p.roles[0] == role and (tenant is None or p.tenant == tenant))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(Path(tmp_path_factory.mktemp("console"))) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        ensure()
    except ChromiumUnavailable as exc:
        pytest.fail(f"the browser tests need Debian's chromium: {exc}")
    with sync_playwright() as playwright:
        launched = launch(playwright.chromium)
        yield launched
        launched.close()


@pytest.fixture
def session(browser: Browser, deployment: Deployment) -> Iterator[Session]:
    made = Session(browser, deployment)
    yield made
    made.close()


def user_id(deployment: Deployment, who: Person) -> str:
    return f"{deployment.idp_url}|{who.subject}"


def log_in_elsewhere(deployment: Deployment, who: Person) -> httpx.Client:
    """Another person's browser (httpx), logged in; their logins land in the audit log."""
    client = deployment.client()
    deployment.log_in(client, who)
    return client


class TestSecurityOfficer:
    def test_search_and_open_an_event(self, session: Session, deployment: Deployment) -> None:
        """Log in, search the logins, open one, pivot to the same person; screenshots."""
        officer = person("security_officer")
        session.log_in(officer)
        page = session.page
        expect(page.locator("h1")).to_have_text("Beveiligingsconsole")
        session.shot("home-security-officer")
        page.get_by_role("link", name="Auditlog doorzoeken").first.click()
        page.select_option("#f-action", "login_success")
        with page.expect_navigation():  # the search page, loaded before anything reloads it
            page.get_by_role("button", name="Zoeken").click()
        me = user_id(deployment, officer)

        def found_my_login() -> bool:
            page.reload()
            return page.locator("table.results tbody tr", has_text=me).count() > 0

        eventually(found_my_login, what="the officer's own login in the search")
        session.shot("audit-search")
        page.locator("table.results tbody tr", has_text=me).first.get_by_role(
            "link", name=re.compile("Gebeurtenis openen")
        ).click()
        expect(page.locator("table.detail")).to_contain_text("login_success")
        session.shot("audit-event")
        page.get_by_role("link", name=re.compile("Zelfde persoon")).first.click()
        expect(page.locator("#total")).to_contain_text("gebeurtenissen gevonden")
        assert page.locator("table.results tbody tr").count() >= 1
        assert session.violations == []

    def test_officer_cannot_place_holds(self, session: Session) -> None:
        """The holds list is there, the forms are not; posting is refused by the policy."""
        session.log_in(person("security_officer"), CONSOLE_PATH + "/holds")
        expect(session.page.locator("#place-hold")).to_have_count(0)
        answer = session.page.request.post(
            CONSOLE_PATH + "/holds", form={"incident_id": "INC-1"}, max_redirects=0
        )
        assert answer.status == 403


class TestIncidentResponder:
    def test_place_see_and_release_a_hold(self, session: Session, deployment: Deployment) -> None:
        """Place a hold after the confirmation with its coverage, find it listed, release it."""
        responder = person("incident_responder")
        session.log_in(responder, CONSOLE_PATH + "/holds")
        page = session.page
        me = user_id(deployment, responder)
        page.fill("#h-incident", "INC-2026-042")
        page.fill("#h-reason", "phishing incident: keep this person's events")
        page.fill("#h-users", me)
        page.check("#h-cat-authentication")
        session.shot("holds-form")
        page.get_by_role("button", name="Verder naar bevestigen").click()
        expect(page.locator("h1")).to_have_text("Hold bevestigen")
        assert int(page.locator("#covered").inner_text()) >= 0
        session.shot("hold-confirm")
        page.get_by_role("button", name="Hold plaatsen").click()
        expect(page.get_by_role("status")).to_have_text("De hold is geplaatst.")
        active = page.locator("#active-holds tbody tr", has_text="INC-2026-042")
        expect(active).to_have_count(1)
        session.shot("holds-list")
        active.get_by_label("Reden van vrijgeven").fill("incident closed")
        active.get_by_role("button", name="Vrijgeven").click()
        expect(page.get_by_role("status")).to_have_text("De hold is vrijgegeven.")
        expect(page.locator("#released-holds tbody tr", has_text="INC-2026-042")).to_contain_text(
            "incident closed"
        )
        session.shot("holds-released")
        assert session.violations == []

    def test_revoke_all_sessions_of_a_person(
        self, session: Session, deployment: Deployment
    ) -> None:
        """After the confirmation, the pupil's logged-in browser is logged out."""
        pupil = person("student", "school-a")
        other = log_in_elsewhere(deployment, pupil)
        assert other.get("/api/me").status_code == 200
        session.log_in(person("incident_responder"), CONSOLE_PATH + "/sessions")
        page = session.page
        page.fill("#s-user", user_id(deployment, pupil))
        page.get_by_role("button", name="Verder naar bevestigen").click()
        expect(page.locator("#target")).to_have_text(user_id(deployment, pupil))
        session.shot("sessions-confirm")
        page.get_by_role("button", name="Alle sessies beëindigen").click()
        expect(page.get_by_role("status")).to_contain_text(user_id(deployment, pupil))
        session.shot("sessions-revoked")
        assert other.get("/api/me", headers={"accept": "application/json"}).status_code == 401
        other.close()


class TestSchoolAdmin:
    def test_sees_only_own_tenant(self, session: Session, deployment: Deployment) -> None:
        """Logins of pupils of school A and B exist; the school A admin sees only A's."""
        for pupil in (person("student", "school-a"), person("student", "school-b")):
            log_in_elsewhere(deployment, pupil).close()
        admin = person("school_admin", "school-a")
        session.log_in(admin, AUDIT + "?action=login_success")
        page = session.page
        pupil_a = user_id(deployment, person("student", "school-a"))

        def found_pupil_a() -> bool:
            page.reload()
            return page.locator("table.results tbody tr", has_text=pupil_a).count() > 0

        eventually(found_pupil_a, what="school A's pupil login in the admin's search")
        tenants = page.locator("table.results tbody tr td:nth-child(5)").all_inner_texts()
        assert tenants and set(tenants) == {"school-a"}
        assert user_id(deployment, person("student", "school-b")) not in page.content()
        session.shot("audit-search-school-admin")
        refused = page.goto(AUDIT + "?tenant=school-b")
        assert refused is not None and refused.status == 403


class TestRefused:
    @pytest.mark.parametrize("role", ["supplier", "student"])
    def test_refused_with_the_403_page(self, session: Session, role: str) -> None:
        """A supplier or a student reaching the console gets the gateway's 403 page."""
        session.log_in(person(role), "/activities")
        answer = session.page.goto(CONSOLE_PATH)
        assert answer is not None and answer.status == 403
        expect(session.page.locator("h1")).to_have_text("Geen toegang")
        session.shot(f"refused-{role}")


class TestCsrf:
    @pytest.mark.parametrize("token", [None, "forged-token"])
    def test_post_without_the_right_token_refused(
        self, session: Session, deployment: Deployment, token: str | None
    ) -> None:
        """With the responder's own session cookie, a post without (or with a wrong) token
        is a 403 and revokes nothing."""
        pupil = person("student", "school-b")
        other = log_in_elsewhere(deployment, pupil)
        session.log_in(person("incident_responder"))
        form: dict[str, str | float | bool] = {"user_id": user_id(deployment, pupil)}
        if token is not None:
            form["csrf_token"] = token
        answer = session.page.request.post(
            CONSOLE_PATH + "/sessions/revoke", form=form, max_redirects=0
        )
        assert answer.status == 403
        assert "kwam niet van deze console" in answer.text()
        assert other.get("/api/me").status_code == 200
        other.close()


class TestCsp:
    def test_every_page_has_the_csp_and_works_under_it(self, session: Session) -> None:
        """Each page of the responder's and reviewer's menus carries the CSP, reports no
        violation, and shows the stylesheet applied (so 'self' styles load)."""
        session.log_in(person("incident_responder"))
        paths = [CONSOLE_PATH, AUDIT, CONSOLE_PATH + "/holds", CONSOLE_PATH + "/sessions"]
        paths.append(CONSOLE_PATH + "/subjects")
        for path in paths:
            answer = session.page.goto(path)
            assert answer is not None and answer.status == 200
            assert answer.headers["content-security-policy"] == CONSOLE_CSP
            background = session.page.eval_on_selector(
                "header.top", "e => getComputedStyle(e).backgroundColor"
            )
            assert background == "rgb(242, 244, 247)"
            assert session.page.locator("script").count() == 0
            session.shot("page" + path.replace("/", "-"))
        assert session.violations == []

    def test_reviewer_pages(self, session: Session) -> None:
        """The policy review and statistics pages, with the CSP; screenshots of each."""
        session.log_in(person("compliance_reviewer"))
        for path, name in (
            (CONSOLE_PATH + "/policies", "policies-matrix"),
            (CONSOLE_PATH + "/policies?view=categories", "policies-categories"),
            (CONSOLE_PATH + "/policies?view=lint", "policies-lint"),
            (CONSOLE_PATH + "/policies?view=diff", "policies-diff"),
            (CONSOLE_PATH + "/stats", "statistics"),
        ):
            answer = session.page.goto(path)
            assert answer is not None and answer.status == 200
            assert answer.headers["content-security-policy"] == CONSOLE_CSP
            session.shot(name)
        assert session.violations == []

    def test_english_switch(self, session: Session) -> None:
        """The language link turns the console English, and it stays so."""
        session.log_in(person("security_officer"))
        session.page.get_by_role("link", name="Switch to English").click()
        expect(session.page.locator("h1")).to_have_text("Security console")
        session.page.goto(AUDIT)
        expect(session.page.get_by_role("button", name="Search")).to_be_visible()
        session.shot("audit-search-english")


class TestKeyboard:
    def test_skip_link_first(self, session: Session) -> None:
        """The first Tab reaches the skip link, and it moves focus to the content."""
        session.log_in(person("incident_responder"))
        page = session.page
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"

    def test_place_a_hold_with_the_keyboard_only(self, session: Session) -> None:
        """Tab reaches every field of the hold form in order; typing and Enter submit it."""
        session.log_in(person("incident_responder"), CONSOLE_PATH + "/holds")
        page = session.page
        order: list[str] = []
        for _ in range(200):
            page.keyboard.press("Tab")
            current = page.evaluate("document.activeElement.id")
            if current:
                order.append(current)
            if current == "h-review":
                break
        fields = ["h-incident", "h-reason", "h-users", "h-ips", "h-orgs", "h-since", "h-until"]
        assert [f for f in order if f in fields] == fields
        page.focus("#h-incident")
        page.keyboard.type("INC-KEYS-1")
        page.keyboard.press("Tab")
        page.keyboard.type("typed with the keyboard")
        page.keyboard.press("Tab")
        page.keyboard.type("iss|keyboard")
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.id") == "h-incident"
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Hold bevestigen")
        for _ in range(50):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent") == "Hold plaatsen":
                break
        else:
            pytest.fail("Tab never reached the confirm button")
        page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_have_text("De hold is geplaatst.")
        expect(page.locator("#active-holds")).to_contain_text("INC-KEYS-1")


class TestLogout:
    def test_logout_form_reaches_the_identity_provider(
        self, session: Session, deployment: Deployment
    ) -> None:
        """The gateway's logout form, posted in a real browser, is redirected to the identity
        provider's end-session endpoint (the form page's CSP form-action allows its origin;
        with 'self' alone Chromium stopped on the logout page), and the session is gone."""
        session.log_in(person("security_officer"))
        page = session.page
        page.goto("/_gateway/logout")
        with page.expect_request(re.compile(re.escape(deployment.idp_url) + r"/logout\?")):
            page.get_by_role("button", name="Uitloggen / Log out").click()
        page.wait_for_load_state()
        assert not page.url.startswith(f"{deployment.base}/_gateway/logout"), page.url
        assert not [v for v in session.violations if "form-action" in v], session.violations
        answer = page.request.get("/api/me", headers={"accept": "application/json"})
        assert answer.status == 401
