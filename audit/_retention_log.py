"""Signed retention records: what retention deleted or minimised, under which rule and run.

The retention job hands each store change to :meth:`RetentionRecorder.apply`. Before the
change, the recorder lists the events the change selects (a deletion: ids and timestamps
alone, ``AuditStore.ids``, no document read; a minimisation: whole events, to hash each one's
minimised form) and writes signed records of kind ``retention`` to the digest store
(write-ahead: a record whose change then did not happen explains nothing that ``verify``
looks for, while a change without a record would look like tampering):

* ``delete``: the ids of the events about to go;
* ``minimise``: each event's id and the hash it will have once minimised (source IP
  truncated, user agent dropped, ``audit.minimised`` set), so ``verify`` can tell the
  legitimate minimisation from any other edit.

Each record names the run (a UUIDv7 per run), the run's time, the category, the rule
(its periods) and the cutoff; at most ``chunk`` events per record. Records are written
straight to the store (retention runs apart from the gateway, without a spool); a failure
raises before anything is deleted.

**Only what was recorded is changed.** The store's ``delete``/``minimise`` select again by
the scope; an event arriving in between (a late replay of an old spool matches the cutoff)
would be changed without a record, and ``verify`` would call it missing or altered. So:

* deletions on OpenSearch go a day at a time (``OpenSearchStore.days``: one aggregation
  names the days). Under a write block of the day's index the recorder lists the day (its
  only listing) and asks the store whether it would drop that index whole
  (every event selected, or so many that the store moves the few it spares to the day's
  ``-kept`` index under the same ids and drops the rest with the index: see
  ``OpenSearchStore.delete``). If so, it records and deletes by the day's scope while the
  block holds, so the index cannot change between the listing and the drop (a late event
  meets the block and its shipper retries it after the deletion); otherwise it lifts the
  block (a block refuses deletes by id too) and deletes by recorded ids, as below;
* everything else (deletions by id, minimisation, SQLite) runs on the scope narrowed to the
  recorded ids (``Scope.event_ids``), at most ``max_ids`` per call.

``guard`` (the retention job's check that no hold appeared meanwhile) is passed to each store
change and asked before each further chunk: a record whose change then did not happen
explains nothing ``verify`` looks for, which is harmless.

Events that arrive later are left for the next run, which records them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from opensearchpy.exceptions import NotFoundError

from audit._chain import Keyring, event_hash, sign_record
from audit._digests import DigestStore
from audit._opensearch import OpenSearchStore, translated_errors
from audit._store import AuditStore, Guard, Page, Record, Scope, truncate_ip
from audit.errors import StoreError
from audit.events import index_name, new_event_id

__all__ = ["DEFAULT_CHUNK", "RETENTION_INSTANCE", "RetentionRecorder"]

DEFAULT_CHUNK: Final = 5000
#: At most this many event ids narrow one store change (see the module docstring): far
#: below OpenSearch's ``index.max_terms_count`` (65,536) and SQLite's 32,766 bound
#: variables, and small, because the ids travel with every page the store reads.
DEFAULT_MAX_IDS: Final = 5000
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


@contextlib.contextmanager
def _write_blocked(store: OpenSearchStore, index: str) -> Iterator[None]:
    """No writes to ``index`` inside (a dropped index needs no unblocking)."""
    client = store._client
    with translated_errors():
        client.indices.put_settings(index=index, body={"index.blocks.write": True})
    try:
        yield
    finally:
        with translated_errors(), contextlib.suppress(NotFoundError):
            client.indices.put_settings(index=index, body={"index.blocks.write": None})


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
        max_ids: int = DEFAULT_MAX_IDS,
    ) -> None:
        if not keyring.can_sign:
            raise ValueError("retention records need a private signing key")
        if chunk < 1 or max_ids < 1:
            raise ValueError("chunk and max_ids must be positive")
        self._events = events
        self._digests = digests
        self._keyring = keyring
        self._rules = dict(rules)
        self._chunk = chunk
        self._max_ids = max_ids
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
        ``delete`` or ``minimise``) on only the recorded events; returns the sum of what it
        returns."""
        if not self.run_id:
            raise RuntimeError("begin() the run first")
        action = getattr(change, "__name__", "")
        if action not in ("delete", "minimise"):
            raise ValueError(f"cannot record {action!r}: only delete and minimise")
        if action == "delete" and isinstance(self._events, OpenSearchStore):
            done = 0  # each day is listed under its block; here only which days there are
            for day in self._events.days(scope, exclude=exclude):
                if guard is not None and not guard():
                    break
                done += self._opensearch_day(change, scope, exclude, day, guard=guard)
            return done
        selected = self._selected(scope, exclude, ids_only=action == "delete")
        return self._in_chunks(change, action, scope, exclude, selected, guard=guard)

    def _in_chunks(
        self,
        change: Callable[..., int],
        action: str,
        scope: Scope,
        exclude: Sequence[Scope],
        docs: Sequence[Mapping[str, Any]],
        *,
        guard: Guard | None,
    ) -> int:
        done = 0
        for at in range(0, len(docs), self._max_ids):
            if at and guard is not None and not guard():
                break
            chunk = docs[at : at + self._max_ids]
            entries = self._record(action, scope, chunk)
            narrowed = replace(scope, event_ids=[entry[0] for entry in entries])
            done += int(change(narrowed, exclude=exclude, guard=guard))
        return done

    def _opensearch_day(
        self,
        change: Callable[..., int],
        scope: Scope,
        exclude: Sequence[Scope],
        day: datetime,
        *,
        guard: Guard | None,
    ) -> int:
        """One day of a deletion on OpenSearch (see the module docstring)."""
        store = self._events
        assert isinstance(store, OpenSearchStore)  # noqa: S101 - checked by the caller
        until = day + timedelta(days=1)
        day_scope = replace(
            scope,
            since=day if scope.since is None else max(scope.since, day),
            until=until if scope.until is None else min(scope.until, until),
        )
        index = index_name(store.index_prefix, _iso(day))
        if store.has_index(index):
            with _write_blocked(store, index):
                store.refresh()
                docs = self._selected(day_scope, exclude, ids_only=True)
                if docs and store.drops_whole(index, day_scope, exclude):
                    self._record("delete", scope, docs)
                    return int(change(day_scope, exclude=exclude, guard=guard))
        else:  # only the day's ``-kept`` index is left: nothing writes there but retention
            docs = self._selected(day_scope, exclude, ids_only=True)
        return self._in_chunks(change, "delete", scope, exclude, docs, guard=guard)

    def _record(
        self, action: str, scope: Scope, docs: Sequence[Mapping[str, Any]]
    ) -> list[list[str]]:
        entries: list[list[str]] = []
        for doc in docs:
            if action == "delete":
                entries.append([str(doc["event.id"])])
            else:
                entries.append([str(doc["event.id"]), event_hash(minimised_form(doc))])
        category = scope.categories[0] if len(scope.categories) == 1 else ""
        chunks = [entries[at : at + self._chunk] for at in range(0, len(entries), self._chunk)]
        self._write(action, category, scope, chunks)
        return entries

    def _selected(
        self, scope: Scope, exclude: Sequence[Scope], *, ids_only: bool = False
    ) -> list[dict[str, Any]]:
        """The selected events, oldest first: with ``ids_only`` (a deletion records ids
        alone) just ``event.id`` and ``@timestamp`` from the store's cheap listing, else whole
        (a minimisation records the hash of each event's minimised form)."""
        if ids_only:
            return [
                {"event.id": event_id, "@timestamp": stamp}
                for event_id, stamp in self._events.ids(scope, exclude=exclude)
            ]
        found: list[dict[str, Any]] = []
        after: Page | None = None
        while True:
            page = self._events.search(scope, exclude=exclude, size=PAGE, after=after)
            found += page
            if len(page) < PAGE:
                return found
            after = Page.of(page[-1])

    def _write(
        self, action: str, category: str, scope: Scope, chunks: Sequence[list[list[str]]]
    ) -> None:
        """One signed record per chunk of entries, all in one write and one refresh of the
        digest store (a whole day's deletion lists 20 chunks of 5,000)."""
        if not chunks:
            return
        if not self._schema_ready:
            self._digests.ensure_schema()
            self._schema_ready = True
        records: list[Record] = []
        for entries in chunks:
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
            records.append(Record(record["record.id"], self._run_time, orjson.dumps(signed)))
        for result in self._digests.write(records):
            if result.status not in ("stored", "duplicate"):
                raise StoreError(f"retention record not stored ({result.status}): {result.reason}")
        self._digests.refresh()
