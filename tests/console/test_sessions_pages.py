"""Revoking every session of a person from the console, after a confirmation."""

from __future__ import annotations

import time

from console import CONSOLE_PATH
from tests.console._support import World

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
