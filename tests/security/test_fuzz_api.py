"""Fuzzing the gateway's own JSON APIs from their OpenAPI document (schemathesis).

Requests generated from ``gateway/openapi.py``'s document, valid and invalid alike, go
in-process to the ASGI gateway (real host, path and policy stages, the audit and holds APIs
over a seeded SQLite store) as a logged-in security officer and as a school admin of
``school-a``. Guards:

* CWE-20 (improper input validation) and CWE-248/CWE-755 (uncaught exceptions, mishandled
  exceptional conditions): no input makes the gateway answer 500; malformed filters, cursors,
  sizes and bodies get a documented 4xx.
* CWE-200/CWE-209 (exposure of information, also through error messages): every answer
  conforms to the document's schemas (status, media type, body), so no undocumented detail
  (a stack trace, a store error) leaks.
* CWE-639 and CWE-863 (authorisation bypass through user-controlled keys, incorrect
  authorisation): whatever the filters, a school admin never receives an event of another
  tenant, in search or export.
* CWE-778 (insufficient logging): every search answered is itself an audit event, with the
  number of events it returned.

Example counts are bounded (``MAX_EXAMPLES`` per operation and role) so the module runs in
well under a minute; the seed is derandomised so a failure reproduces.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from audit import MemorySink
from gateway.app import GatewayApp
from gateway.openapi import openapi_document
from tests.gateway._api_app import HOST, api_app, person, seeded_store

MAX_EXAMPLES: Final = 12
BASE_URL: Final = f"https://{HOST}"
OWN_TENANT: Final = "school-a"
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


async def _unset(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("each test passes its own gateway to case.call(app=...)")


schema = schemathesis.openapi.from_dict(openapi_document())
schema.app = _unset  # selects schemathesis's in-process ASGI transport: no sockets
# The coverage phase enumerates boundary values without a bound on their number; the examples
# and fuzzing phases (valid and invalid data) stay within MAX_EXAMPLES per operation.
schema.config.phases.coverage.enabled = False
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


class Deployment:
    """One gateway per role over one seeded store; the sink shows what was audited."""

    def __init__(self, root: Path) -> None:
        store = seeded_store(root / "audit.db")
        self.sinks = {"officer": MemorySink(), "admin": MemorySink()}
        #: (role, path, status, events returned > 0) -> how many fuzzed requests got that
        self.answers: Counter[tuple[str, str, int, bool]] = Counter()
        self.apps: dict[str, GatewayApp] = {
            "officer": api_app(
                root / "officer",
                person("security_officer", sub="sec"),
                store=store,
                sink=self.sinks["officer"],
            ),
            "admin": api_app(
                root / "admin",
                person("school_admin", OWN_TENANT, sub="adm"),
                store=store,
                sink=self.sinks["admin"],
            ),
        }


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = Path(tmp_path_factory.mktemp("fuzz"))
    for name in ("officer", "admin"):
        (root / name).mkdir()
    yield Deployment(root)


def _tenants(event: dict[str, Any]) -> set[str]:
    return {
        value
        for value in (event.get("organization.id"), (event.get("labels") or {}).get("data_tenant"))
        if value
    }


def _call(deployment: Deployment, role: str, case: Any) -> Any:
    response = case.call(base_url=BASE_URL, app=deployment.apps[role])
    found = False
    if response.status_code == 200 and case.path == "/_gateway/audit":
        found = bool(orjson.loads(response.content)["events"])
    deployment.answers[(role, case.path, response.status_code, found)] += 1
    return response


def _audited_search(deployment: Deployment, role: str, case: Any, response: Any) -> None:
    """A search that answered 200 left an audit_search event naming how many it returned."""
    if case.path != "/_gateway/audit" or case.method != "GET" or response.status_code != 200:
        return
    last = deployment.sinks[role].events[-1]
    assert (last["event.action"], last["event.outcome"]) == ("audit_search", "success")
    returned = len(orjson.loads(response.content)["events"])
    assert last["labels"]["returned"] == str(returned)


@schema.parametrize()
@FUZZ
def test_security_officer(case: Any, deployment: Deployment) -> None:
    """As a security officer: no 500, every answer as documented, every search audited."""
    response = _call(deployment, "officer", case)
    case.validate_response(response, checks=CHECKS)
    _audited_search(deployment, "officer", case, response)


@schema.parametrize()
@FUZZ
def test_school_admin(case: Any, deployment: Deployment) -> None:
    """As a school admin: as above, and no event of another tenant in any answer."""
    response = _call(deployment, "admin", case)
    case.validate_response(response, checks=CHECKS)
    _audited_search(deployment, "admin", case, response)
    if response.status_code == 200 and case.path.startswith("/_gateway/audit"):
        media = (response.headers.get("content-type") or [""])[0]
        if media.startswith("text/csv"):
            assert b"school-b" not in response.content
            return
        for event in orjson.loads(response.content)["events"]:
            assert _tenants(event) == {OWN_TENANT}, event


def test_fuzzing_reached_the_data(deployment: Deployment) -> None:
    """The fuzzed searches above (this module, run whole) got past validation and the scope
    check to real events for both roles: the scope assertion was exercised, not vacuous."""
    for role in ("officer", "admin"):
        assert deployment.answers[(role, "/_gateway/audit", 200, True)] > 0, deployment.answers
