"""Verify the digest chains against the stored events; report per interval.

For each instance the digests are walked in sequence order:

* ``signature_invalid``: the digest's signature does not verify (an unknown key id, or a
  signature that fails under the key it names: an edited or forged digest);
* ``digest_missing``: a sequence number is absent (a digest record was deleted), or a chain
  stops without a shutdown digest more than two intervals ago (the newest ones deleted, or
  the instance died and has not restarted);
* ``chain_broken``: a digest does not name the hash of the one before it (replaced);
* ``events_missing`` / ``events_altered``: an event the digest lists is not in the store, or
  its canonical serialisation no longer has the hash the digest signed (with the event ids,
  and the daily index when the whole index is gone);
* ``removed_by_retention``: events are gone or minimised, and a signed retention record says
  which run did it under which rule;
* ``intact``: everything the digest lists is there, unchanged.

The reverse, events in the store that no digest lists (injected by someone who can write to
the store, or copied under a new id), is ``audit/_unsigned.py``: per hour, the store's count
against the listed events found there, read id by id only where they differ. It reports
``events_unsigned`` (a finding, outside any interval) and, as notes that are not findings,
events of the open tail (``pending``), events marked by a writer without a key
(``unsigned_keyless``) and events of a time no chain was signing (``unsigned_uncovered``).

Retention records are read first; one that does not verify is itself reported
(``signature_invalid``) and explains nothing.

Deleting the newest digests (with the events they cover) leaves nothing in the store to
notice. A verifier that keeps the chain heads it saw (``anchor``: instance -> sequence
number and hash, kept outside the store by the scheduled job) catches it: a digest verified
before that is gone or changed is reported. The heads are each chain's newest digest, read
apart from any time window. Events of the command-line tools are covered by their own chain
(``audit/_clisink.py``) when the tools are given the signing key.

A time window (``since``/``until``) is given to the store's queries: the digests ending in
it, each instance's first digest ending after it (the interval across ``until``), the digest
just before each chain's first in the window (read by id: the link into the window is
checked), and the retention records from the earliest interval start on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from audit._chain import Keyring, event_hash, events_hash, record_hash, verify_record
from audit._digests import DigestStore
from audit._digestwriter import digest_record_id
from audit._inventory import Inventory, StoredEvent, hour_of, inventory_of
from audit._opensearch import OpenSearchStore
from audit._store import AuditStore, Scope
from audit._unsigned import UnsignedCheck, UnsignedReport
from audit.events import INDEX_BASE, parse_timestamp

__all__ = ["FINDINGS", "NOTES", "Finding", "IntervalReport", "Verifier", "VerifyReport"]

#: Every status that is a finding (``intact`` and ``removed_by_retention`` are not).
FINDINGS: Final = (
    "signature_invalid",
    "digest_missing",
    "chain_broken",
    "events_missing",
    "events_altered",
    "events_unsigned",
)
#: Notes: said, but not findings (see ``audit/_unsigned.py``).
NOTES: Final = ("unsigned_pending", "unsigned_keyless", "unsigned_uncovered")
FETCH_CHUNK: Final = 500
#: Room for this many stored copies per id in one fetch (a retention move stores two for a
#: moment); a fuller answer is asked for again in halves, one id alone with MAX_COPIES room.
COPIES: Final = 3
MAX_COPIES: Final = 10_000
SHOWN_IDS: Final = 20
#: A chain whose newest digest (not a shutdown one) ended this many intervals ago is stale.
STALE_INTERVALS: Final = 2


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with an interval (``kind`` from :data:`FINDINGS`)."""

    kind: str
    detail: str
    event_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IntervalReport:
    """What verify found for one digest (or for a digest that should be there)."""

    instance: str
    seq: int
    start: str
    end: str
    events: int
    findings: tuple[Finding, ...] = ()
    retention: tuple[str, ...] = ()  # "run R under rule X: N deleted, M minimised"

    @property
    def status(self) -> str:
        if self.findings:
            return ",".join(dict.fromkeys(f.kind for f in self.findings))
        return "removed_by_retention" if self.retention else "intact"

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "seq": self.seq,
            "start": self.start,
            "end": self.end,
            "events": self.events,
            "status": self.status,
            "findings": [
                {"kind": f.kind, "detail": f.detail, "event_ids": list(f.event_ids)}
                for f in self.findings
            ],
            "retention": list(self.retention),
        }

    def text(self) -> str:
        head = f"{self.instance} #{self.seq} {self.start} .. {self.end} ({self.events} events)"
        lines = [f"{head}: {self.status}"]
        lines += [f"    {f.kind}: {f.detail}" for f in self.findings]
        lines += [f"    removed by retention {r}" for r in self.retention]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    intervals: tuple[IntervalReport, ...]
    other: tuple[Finding, ...] = field(default=())  # findings outside any interval
    #: The newest digest of each instance: (sequence number, record hash), for the anchor.
    heads: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    #: What is said but is no finding (kinds of :data:`NOTES`).
    notes: tuple[Finding, ...] = field(default=())
    #: The look for events no digest lists (None: not run, e.g. per ``--instance``).
    unsigned: UnsignedReport | None = None

    @property
    def findings(self) -> int:
        return sum(len(i.findings) for i in self.intervals) + len(self.other)

    @property
    def unsigned_events(self) -> int:
        """How many stored events no digest lists where one should (``events_unsigned``)."""
        return len(self.unsigned.unsigned) if self.unsigned is not None else 0

    def summary(self) -> str:
        """The one line a scheduled job logs."""
        line = f"{len(self.intervals)} interval(s), {self.findings} finding(s)"
        if self.unsigned is None:
            return line + "; events no digest lists: not looked for"
        line += f", {self.unsigned_events} unsigned event(s)"
        quiet = [
            (len(self.unsigned.keyless), "written without a key"),
            (len(self.unsigned.uncovered), "from a time nothing signed"),
            (self.unsigned.pending, "pending (newer than the last digests)"),
        ]
        said = [f"{n} {what}" for n, what in quiet if n]
        return line + (f"; not findings: {', '.join(said)}" if said else "")

    @property
    def ok(self) -> bool:
        return self.findings == 0


