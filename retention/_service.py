"""Placing and releasing holds, with their audit events: what the API and the CLI share.

The hold is stored first and the event emitted after: if the audit event cannot be recorded
(the backbone's category blocks when the spool is full), the error reaches the caller and the
hold stays placed, because a hold that exists without its event only keeps data longer, while
an event for a hold that does not exist would mislead an investigation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from audit import AuditSink
from audit.events import Action
from retention._holds import Hold, hold_from_request
from retention._holdstore import HoldStore

__all__ = ["Holds"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Holds:
    """The hold store behind validation and audit events; the schema is made on first use."""

    def __init__(
        self,
        *,
        store: HoldStore,
        sink: AuditSink,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._sink = sink
        self._clock = clock
        self._ready = False
        self._lock = threading.Lock()

    def _ensure(self) -> HoldStore:
        with self._lock:
            if not self._ready:
                self._store.ensure_schema()
                self._ready = True
        return self._store

    def list(self, *, active: bool | None = None) -> list[Hold]:
        return self._ensure().holds(active=active)

    def place(self, body: Any, *, by: str) -> Hold:
        """Validate ``body`` (a JSON object), store the hold, emit ``hold_placed``."""
        hold = hold_from_request(body, placed_by=by, placed_at=self._clock())
        self._ensure().add(hold)
        self._sink.emit(_event(Action.HOLD_PLACED, hold, by, hold.reason))
        return hold

    def release(self, hold_id: str, *, by: str, reason: str) -> Hold:
        """Release an active hold once, emit ``hold_released``."""
        released = self._ensure().release(hold_id, by=by, at=self._clock(), reason=reason)
        self._sink.emit(_event(Action.HOLD_RELEASED, released, by, reason))
        return released


def _event(action: Action, hold: Hold, by: str, reason: str) -> dict[str, Any]:
    return {
        "event.action": action.value,
        "event.outcome": "success",
        "user.id": by,
        "labels": {
            "hold_id": hold.hold_id,
            "incident_id": hold.incident_id,
            "reason": reason,
            "scope": orjson.dumps(hold.scope.to_json()).decode(),
        },
    }
