"""gateway/oidc/_login.py: logout, back-channel logout and revoking a subject's sessions."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import respx

from gateway.oidc import MemoryRevocations, OpenSearchRevocations
from gateway.oidc._revocation_journal import RevocationJournal
from gateway.oidc.errors import RevocationsUnavailable
from tests.gateway.oidc._idp import CLIENT_ID, HOST, ISSUER, FakeIdP, Gateway

BACKCHANNEL = "http://schemas.openid.net/event/backchannel-logout"


@pytest.fixture
def idp(respx_mock: respx.MockRouter) -> FakeIdP:
    return FakeIdP(respx_mock)


@pytest.fixture
async def gw(tmp_path: Path, idp: FakeIdP) -> AsyncIterator[Gateway]:
    gateway = Gateway(tmp_path, clock=idp.clock)
    yield gateway
    await gateway.aclose()


def _logout_token(idp: FakeIdP, **claims: object) -> str:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": "j1",
        "sub": idp.subject,
        "events": {BACKCHANNEL: {}},
    }
    base.update(claims)
    return idp.sign({k: v for k, v in base.items() if v is not None})


def _backchannel(event: dict[str, object]) -> bool:
    labels = event.get("labels")
    return (
        event["event.action"] == "logout"
        and isinstance(labels, dict)
        and labels.get("logout_kind") == "backchannel"
    )


class TestLogout:
    async def test_get_shows_form_only(self, gw: Gateway, idp: FakeIdP) -> None:
        """GET /logout asks for confirmation (a cross-site link cannot log you out)."""
        await gw.login(idp)
        page = await gw.browser.get("/_gateway/logout")
        assert page.status_code == 200
        assert 'method="post"' in page.text
        assert (await gw.browser.get("/home")).status_code == 200

    async def test_logout_revokes_old_cookie(self, gw: Gateway, idp: FakeIdP) -> None:
        """After logout the session is cleared and the old cookie no longer works."""
        await gw.login(idp)
        old = gw.browser.cookies.get("__Host-gw_session")
        response = await gw.browser.post("/_gateway/logout")
        assert response.status_code == 303
        assert any("Max-Age=0" in c for c in response.headers.get_list("set-cookie"))
        replay = gw.client()
        replay.cookies.set("__Host-gw_session", old or "", domain=HOST)
        again = await replay.get("/home")
        assert again.status_code == 303  # anonymous again: sent to log in
        assert "session_revoked" in gw.reasons("session_rejected")
        assert "logout" in gw.sink.actions()
        await replay.aclose()

    async def test_end_session_redirect(self, gw: Gateway, idp: FakeIdP) -> None:
        """With an end_session_endpoint the browser is sent there with client_id."""
        await gw.login(idp)
        response = await gw.browser.post("/_gateway/logout")
        location = response.headers["location"]
        assert location.startswith(f"{ISSUER}/logout?")
        query = parse_qs(urlsplit(location).query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["post_logout_redirect_uri"] == [f"https://{HOST}/"]

    async def test_form_may_be_redirected_to_end_session(self, gw: Gateway, idp: FakeIdP) -> None:
        """The form page's CSP form-action allows the end-session origin (browsers check a
        form's redirects against it), and nothing else besides 'self'."""
        await gw.login(idp)
        page = await gw.browser.get("/_gateway/logout")
        csp = page.headers["content-security-policy"]
        directive = next(d.strip() for d in csp.split(";") if "form-action" in d)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(ISSUER))
        assert directive == f"form-action 'self' {origin}"
        assert "frame-ancestors 'none'" in csp
        assert len(page.headers.get_list("content-security-policy")) == 1

    async def test_form_without_end_session_submits_to_self_only(
        self, tmp_path: Path, idp: FakeIdP
    ) -> None:
        """Without an end-session endpoint the form page keeps form-action 'self'."""
        idp.end_session = False
        gw = Gateway(tmp_path, clock=idp.clock)
        await gw.login(idp)
        page = await gw.browser.get("/_gateway/logout")
        assert "form-action 'self';" in page.headers["content-security-policy"]
        await gw.aclose()

    async def test_no_end_session_goes_home(self, tmp_path: Path, idp: FakeIdP) -> None:
        """Without an end_session_endpoint the browser goes to /."""
        idp.end_session = False
        gw = Gateway(tmp_path, clock=idp.clock)
        await gw.login(idp)
        response = await gw.browser.post("/_gateway/logout")
        assert response.headers["location"] == "/"
        await gw.aclose()


