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

One event has a faster way in: a sink may also have ``emit_personal_data(fields)``
(:class:`PersonalDataSink`), which records the ``personal_data_access`` event
``audit.personal_data_access_event(fields)`` from its compact form (:mod:`audit._access`)
with the same guarantees as ``emit``; :class:`audit.AuditWorker` has it (the event is then built
in its worker process). Callers use ``gateway._audit.emit_personal_data``, which falls back to
``emit`` for sinks without it (this module's :class:`MemorySink`, the in-process pipeline).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from audit._access import PersonalDataAccess

Event = Mapping[str, Any]


class AuditSink(Protocol):
    def emit(self, event: Event) -> None:
        """Record one event (enqueue only; see the module docstring)."""


class PersonalDataSink(AuditSink, Protocol):
    def emit_personal_data(self, fields: PersonalDataAccess) -> None:
        """Record ``personal_data_access_event(fields)``, as :meth:`emit` would. The fields
        may be read after the call (by another thread): the caller does not change them."""


class MemorySink:
    """Keeps events in a list: for tests and for code written before the shipper lands."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Event) -> None:
        self.events.append(dict(event))

    def actions(self) -> list[str]:
        """The ``event.action`` of every event so far, in order."""
        return [str(event.get("event.action")) for event in self.events]
