"""Stale roles: a role the identity provider stops asserting disappears from a live session
after the documented interval (``session.roles_max_age``), through the deployed gateway.

Guards CWE-613 (insufficient session expiration) in its "stale claims" form: the class of
gateway advisories where group or role claims cached in a long session outlived their removal
at the identity provider (oauth2-proxy and Pomerium both refresh or re-check claims for this).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

import devidp._server
from devidp import Person
from tests.security._harness import Deployment, deployed, person

#: Small so the test is short; the default is 1 hour (README, config/gateway.example.toml).
ROLES_MAX_AGE = 3.0
SESSION = "__Host-gw_session"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    environ = {
        "GATEWAY_SESSION__ROLES_MAX_AGE": f"{ROLES_MAX_AGE:.0f}s",
        "GATEWAY_SESSION__REFRESH_INTERVAL": "1s",
    }
    with deployed(tmp_path_factory.mktemp("stale-roles"), environ) as running:
        yield running


class TestRemovedRoleDisappears:
    def test_teacher_demoted_at_the_idp(
        self, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CWE-613: a teacher whose IdP now says "student" keeps the teacher's reach at most
        ``roles_max_age`` after login; then the session is refused, and the next login
        (the same subject) reaches only what a student may."""
        teacher = person("teacher")
        students = "/api/schools/school-a/students"
        with deployment.client() as browser:
            deployment.log_in(browser, teacher)
            logged_in = time.monotonic()
            assert browser.get(students).status_code == 200
            demoted = dataclasses.replace(teacher, roles=("student",))

            def by_subject(subject: str) -> Person | None:
                return demoted if subject == teacher.subject else None

            monkeypatch.setattr(devidp._server, "by_subject", by_subject)
            time.sleep(max(0.0, ROLES_MAX_AGE - (time.monotonic() - logged_in)) + 0.5)
            stale = browser.get(students)
            assert stale.status_code == 401, stale.text
            assert not [c for c in browser.cookies.jar if c.name == SESSION and c.value]
            deployment.log_in(browser, teacher)
            assert browser.get(students).status_code == 403
            assert browser.get("/api/me").status_code == 200
