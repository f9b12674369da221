"""An audit sink that writes straight to the store: for the retention CLI, which runs apart
from the gateway and has no shipper. The event goes through the same processor chain as the
gateway's (stamping, redaction, control characters, pseudonyms) and is stored before ``emit``
returns; a failure raises instead of losing the record of what retention did."""

from __future__ import annotations

from audit import AuditStore, Event, Record
from audit.errors import StoreError
from audit.processors import Pseudonymise, audit_processors, render_json, run_chain

__all__ = ["StoreSink"]


class StoreSink:
    """``emit`` renders the event and writes it to ``store`` at once (blocking)."""

    def __init__(self, *, store: AuditStore, pseudonymise: Pseudonymise | None = None) -> None:
        self._store = store
        self._chain = audit_processors(pseudonymise=pseudonymise, render=False)

    def emit(self, event: Event) -> None:
        doc = run_chain(self._chain, event)
        record = Record(doc["event.id"], doc["@timestamp"], render_json(None, "", doc))
        [result] = self._store.write([record])
        if result.status not in ("stored", "duplicate"):
            raise StoreError(f"audit event not stored ({result.status}): {result.reason}")
