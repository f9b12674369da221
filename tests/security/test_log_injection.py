"""Log injection: what a client sends never reaches an audit event as a control character.

The ``User-Agent`` is the client-chosen text every request event carries
(``user_agent.original``). Raw bytes over TLS put control, C1, line-separator and bidi
characters in it; the stored event (the SQLite audit store of the deployment) must hold them
escaped. Guards CWE-117 (improper output neutralisation for logs) and CWE-150 (escape
sequences: terminal ESC injection), the class of log-forging advisories in proxies' access
logs.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from audit import Scope, sqlite_store
from tests.security._harness import Deployment

#: Characters that must never be stored raw (C0, DEL, C1, line/paragraph separators, bidi).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")

#: User-Agent values as raw header bytes (what httptools lets through is what is tested).
PAYLOADS: list[bytes] = [
    b"agent\x85next-line",
    b"agent \xe2\x80\xa8 2028 line separator",
    b"agent \xe2\x80\xae reversed \xe2\x80\xac",
    b"agent \xef\xbb\xbf bom",
    b"agent\tTAB\tevent.outcome=success",
    b'agent", "event.outcome": "success',
]


#: C0 controls and DEL, which the deployed HTTP parser refuses outright.
REFUSED_BY_PARSER: list[bytes] = [
    b"Mozilla/5.0 \x1b[31mFAKE\x1b[0m",
    b"agent\x7fDEL",
    b"agent\x0bVT",
]


def _request(deployment: Deployment, agent: bytes) -> bytes:
    host = b"Host: localhost:" + str(deployment.https_port).encode() + b"\r\n"
    return (
        b"GET /api/me HTTP/1.1\r\n"
        + host
        + b"User-Agent: "
        + agent
        + b"\r\nConnection: close\r\n\r\n"
    )


def _event(deployment: Deployment, request_id: str) -> dict[str, Any]:
    store = sqlite_store(path=deployment.settings.audit.sqlite_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        store.refresh()
        for event in store.search(Scope(actions=["access_denied"]), size=1000):
            if event.get("trace.id") == request_id:
                return event
        time.sleep(0.1)
    raise AssertionError(f"no access_denied event for request {request_id}")


class TestUserAgentInAuditEvents:
    """The stored ``user_agent.original`` is free of raw control characters."""

    @pytest.mark.parametrize("agent", PAYLOADS, ids=lambda a: a.decode("latin-1")[:24])
    def test_control_characters_are_escaped(self, deployment: Deployment, agent: bytes) -> None:
        """CWE-117 / CWE-150: a refused request's audit event holds the User-Agent with
        every control, line-separator and bidi character escaped, and the outcome the gateway
        decided (never one forged in the text)."""
        status, response = deployment.raw(_request(deployment, agent))
        assert status == 401, response[:300]
        match = re.search(rb"x-request-id: ([0-9a-f]+)", response)
        assert match is not None
        event = _event(deployment, match.group(1).decode())
        stored = event["user_agent.original"]
        assert isinstance(stored, str)
        assert _UNSAFE.search(stored) is None, repr(stored)
        assert event["event.outcome"] == "failure"
        assert "agent" in stored.lower() or "mozilla" in stored.lower()

    @pytest.mark.parametrize("agent", REFUSED_BY_PARSER, ids=lambda a: a.decode("latin-1")[:24])
    def test_c0_controls_are_refused_before_any_stage(
        self, deployment: Deployment, agent: bytes
    ) -> None:
        """CWE-150 (ESC sequences in logs): C0 controls and DEL in a header are a 400 from
        the HTTP parser, so they can reach neither a stage nor an event."""
        status, response = deployment.raw(_request(deployment, agent))
        assert status == 400, response[:300]