@dataclass(frozen=True, slots=True)
class _Explained:
    run: str
    rule: str
    action: str
    hash: str = ""


def _shown(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return ", ".join(ids[:SHOWN_IDS]) + more


class Verifier:
    """Checks ``digests`` (signed with keys of ``keyring``) against ``events``."""

    def __init__(
        self,
        *,
        events: AuditStore,
        digests: DigestStore,
        keyring: Keyring,
        inventory: Inventory | None = None,
    ) -> None:
        self._events = events
        self._digests = digests
        self._keyring = keyring
        self._inventory = inventory

    def verify(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        instance: str | None = None,
        anchor: Mapping[str, tuple[int, str]] | None = None,
        now: datetime | None = None,
        signed_since: datetime | None = None,
        unsigned: bool = True,
    ) -> VerifyReport:
        """``anchor``: the heads an earlier run saw (:attr:`VerifyReport.heads`);
        ``signed_since``: from then on every writer had a signing key, so an event no digest
        lists is a finding even where no chain was signing; ``unsigned=False`` skips the look
        for events no digest lists (it is skipped per ``instance`` anyway)."""
        now = now or datetime.now(UTC)
        self._events.refresh()
        self._digests.refresh()
        by_instance: dict[str, list[dict[str, Any]]] = {}
        loaded = self._window(since, until, instance)
        for record in loaded:
            by_instance.setdefault(str(record.get("record.instance")), []).append(record)
        explained: dict[str, _Explained] = {}
        other: list[Finding] = []
        if since is None and until is None:  # everything: every retention record is checked
            explained, other = self._retention(None)
        elif by_instance:
            explained, other = self._retention(_earliest_start(by_instance.values()))
        reports: list[IntervalReport] = []
        present: Counter[str] = Counter()  # per hour: listed events found stored there
        for name, chain in sorted(by_instance.items()):
            reports += self._walk(name, chain, explained, present)
        heads: dict[str, tuple[int, str]] = {}
        newest_records = self._digests.heads(kind="digest", instance=instance)
        for newest in newest_records:
            name = str(newest.get("record.instance"))
            heads[name] = (int(newest["record.seq"]), record_hash(newest))
            if until is None:
                other += self._stale(name, newest, now)
        for name, (seq, digest) in sorted((anchor or {}).items()):
            if instance is None or name == instance:
                other += self._anchored(name, seq, digest)
        found: UnsignedReport | None = None
        notes: list[Finding] = []
        if unsigned and instance is None:
            check = UnsignedCheck(
                inventory=self._inventory or inventory_of(self._events), digests=self._digests
            )
            found = check.run(
                loaded=loaded,
                present=present,
                heads=newest_records,
                since=since,
                until=until,
                now=now,
                signed_since=signed_since,
            )
            other += _unsigned_findings(found)
            notes += _unsigned_notes(found)
        return VerifyReport(tuple(reports), tuple(other), heads, tuple(notes), found)

    def _window(
        self, since: datetime | None, until: datetime | None, instance: str | None
    ) -> list[dict[str, Any]]:
        """The digests whose interval overlaps ``[since, until)``, read by time from the store:
        those ending in the window, plus each instance's first one ending at or after
        ``until`` (the interval across ``until``; both queries at the store's precision, so
        together they miss nothing), then filtered exactly here."""
        found = self._digests.records(kind="digest", instance=instance, since=since, until=until)
        if until is not None:
            found += self._digests.first_from(kind="digest", moment=until, instance=instance)
        return [record for record in found if _in_window(record, since, until)]

    @staticmethod
    def _stale(instance: str, newest: Mapping[str, Any], now: datetime) -> list[Finding]:
        if newest.get("chain.closed") is True:
            return []
        try:
            end = parse_timestamp(str(newest.get("interval.end")))
            interval = float(newest.get("chain.interval_seconds") or 0)
        except (TypeError, ValueError):
            return []
        if interval <= 0 or now - end <= timedelta(seconds=STALE_INTERVALS * interval):
            return []
        return [
            Finding(
                "digest_missing",
                f"the chain of {instance} stops at digest #{newest.get('record.seq')}"
                f" (ended {newest.get('interval.end')}) without a shutdown digest: later"
                " digests deleted, or the instance died and has not restarted",
            )
        ]

    def _anchored(self, instance: str, seq: int, digest: str) -> list[Finding]:
        found = self._digests.get(digest_record_id(instance, seq))
        if found is None:
            return [
                Finding(
                    "digest_missing",
                    f"digest #{seq} of {instance}, seen by an earlier verify, is gone",
                )
            ]
        if record_hash(found) != digest:
            return [
                Finding("chain_broken", f"digest #{seq} of {instance} changed since last verified")
            ]
        return []

    # --- retention records -----------------------------------------------------------------

    def _retention(self, since: datetime | None) -> tuple[dict[str, _Explained], list[Finding]]:
        """Retention records from ``since`` on (a run changes events after they were
        shipped, so none before the earliest interval checked explains anything in it)."""
        explained: dict[str, _Explained] = {}
        bad: list[Finding] = []
        for record in self._digests.records(kind="retention", since=since):
            if not verify_record(record, self._keyring):
                bad.append(
                    Finding(
                        "signature_invalid",
                        f"retention record {record.get('record.id')} does not verify"
                        f" (key {record.get('key.id')})",
                    )
                )
                continue
            why = _Explained(
                run=str(record.get("retention.run")),
                rule=str(record.get("retention.rule")),
                action=str(record.get("retention.action")),
            )
            for entry in record.get("events.entries") or []:
                event_id = str(entry[0])
                post = str(entry[1]) if len(entry) > 1 else ""
                if why.action == "delete" or event_id not in explained:
                    explained[event_id] = _Explained(why.run, why.rule, why.action, post)
        return explained, bad

    # --- the chain -------------------------------------------------------------------------

    def _walk(
        self,
        instance: str,
        inside: list[dict[str, Any]],
        explained: Mapping[str, _Explained],
        present: Counter[str],
    ) -> list[IntervalReport]:
        """Walk one instance's digests of the window; the one before the window's first is
        read by id, so the link into the window is checked too."""
        reports: list[IntervalReport] = []
        inside.sort(key=lambda r: int(r.get("record.seq", -1)))
        first_seq = int(inside[0]["record.seq"])
        previous = None
        if first_seq > 0:
            previous = self._digests.get(digest_record_id(instance, first_seq - 1))
            if previous is None:
                reports.append(self._missing(instance, first_seq - 1, inside[0]))
        for record in inside:
            findings: list[Finding] = []
            seq = int(record["record.seq"])
            if previous is not None and seq > int(previous["record.seq"]) + 1:
                for gap in range(int(previous["record.seq"]) + 1, seq):
                    reports.append(self._missing(instance, gap, record))
            elif previous is not None and record.get("chain.previous") != record_hash(previous):
                findings.append(
                    Finding("chain_broken", f"does not chain to digest #{previous['record.seq']}")
                )
            elif previous is None and seq == 0 and record.get("chain.previous") != "":
                findings.append(Finding("chain_broken", "the first digest names a predecessor"))
            retention: list[str] = []
            if not verify_record(record, self._keyring):
                kid = record.get("key.id")
                known = kid in self._keyring.key_ids()
                why = "does not verify under" if known else "is by an unknown"
                findings.append(Finding("signature_invalid", f"signature {why} key {kid}"))
            else:
                findings += self._events_of(record, explained, retention, present)
            reports.append(
                IntervalReport(
                    instance=instance,
                    seq=seq,
                    start=str(record.get("interval.start")),
                    end=str(record.get("interval.end")),
                    events=int(record.get("events.count", 0)),
                    findings=tuple(findings),
                    retention=tuple(retention),
                )
            )
            previous = record
        return reports

    @staticmethod
    def _missing(instance: str, seq: int, after: Mapping[str, Any]) -> IntervalReport:
        return IntervalReport(
            instance=instance,
            seq=seq,
            start="?",
            end=str(after.get("interval.start")),
            events=0,
            findings=(
                Finding("digest_missing", f"digest #{seq} of {instance} is not in the store"),
            ),
        )

    # --- the events of one digest ----------------------------------------------------------

    def _fetch(self, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Every stored document of each id: an id can be stored more than once (a
        retention move between its copy and its drop; a copy someone made), and every copy
        must hash as signed."""
        found: dict[str, list[dict[str, Any]]] = {}
        for at in range(0, len(ids), FETCH_CHUNK):
            self._fetch_chunk(ids[at : at + FETCH_CHUNK], found)
        return found

    def _fetch_chunk(self, ids: Sequence[str], found: dict[str, list[dict[str, Any]]]) -> None:
        size = len(ids) * COPIES if len(ids) > 1 else MAX_COPIES
        docs = self._events.search(Scope(event_ids=ids), size=size)
        if len(docs) >= size and len(ids) > 1:  # more copies than room: halve and ask again
            half = len(ids) // 2
            self._fetch_chunk(ids[:half], found)
            self._fetch_chunk(ids[half:], found)
            return
        for doc in docs:
            found.setdefault(str(doc["event.id"]), []).append(doc)

    def _events_of(
        self,
        record: Mapping[str, Any],
        explained: Mapping[str, _Explained],
        retention: list[str],
        present: Counter[str],
    ) -> list[Finding]:
        entries = [(str(e[0]), str(e[1]), str(e[2])) for e in record.get("events.entries") or []]
        listed = {event_id: digest for event_id, digest, _ts in entries}
        findings: list[Finding] = []
        if len(entries) != record.get("events.count") or events_hash(listed) != record.get(
            "events.hash"
        ):
            findings.append(Finding("chain_broken", "the digest's count or hash disagrees"))
        stored = self._fetch(list(listed))
        _tally(present, (copies[0] for copies in stored.values()))
        missing: list[tuple[str, str]] = []
        altered: list[str] = []
        by_run: dict[tuple[str, str], list[int]] = {}
        for event_id, digest, ts in entries:
            docs = stored.get(event_id)
            why = explained.get(event_id)
            if not docs:
                if why is not None and why.action == "delete":
                    by_run.setdefault((why.run, why.rule), [0, 0])[0] += 1
                else:
                    missing.append((event_id, ts))
                continue
            changed = {event_hash(doc) for doc in docs} - {digest}
            if not changed:
                continue
            if why is not None and why.action == "minimise" and changed == {why.hash}:
                by_run.setdefault((why.run, why.rule), [0, 0])[1] += 1
            else:
                altered.append(event_id)
        if missing:
            ids = [event_id for event_id, _ts in missing]
            findings.append(Finding("events_missing", self._missing_detail(missing), tuple(ids)))
        if altered:
            findings.append(
                Finding(
                    "events_altered",
                    f"{len(altered)} event(s) changed since signed: {_shown(altered)}",
                    tuple(altered),
                )
            )
        for (run, rule), (deleted, minimised) in sorted(by_run.items()):
            retention.append(
                f"run {run} under rule {rule}: {deleted} deleted, {minimised} minimised"
            )
        return findings

    def _missing_detail(self, missing: Sequence[tuple[str, str]]) -> str:
        ids = [event_id for event_id, _ts in missing]
        detail = f"{len(missing)} event(s) not in the store: {_shown(ids)}"
        gone = self._gone_indices(ts for _id, ts in missing)
        if gone:
            detail += f"; daily index(es) gone: {', '.join(gone)}"
        return detail

    def _gone_indices(self, stamps: Iterable[str]) -> list[str]:
        if not isinstance(self._events, OpenSearchStore):
            return []
        prefix = self._events.index_prefix
        wanted = set()
        for ts in stamps:
            try:
                wanted.add(f"{prefix}{INDEX_BASE}-{parse_timestamp(ts).strftime('%Y.%m.%d')}")
            except ValueError:
                continue
        present = set(self._events._indices())
        return sorted(wanted - present)


def _tally(present: Counter[str], docs: Iterable[Mapping[str, Any]]) -> None:
    """Count stored events per hour of their stored ``@timestamp``."""
    for doc in docs:
        try:
            present[hour_of(str(doc.get("@timestamp")))] += 1
        except ValueError:
            continue  # an unreadable time: its hour disagrees and is read id by id


def _listing(events: Sequence[StoredEvent]) -> str:
    shown = [
        f"{e.event_id} at {e.timestamp} ({e.action or '?'})" if e.event_id else e.where
        for e in events[:SHOWN_IDS]
    ]
    more = f" and {len(events) - SHOWN_IDS} more" if len(events) > SHOWN_IDS else ""
    return ", ".join(shown) + more


def _by_place(events: Sequence[StoredEvent]) -> dict[str, list[StoredEvent]]:
    places: dict[str, list[StoredEvent]] = {}
    for event in events:
        places.setdefault(event.where, []).append(event)
    return dict(sorted(places.items()))


def _unsigned_findings(found: UnsignedReport) -> list[Finding]:
    """One ``events_unsigned`` finding per index (OpenSearch) or day (SQLite)."""
    return [
        Finding(
            "events_unsigned",
            f"{len(events)} event(s) in {where} that no digest lists: {_listing(events)}",
            tuple(e.event_id for e in events),
        )
        for where, events in _by_place(found.unsigned).items()
    ]


def _unsigned_notes(found: UnsignedReport) -> list[Finding]:
    notes: list[Finding] = []
    if found.pending:
        notes.append(
            Finding(
                "unsigned_pending",
                f"{found.pending} event(s) newer than the last digests (the open interval;"
                " signed at its end)",
            )
        )
    if found.keyless:
        notes.append(
            Finding(
                "unsigned_keyless",
                f"{len(found.keyless)} backbone event(s) marked as written without a signing"
                f" key (a CLI run without --signing-key): {_listing(found.keyless)}",
                tuple(e.event_id for e in found.keyless),
            )
        )
    if found.uncovered:
        notes.append(
            Finding(
                "unsigned_uncovered",
                f"{len(found.uncovered)} event(s) from a time no chain was signing (a writer"
                " without a key, or injected then; verify cannot tell which; --signed-since"
                f" makes them findings): {_listing(found.uncovered)}",
                tuple(e.event_id for e in found.uncovered),
            )
        )
    return notes


def _earliest_start(chains: Iterable[list[dict[str, Any]]]) -> datetime | None:
    """The earliest interval start among ``chains`` (None when there is none to read)."""
    starts: list[datetime] = []
    for chain in chains:
        for record in chain:
            try:
                starts.append(parse_timestamp(str(record.get("interval.start"))))
            except ValueError:
                return None  # a damaged digest: read every retention record
    return min(starts) if starts else None


def _in_window(record: Mapping[str, Any], since: datetime | None, until: datetime | None) -> bool:
    try:
        start = parse_timestamp(str(record.get("interval.start")))
        end = parse_timestamp(str(record.get("interval.end")))
    except ValueError:
        return True  # a damaged digest is always shown
    if since is not None and end <= since:
        return False
    return not (until is not None and start >= until)
