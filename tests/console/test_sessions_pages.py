"""Revoking every session of a person from the console, after a confirmation."""

from __future__ import annotations

import asyncio
import html
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console import CONSOLE_PATH
from console._i18n import LANG_COOKIE, translate
from gateway.oidc import MemoryRevocations, OpenSearchRevocations
from gateway.oidc.errors import RevocationsUnavailable
from tests.console._support import World, person, world

SESSIONS = CONSOLE_PATH + "/sessions"


class TestRevoke:
    def test_confirmation_names_the_person_and_revokes_nothing(self, responder: World) -> None:
        """The confirm step shows whose sessions end and their logins of the last day."""
        responder.add_events({"event.action": "login_success", "user.id": "iss|p"})
        page = responder.client.post(
            SESSIONS + "/confirm", data={"csrf_token": responder.csrf(), "user_id": "iss|p"}
        )
        assert page.status_code == 200
        assert 'id="target">iss|p<' in page.text
        assert not responder.revocations.is_revoked(
            session_id="s", user_id="iss|p", issued_at=time.time() - 1
        )

    def test_revoke_ends_sessions_and_is_audited(self, responder: World) -> None:
        """Revoking makes sessions issued before now invalid and records sessions_revoked."""
        answer = responder.client.post(
            SESSIONS + "/revoke", data={"csrf_token": responder.csrf(), "user_id": "iss|p"}
        )
        assert answer.status_code == 303
        assert responder.revocations.is_revoked(
            session_id="s", user_id="iss|p", issued_at=time.time() - 1
        )
        [event] = responder.emitted("sessions_revoked")
        assert event["user.target.id"] == "iss|p"
        assert event["user.id"] == responder.who.user_id
        assert "iss|p" in responder.client.get(answer.headers["location"]).text

    def test_malformed_user_id_refused(self, responder: World) -> None:
        """A user id without an issuer is a 400 and revokes nothing."""
        answer = responder.client.post(
            SESSIONS + "/confirm", data={"csrf_token": responder.csrf(), "user_id": "just-a-sub"}
        )
        assert answer.status_code == 400
        assert "user_id" in answer.text


class UnreachableRevocations(MemoryRevocations):
    """A revocation store whose writes fail as the OpenSearch store's do in an outage; it
    notes whether each write ran with an event loop running in its thread."""

    def __init__(self) -> None:
        super().__init__()
        self.on_event_loop: list[bool] = []

    def revoke_subject(self, user_id: str, *, before: float, until: float) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.on_event_loop.append(False)
        else:
            self.on_event_loop.append(True)
        raise RevocationsUnavailable("revocation store (OpenSearch): connection refused")


@pytest.fixture
def unreachable(tmp_path: Path) -> Iterator[tuple[World, UnreachableRevocations]]:
    """The console as an incident responder sees it, over a revocation store that is away."""
    store = UnreachableRevocations()
    for made in world(tmp_path, person("incident_responder", subject="ir-1"), revocations=store):
        yield made, store


def _revoke(made: World, user_id: str = "iss|p") -> httpx.Response:
    answer: httpx.Response = made.client.post(
        SESSIONS + "/revoke", data={"csrf_token": made.csrf(), "user_id": user_id}
    )
    return answer


class TestRevokeStoreUnavailable:
    def test_answers_503_saying_not_recorded(
        self, unreachable: tuple[World, UnreachableRevocations]
    ) -> None:
        """A store that cannot record the revocation gives a 503 page (Dutch by default)."""
        made, _ = unreachable
        answer = _revoke(made)
        assert answer.status_code == 503
        assert 'id="revoke-unavailable"' in answer.text
        assert translate("nl", "s_unavailable") in html.unescape(answer.text)
        assert "connection refused" not in answer.text

    def test_page_in_english_when_chosen(
        self, unreachable: tuple[World, UnreachableRevocations]
    ) -> None:
        """With the English language cookie the same page is in English."""
        made, _ = unreachable
        made.client.cookies.set(LANG_COOKIE, "en")
        answer = _revoke(made)
        assert answer.status_code == 503
        assert translate("en", "s_unavailable") in html.unescape(answer.text)

    def test_form_can_be_resubmitted(
        self, unreachable: tuple[World, UnreachableRevocations]
    ) -> None:
        """The page carries the same person and a fresh CSRF token to post again."""
        made, store = unreachable
        answer = _revoke(made, "iss|person-7")
        assert 'id="confirm-revoke"' in answer.text
        assert '<input type="hidden" name="user_id" value="iss|person-7">' in answer.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', answer.text)
        assert token is not None
        again = made.client.post(
            SESSIONS + "/revoke", data={"csrf_token": token.group(1), "user_id": "iss|person-7"}
        )
        assert again.status_code == 503
        assert len(store.on_event_loop) == 2

    def test_failure_is_audited_like_the_revoke_api(
        self, unreachable: tuple[World, UnreachableRevocations]
    ) -> None:
        """One sessions_revoked failure event with the API's reason and status."""
        made, _ = unreachable
        _revoke(made)
        [event] = made.emitted("sessions_revoked")
        assert event["event.outcome"] == "failure"
        assert event["event.reason"] == RevocationsUnavailable.reason
        assert event["event.type"] == ["denied"]
        assert event["event.category"] == ["authentication", "session", "iam"]
        assert event["http.response.status_code"] == 503
        assert event["user.target.id"] == "iss|p"
        assert event["user.id"] == made.who.user_id
        assert "error.message" not in event

    def test_store_called_off_the_event_loop(
        self, unreachable: tuple[World, UnreachableRevocations]
    ) -> None:
        """The store's write runs in a worker thread, never on the event loop."""
        made, store = unreachable
        _revoke(made)
        assert store.on_event_loop == [False]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class TestRevokeOpenSearchDown:
    def test_unreachable_cluster_gives_the_503_page(self, tmp_path: Path) -> None:
        """The real OpenSearch store against a closed port: 503 page and a failure event."""
        store = OpenSearchRevocations(
            url=f"http://127.0.0.1:{_closed_port()}", start=False, timeout=1.0
        )
        try:
            for made in world(
                tmp_path, person("incident_responder", subject="ir-1"), revocations=store
            ):
                answer = _revoke(made)
                assert answer.status_code == 503
                assert 'id="revoke-unavailable"' in answer.text
                [event] = made.emitted("sessions_revoked")
                assert event["event.outcome"] == "failure"
                # Kept for retry on this instance, which already refuses the sessions.
                assert store.pending == 1
                assert store.is_revoked(session_id="s", user_id="iss|p", issued_at=time.time() - 1)
        finally:
            store.close()