class TestBackchannelLogout:
    async def test_ends_subjects_sessions(self, gw: Gateway, idp: FakeIdP) -> None:
        """A valid logout token ends every earlier session of its subject."""
        await gw.login(idp)
        assert (await gw.browser.get("/home")).status_code == 200
        idp.clock.advance(1)
        other = gw.client()
        response = await other.post(
            "/_gateway/backchannel-logout", data={"logout_token": _logout_token(idp)}
        )
        assert response.status_code == 200
        assert (await gw.browser.get("/home")).status_code == 303
        event = next(e for e in gw.sink.events if _backchannel(e))
        assert event["event.outcome"] == "success"
        assert event["user.id"] == f"{ISSUER}|user-1"
        await other.aclose()

    @pytest.mark.parametrize(
        "claims",
        [
            {"events": None},
            {"events": {"other": {}}},
            {"nonce": "n"},
            {"aud": "someone-else"},
            {"iss": "https://evil.test"},
            {"sub": None},
            {"jti": None},
        ],
    )
    async def test_invalid_logout_token(
        self, gw: Gateway, idp: FakeIdP, claims: dict[str, object]
    ) -> None:
        """A logout token breaking a rule is refused with 400 and audited."""
        await gw.login(idp)
        response = await gw.client().post(
            "/_gateway/backchannel-logout", data={"logout_token": _logout_token(idp, **claims)}
        )
        assert response.status_code == 400
        assert (await gw.browser.get("/home")).status_code == 200
        event = next(e for e in gw.sink.events if _backchannel(e))
        assert event["event.outcome"] == "failure"

    async def test_missing_token(self, gw: Gateway) -> None:
        """No logout_token at all: 400."""
        response = await gw.client().post("/_gateway/backchannel-logout", data={})
        assert response.status_code == 400


class TestRevokeSubject:
    async def test_incident_responder_revokes(self, gw: Gateway, idp: FakeIdP) -> None:
        """An incident responder ends all sessions of a user; the act is audited."""
        await gw.login(idp)
        victim = gw.browser
        idp.subject, idp.claims = "responder", {"roles": ["incident_responder"]}
        responder = gw.client()
        gw.browser = responder
        await gw.login(idp)
        idp.clock.advance(1)
        response = await responder.post(
            "/_gateway/sessions/revoke", json={"user_id": f"{ISSUER}|user-1"}
        )
        assert response.status_code == 200
        assert (await victim.get("/home")).status_code == 303
        assert (await responder.get("/home")).status_code == 200
        event = next(e for e in gw.sink.events if e["event.action"] == "sessions_revoked")
        assert event["user.target.id"] == f"{ISSUER}|user-1"
        assert event["user.id"] == f"{ISSUER}|responder"
        await victim.aclose()

    async def test_other_roles_refused(self, gw: Gateway, idp: FakeIdP) -> None:
        """Without the incident_responder role the API refuses, whatever the policy said."""
        await gw.login(idp)
        response = await gw.browser.post("/_gateway/sessions/revoke", json={"user_id": "a|b"})
        assert response.status_code == 403
        assert "sessions_revoked" not in gw.sink.actions()

    async def test_requires_json(self, gw: Gateway, idp: FakeIdP) -> None:
        """A form post (what a cross-site page could send) is refused."""
        idp.claims = {"roles": ["incident_responder"]}
        await gw.login(idp)
        response = await gw.browser.post("/_gateway/sessions/revoke", data={"user_id": "a|b"})
        assert response.status_code == 400


