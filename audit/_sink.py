"""The emit interface: how the gateway, OIDC, policy and retention code record an event.

An event is a flat mapping of ECS field names (dotted) to values, for example::

    sink.emit({
        "event.action": "access_denied",
        "event.category": ["web"],
        "event.type": ["denied"],
        "event.outcome": "failure",
        "event.reason": "no_matching_rule",
        "user.id": "https://idp.example|1234",
        "user.roles": ["teacher"],
        "organization.id": "school-a",
        "source.ip": "192.0.2.10",
        "http.request.method": "GET",
        "url.path": "/api/schools/school-b/students",
        "http.response.status_code": 403,
        "trace.id": "<request id>",
        "rule.name": "no_matching_rule",
    })

The sink stamps the event id, ``@timestamp`` and schema version itself, redacts secrets and
neutralises control characters; callers never pass tokens, cookies or codes (refer to a token by
its hash). ``emit`` only enqueues: no I/O, no await, microseconds. It raises
:class:`audit.errors.AuditUnavailable` only when the event can be neither shipped nor spooled
and its category's policy is ``block``; the caller then refuses the request with 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Event = Mapping[str, Any]


class AuditSink(Protocol):
    def emit(self, event: Event) -> None:
        """Record one event (enqueue only; see the module docstring)."""


class MemorySink:
    """Keeps events in a list: for tests and for code written before the shipper lands."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Event) -> None:
        self.events.append(dict(event))

    def actions(self) -> list[str]:
        """The ``event.action`` of every event so far, in order."""
        return [str(event.get("event.action")) for event in self.events]
