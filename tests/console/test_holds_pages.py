"""Holds in the console: list, place after a confirmation with the coverage, release."""

from __future__ import annotations

import re
from typing import Any

from console import CONSOLE_PATH
from tests.console._support import World

HOLDS = CONSOLE_PATH + "/holds"


def form(world: World, **fields: Any) -> dict[str, Any]:
    return {"csrf_token": world.csrf(), "incident_id": "INC-7", "reason": "phishing", **fields}


class TestPlace:
    def test_confirmation_counts_the_events_covered_now(self, responder: World) -> None:
        """The confirmation page says how many events the scope matches, and places nothing."""
        responder.add_events({"user.id": "iss|p"}, {"user.id": "iss|p"}, {"user.id": "iss|q"})
        page = responder.client.post(HOLDS + "/confirm", data=form(responder, user_ids="iss|p"))
        assert page.status_code == 200
        assert re.search(r'id="covered">(\d+)<', page.text).group(1) == "2"  # type: ignore[union-attr]
        assert responder.holds.list() == []

    def test_confirmation_carries_the_values_on(self, responder: World) -> None:
        """The confirm form repeats every value, so what is placed is what was confirmed."""
        page = responder.client.post(
            HOLDS + "/confirm",
            data=form(responder, source_ips="192.0.2.0/24", categories=["errors", "backbone"]),
        ).text
        for value in ("INC-7", "phishing", "192.0.2.0/24", "errors", "backbone"):
            assert f'value="{value}"' in page

    def test_confirmed_hold_is_placed_and_listed(self, responder: World) -> None:
        """Submitting the confirmation places the hold (hold_placed) and lists it as active."""
        answer = responder.client.post(
            HOLDS, data=form(responder, user_ids="iss|p\niss|q", review_on="2099-01-01")
        )
        assert answer.status_code == 303
        [hold] = responder.holds.list()
        assert hold.scope.user_ids == ("iss|p", "iss|q")
        assert hold.placed_by == responder.who.user_id
        assert hold.review_at is not None and hold.review_at.year == 2099
        assert responder.emitted("hold_placed")
        listed = responder.client.get(answer.headers["location"]).text
        assert "INC-7" in listed.split('id="active-holds"', 1)[1]

    def test_invalid_hold_shows_the_form_again(self, responder: World) -> None:
        """A hold without a scope is a 400 with the reason, the typed values kept."""
        answer = responder.client.post(HOLDS + "/confirm", data=form(responder))
        assert answer.status_code == 400
        assert "scope" in answer.text
        assert 'value="INC-7"' in answer.text

    def test_bad_review_date_refused(self, responder: World) -> None:
        """A review date that is not a date is a 400 naming it."""
        answer = responder.client.post(
            HOLDS, data=form(responder, user_ids="iss|p", review_on="soon")
        )
        assert answer.status_code == 400
        assert "review_on" in answer.text
        assert responder.holds.list() == []


class TestRelease:
    def test_release_with_reason(self, responder: World) -> None:
        """Releasing records the reason (hold_released) and moves it to the released list."""
        responder.client.post(HOLDS, data=form(responder, user_ids="iss|p"))
        [hold] = responder.holds.list()
        answer = responder.client.post(
            f"{HOLDS}/{hold.hold_id}/release",
            data={"csrf_token": responder.csrf(), "reason": "incident closed"},
        )
        assert answer.status_code == 303
        [released] = responder.holds.list()
        assert released.release_reason == "incident closed"
        assert responder.emitted("hold_released")
        page = responder.client.get(answer.headers["location"]).text
        assert "incident closed" in page.split('id="released-holds"', 1)[1]

    def test_release_twice_is_a_conflict(self, responder: World) -> None:
        """A hold is released once; the second attempt is a 409 page."""
        responder.client.post(HOLDS, data=form(responder, user_ids="iss|p"))
        [hold] = responder.holds.list()
        data = {"csrf_token": responder.csrf(), "reason": "done"}
        responder.client.post(f"{HOLDS}/{hold.hold_id}/release", data=data)
        assert (
            responder.client.post(f"{HOLDS}/{hold.hold_id}/release", data=data).status_code == 409
        )

    def test_unknown_hold_is_404(self, responder: World) -> None:
        """Releasing a hold that does not exist is a 404 page."""
        answer = responder.client.post(
            f"{HOLDS}/nope/release", data={"csrf_token": responder.csrf(), "reason": "x"}
        )
        assert answer.status_code == 404

    def test_release_needs_a_reason(self, responder: World) -> None:
        """An empty reason is a 400, and the hold stays active."""
        responder.client.post(HOLDS, data=form(responder, user_ids="iss|p"))
        [hold] = responder.holds.list()
        answer = responder.client.post(
            f"{HOLDS}/{hold.hold_id}/release", data={"csrf_token": responder.csrf(), "reason": ""}
        )
        assert answer.status_code == 400
        assert responder.holds.list()[0].active


class TestList:
    def test_officer_sees_no_forms(self, officer: World) -> None:
        """A security officer sees the list, but neither the place nor the release form."""
        page = officer.client.get(HOLDS).text
        assert 'id="place-hold"' not in page
        assert "/release" not in page
