"""Signed retention records: what retention deleted or minimised, under which rule and run.

The retention job hands each store change to :meth:`RetentionRecorder.apply`. Before the
change, the recorder lists the events the change selects and writes signed records of kind
``retention`` to the digest store (write-ahead: a record whose change then did not happen
explains nothing that ``verify`` looks for, while a change without a record would look like
tampering):

* ``delete``: the ids of the events about to go;
* ``minimise``: each event's id and the hash it will have once minimised (source IP
  truncated, user agent dropped, ``audit.minimised`` set), so ``verify`` can tell the
  legitimate minimisation from any other edit.

Each record names the run (a UUIDv7 per run), the run's time, the category, the rule
(its periods) and the cutoff; at most ``chunk`` events per record. Records are written
straight to the store (retention runs apart from the gateway, without a spool); a failure
raises before anything is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from audit._chain import Keyring, event_hash, sign_record
from audit._digests import DigestStore
from audit._store import AuditStore, Guard, Page, Record, Scope, truncate_ip
from audit.errors import StoreError
from audit.events import new_event_id

__all__ = ["DEFAULT_CHUNK", "RETENTION_INSTANCE", "RetentionRecorder"]

DEFAULT_CHUNK: Final = 5000
RETENTION_INSTANCE: Final = "retention"
PAGE: Final = 1000


def minimised_form(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The event as the stores' ``minimise`` leaves it (see ``audit/_store.py``)."""
    out = {k: v for k, v in doc.items() if k != "user_agent.original"}
    ip = out.get("source.ip")
    if isinstance(ip, str):
        out["source.ip"] = truncate_ip(ip)
    out["audit.minimised"] = True
    return out


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RetentionRecorder:
    """Records each retention change, signed with ``keyring``'s signing key.

    ``rules`` describes each category's rule in words (``{"errors": "30 days full detail,
    deleted after 90 days"}``), for the records and ``verify``'s report.
    """

    def __init__(
        self,
        *,
        events: AuditStore,
        digests: DigestStore,
        keyring: Keyring,
        rules: Mapping[str, str],
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        if not keyring.can_sign:
            raise ValueError("retention records need a private signing key")
        if chunk < 1:
            raise ValueError("chunk must be positive")
        self._events = events
        self._digests = digests
        self._keyring = keyring
        self._rules = dict(rules)
        self._chunk = chunk
        self._schema_ready = False
        self.run_id = ""
        self._run_time = ""
        self._seq = 0

    def begin(self, now: datetime, *, run_id: str | None = None) -> str:
        """Start a run at ``now`` (under the retention job's ``run_id`` when given, so the
        records and the run's report name the same run); returns its id."""
        self.run_id = run_id or new_event_id()
        self._run_time = _iso(now)
        self._seq = 0
        return self.run_id

    def apply(
        self,
        change: Callable[..., int],
        scope: Scope,
        exclude: Sequence[Scope],
        guard: Guard | None = None,
    ) -> int:
        """Record, then run ``change(scope, exclude=exclude, guard=guard)`` (a store's
        ``delete`` or ``minimise``); returns what it returns."""
        if not self.run_id:
            raise RuntimeError("begin() the run first")
        action = getattr(change, "__name__", "")
        if action not in ("delete", "minimise"):
            raise ValueError(f"cannot record {action!r}: only delete and minimise")
        entries: list[list[str]] = []
        for doc in self._selected(scope, exclude):
            if action == "delete":
                entries.append([str(doc["event.id"])])
            else:
                entries.append([str(doc["event.id"]), event_hash(minimised_form(doc))])
        category = scope.categories[0] if len(scope.categories) == 1 else ""
        for at in range(0, len(entries), self._chunk):
            self._write(action, category, scope, entries[at : at + self._chunk])
        return int(change(scope, exclude=exclude, guard=guard))

    def _selected(self, scope: Scope, exclude: Sequence[Scope]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after: Page | None = None
        while True:
            page = self._events.search(scope, exclude=exclude, size=PAGE, after=after)
            found += page
            if len(page) < PAGE:
                return found
            after = Page.of(page[-1])

    def _write(self, action: str, category: str, scope: Scope, entries: list[list[str]]) -> None:
        if not self._schema_ready:
            self._digests.ensure_schema()
            self._schema_ready = True
        record: dict[str, Any] = {
            "@timestamp": self._run_time,
            "record.id": f"{RETENTION_INSTANCE}:{self.run_id}:{self._seq:06d}",
            "record.kind": "retention",
            "record.instance": RETENTION_INSTANCE,
            "record.seq": self._seq,
            "retention.run": self.run_id,
            "retention.run_time": self._run_time,
            "retention.action": action,
            "retention.category": category,
            "retention.rule": f"{category} ({self._rules.get(category, 'no rule text')})",
            "retention.cutoff": _iso(scope.until) if scope.until else "",
            "events.count": len(entries),
            "events.entries": entries,
        }
        signed = sign_record(record, self._keyring)
        self._seq += 1
        [result] = self._digests.write(
            [Record(record["record.id"], self._run_time, orjson.dumps(signed))]
        )
        if result.status not in ("stored", "duplicate"):
            raise StoreError(f"retention record not stored ({result.status}): {result.reason}")
        self._digests.refresh()