class FlakyRevocations(MemoryRevocations):
    """Memory revocations whose shared store can be switched away: writes are recorded here
    and then reported unavailable, and an unknown session cannot be vouched for."""

    def __init__(self) -> None:
        super().__init__()
        self.reads_down = False
        self.writes_down = False

    def revoke_session(self, session_id: str, *, until: float) -> None:
        super().revoke_session(session_id, until=until)
        if self.writes_down:
            raise RevocationsUnavailable("store away")

    def revoke_subject(self, user_id: str, *, before: float, until: float) -> None:
        super().revoke_subject(user_id, before=before, until=until)
        if self.writes_down:
            raise RevocationsUnavailable("store away")

    def is_revoked(self, *, session_id: str, user_id: str, issued_at: float) -> bool:
        if super().is_revoked(session_id=session_id, user_id=user_id, issued_at=issued_at):
            return True
        if self.reads_down:
            raise RevocationsUnavailable("store away")
        return False


@pytest.fixture
async def flaky(tmp_path: Path, idp: FakeIdP) -> AsyncIterator[tuple[Gateway, FlakyRevocations]]:
    store = FlakyRevocations()
    gateway = Gateway(tmp_path, clock=idp.clock, revocations=store)
    yield gateway, store
    await gateway.aclose()


class TestRevocationStoreAway:
    async def test_unverifiable_session_gets_503(
        self, flaky: tuple[Gateway, FlakyRevocations], idp: FakeIdP
    ) -> None:
        """A session the record cannot vouch for is answered 503, audited, and neither
        forwarded nor cleared (it may be fine once the store is back)."""
        gw, store = flaky
        await gw.login(idp)
        store.reads_down = True
        response = await gw.browser.get("/home")
        assert response.status_code == 503
        assert "set-cookie" not in response.headers
        assert not gw.upstream.called
        assert "revocation_store_unavailable" in gw.reasons("session_rejected")
        store.reads_down = False
        assert (await gw.browser.get("/home")).status_code == 200

    async def test_logout_still_ends_session_here(
        self, flaky: tuple[Gateway, FlakyRevocations], idp: FakeIdP
    ) -> None:
        """Logout while the store is away clears the cookie, refuses the old one here at once,
        and the event marks the revocation pending for the other instances."""
        gw, store = flaky
        await gw.login(idp)
        old = gw.browser.cookies.get("__Host-gw_session")
        store.writes_down = True
        response = await gw.browser.post("/_gateway/logout")
        assert response.status_code == 303
        event = next(e for e in gw.sink.events if e["event.action"] == "logout")
        assert event["labels"] == {"logout_kind": "user", "revocation": "pending"}
        replay = gw.client()
        replay.cookies.set("__Host-gw_session", old or "", domain=HOST)
        assert (await replay.get("/home")).status_code == 303
        await replay.aclose()

    async def test_backchannel_logout_asks_for_redelivery(
        self, flaky: tuple[Gateway, FlakyRevocations], idp: FakeIdP
    ) -> None:
        """A back-channel logout that cannot reach the shared record answers 503 (the provider
        may send it again) and is audited as a failure."""
        gw, store = flaky
        await gw.login(idp)
        idp.clock.advance(1)
        store.writes_down = True
        other = gw.client()
        response = await other.post(
            "/_gateway/backchannel-logout", data={"logout_token": _logout_token(idp)}
        )
        assert response.status_code == 503
        event = next(e for e in gw.sink.events if _backchannel(e))
        assert event["event.outcome"] == "failure"
        assert event["event.reason"] == "revocation_store_unavailable"
        await other.aclose()

    async def test_revoke_api_reports_outage(
        self, flaky: tuple[Gateway, FlakyRevocations], idp: FakeIdP
    ) -> None:
        """The incident responder's revoke answers 503 when the record is away, audited as a
        failure naming the target."""
        gw, store = flaky
        idp.claims = {"roles": ["incident_responder"]}
        await gw.login(idp)
        idp.clock.advance(1)
        store.writes_down = True
        target = f"{ISSUER}|someone"
        response = await gw.browser.post("/_gateway/sessions/revoke", json={"user_id": target})
        assert response.status_code == 503
        event = next(e for e in gw.sink.events if e["event.action"] == "sessions_revoked")
        assert event["event.outcome"] == "failure"
        assert event["event.reason"] == "revocation_store_unavailable"
        assert event["user.target.id"] == target


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def no_disk(
    tmp_path: Path, idp: FakeIdP
) -> AsyncIterator[tuple[Gateway, OpenSearchRevocations]]:
    """The audit-cluster record with its cluster away and its journal on a full disk (the
    journal's file descriptor points at /dev/full, which answers ENOSPC); sessions it does not
    know revoked are still vouched for (its copy never counts as stale here)."""
    store = OpenSearchRevocations(
        url=_dead_url(),
        timeout=1.0,
        start=False,
        max_staleness=float("inf"),
        journal=RevocationJournal(directory=tmp_path / "revocations"),
    )
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, store._journal._fd)  # type: ignore[union-attr]
    os.close(full)
    gateway = Gateway(tmp_path, clock=idp.clock, revocations=store)
    yield gateway, store
    await gateway.aclose()


class TestJournalUnwritable:
    async def test_revoke_api_fails_closed(
        self, no_disk: tuple[Gateway, OpenSearchRevocations], idp: FakeIdP
    ) -> None:
        """The revoke API answers 503 when the revocation reached neither the journal nor the
        cluster, audited as a failure saying it is not durable."""
        gw, _store = no_disk
        idp.claims = {"roles": ["incident_responder"]}
        await gw.login(idp)
        idp.clock.advance(1)
        target = f"{ISSUER}|someone"
        response = await gw.browser.post("/_gateway/sessions/revoke", json={"user_id": target})
        assert response.status_code == 503
        event = next(e for e in gw.sink.events if e["event.action"] == "sessions_revoked")
        assert event["event.outcome"] == "failure"
        assert event["event.reason"] == "revocation_not_durable"

    async def test_logout_clears_cookie_and_says_not_durable(
        self, no_disk: tuple[Gateway, OpenSearchRevocations], idp: FakeIdP
    ) -> None:
        """Logout still clears the browser's cookie and refuses the old one here; its event
        says the revocation is in memory only, and the failure is counted for the metrics."""
        gw, store = no_disk
        await gw.login(idp)
        old = gw.browser.cookies.get("__Host-gw_session")
        response = await gw.browser.post("/_gateway/logout")
        assert response.status_code == 303
        assert "Max-Age=0" in response.headers["set-cookie"]
        event = next(e for e in gw.sink.events if e["event.action"] == "logout")
        assert event["labels"] == {"logout_kind": "user", "revocation": "not_durable"}
        assert ("gateway_revocation_journal_failures_total", {}, 1.0) in store.samples()
        replay = gw.client()
        replay.cookies.set("__Host-gw_session", old or "", domain=HOST)
        assert (await replay.get("/home")).status_code == 303
        await replay.aclose()

    async def test_backchannel_logout_asks_for_redelivery(
        self, no_disk: tuple[Gateway, OpenSearchRevocations], idp: FakeIdP
    ) -> None:
        """A back-channel logout kept in memory only answers 503 (the provider sends it
        again), audited as a failure saying it is not durable."""
        gw, _store = no_disk
        await gw.login(idp)
        idp.clock.advance(1)
        other = gw.client()
        response = await other.post(
            "/_gateway/backchannel-logout", data={"logout_token": _logout_token(idp)}
        )
        assert response.status_code == 503
        event = next(e for e in gw.sink.events if _backchannel(e))
        assert event["event.reason"] == "revocation_not_durable"
        await other.aclose()
