"""Events in the store that no digest lists: injected, copied under a new id, or unsigned.

Verify (``audit/_verify.py``) checks that what the digests list is in the store; this is the
reverse. It works hour by hour of ``@timestamp`` without holding the store's ids:

1. per UTC hour, the events the store holds (one aggregation, :class:`audit._inventory.
   Inventory`) against the events verify found in the store while checking the digests
   (counted per hour by their stored ``@timestamp``); an hour whose two counts agree holds
   nothing else and is not read further (a clean store costs one aggregation);
2. an hour that disagrees is read id by id; an id that no digest read lists (in that hour's
   entries, then in any entry: an event whose time was edited is ``events_altered``
   already) is a suspect;
3. a suspect inside the time range asked for (``--from/--to``) is looked for in the digests
   after the range (an event is listed by a digest that ends after it, sometimes much later:
   a spool replayed after an outage), a day of digests at a time, up to the chains' heads.

What is left is classified by one rule (README, "Tamper evidence"):

* **pending**: ``@timestamp`` within the grace before now (``TAIL_INTERVALS`` of the longest
  digest interval plus ``TAIL_SLACK``): the open interval of a running chain, signed soon.
  Not a finding: a count;
* **unsigned** (a finding, ``events_unsigned``): one dated after now (plus ``TAIL_SLACK``: no
  writer stamps the future, and it would stay "pending" until then) or without a time; any
  other when at its time a chain was signing (a digest's interval covers it, or a chain that
  did not shut down was running since its last digest) or when it is at or after
  ``signed_since`` (the operator's statement that every writer had a key from then on);
* **keyless** (not a finding): a ``backbone`` event whose writer marked it as written without
  a key (``labels.audit_signing = "off"``: only a CLI run without ``--signing-key`` does, and
  the CLIs write nothing but backbone events), before ``signed_since``. A forger can copy the
  mark onto a forged backbone event; on a login or access event it excuses nothing;
* **uncovered** (not a finding): any other, written when no chain was signing and before
  ``signed_since``: a writer without a key, or an event injected into an unsigned period.
  Verify cannot tell those apart, so it lists them without calling them tampering.

An entry of any digest read counts as listed, also of one whose signature fails (that digest
is a finding of its own). Events a retention move copied to a ``-kept`` index keep their ids
(listed: nothing to report; during a move both copies are there, also listed). Retention's
deletions leave nothing behind; ``python -m audit migrate`` writes each event back under its
own id.

Limits: verify per ``--instance`` does not run this (an event names no chain, so another
instance's events would all look unsigned). A spool replayed within the last digest interval
holds old-timestamped events not yet listed: they are reported as unsigned until that
interval's digest is stored (run verify again after one interval: an injected event stays).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from audit._digests import DigestStore
from audit._digestwriter import DEFAULT_DIGEST_INTERVAL
from audit._inventory import HOUR, Inventory, StoredEvent, hour_of
from audit.events import parse_timestamp

__all__ = ["TAIL_SLACK", "UnsignedCheck", "UnsignedReport"]

#: Beyond the grace of two digest intervals: shipping the digest itself, clocks apart.
TAIL_SLACK: Final = timedelta(seconds=60)
#: The grace counts this many digest intervals (as verify's staleness of a chain does).
TAIL_INTERVALS: Final = 2
#: Digests after the range are read this much at a time while suspects are left.
LOOKAHEAD: Final = timedelta(days=1)
_FOREVER: Final = datetime.max.replace(tzinfo=UTC)
_SPAN: Final = ("interval.start", "interval.end")


@dataclass(frozen=True, slots=True)
class UnsignedReport:
    """The events in the store that no digest lists, by the rule of the module docstring."""

    unsigned: tuple[StoredEvent, ...] = ()
    keyless: tuple[StoredEvent, ...] = ()
    uncovered: tuple[StoredEvent, ...] = ()
    pending: int = 0
    hours: int = 0  # hours with events in the range
    hours_read: int = 0  # of those, read id by id (their counts disagreed)
    lookahead_digests: int = 0
    #: Ids stored in more than one document (a retention move in progress, or a copy).
    copies: tuple[str, ...] = field(default=())


def _time(text: Any) -> datetime | None:
    try:
        return parse_timestamp(str(text)).astimezone(UTC)
    except ValueError:
        return None


class _Coverage:
    """When some chain was signing: its digests' intervals, and a running chain's open tail."""

    def __init__(self, digests: Iterable[Mapping[str, Any]], heads: Iterable[Mapping[str, Any]]):
        spans: list[tuple[datetime, datetime]] = []
        for record in digests:
            start, end = _time(record.get("interval.start")), _time(record.get("interval.end"))
            if start is not None and end is not None:
                spans.append((start, end))
        for head in heads:
            end = _time(head.get("interval.end"))
            if end is not None and head.get("chain.closed") is not True:
                spans.append((end, _FOREVER))
        spans.sort()
        merged: list[tuple[datetime, datetime]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        self._starts = [s for s, _e in merged]
        self._spans = merged

    def covers(self, moment: datetime) -> bool:
        at = bisect.bisect_right(self._starts, moment) - 1
        return at >= 0 and moment <= self._spans[at][1]


class UnsignedCheck:
    """Finds the events of ``inventory`` that no digest of ``digests`` lists."""

    def __init__(self, *, inventory: Inventory, digests: DigestStore) -> None:
        self._inventory = inventory
        self._digests = digests

    def run(
        self,
        *,
        loaded: Sequence[Mapping[str, Any]],
        present: Counter[str],
        heads: Sequence[Mapping[str, Any]],
        since: datetime | None,
        until: datetime | None,
        now: datetime,
        signed_since: datetime | None = None,
    ) -> UnsignedReport:
        """``loaded``: the digests verify read (all of them overlapping the range);
        ``present``: per hour, the listed events verify found stored there."""
        stored = self._inventory.hours(since=_floor(since), until=_ceil(until))
        odd = sorted(h for h, n in stored.items() if n != present.get(h, 0))
        if not odd:
            return UnsignedReport(hours=len(stored))
        listed: dict[str, set[str]] = {h: set() for h in odd}
        for event_id, hour in _entries(loaded):
            if hour in listed:
                listed[hour].add(event_id)
        suspects: list[str] = []
        copies: list[str] = []
        for hour in odd:
            mine = listed[hour]
            for event_id, count in self._inventory.ids_in(hour):
                if count > 1:
                    copies.append(event_id)
                if event_id not in mine:
                    suspects.append(event_id)
        del listed
        events = [e for e in self._describe(suspects) if _within(e, since, until)]
        events = _unlisted(events, (event_id for event_id, _h in _entries(loaded)))
        later: list[dict[str, Any]] = []
        if events and until is not None:
            events, later = self._look_ahead(events, until, heads)
        return self._classify(
            events,
            _Coverage([*loaded, *later], heads),
            now=now,
            grace=_grace(heads),
            signed_since=signed_since,
            base=UnsignedReport(
                hours=len(stored),
                hours_read=len(odd),
                lookahead_digests=len(later),
                copies=tuple(copies),
            ),
        )

    def _describe(self, suspects: Sequence[str]) -> list[StoredEvent]:
        named = [s for s in suspects if s]
        found = self._inventory.describe(named) if named else []
        if len(named) != len(suspects):  # documents without an event id: said, not hidden
            missing = len(suspects) - len(named)
            where = f"{missing} document(s) without an event.id"
            found.append(StoredEvent("", "", "", "", where, keyless=False))
        return found

    def _look_ahead(
        self, events: list[StoredEvent], until: datetime, heads: Sequence[Mapping[str, Any]]
    ) -> tuple[list[StoredEvent], list[dict[str, Any]]]:
        """Suspects listed by digests ending at or after ``until`` are not suspects."""
        ends = [t for h in heads if (t := _time(h.get("interval.end"))) is not None]
        last = max(ends, default=until)
        read: list[dict[str, Any]] = []
        cursor = until
        while events and cursor <= last:
            batch = self._digests.records(kind="digest", since=cursor, until=cursor + LOOKAHEAD)
            read += [{k: r.get(k) for k in _SPAN} for r in batch]  # coverage needs no entries
            events = _unlisted(events, (event_id for event_id, _h in _entries(batch)))
            cursor += LOOKAHEAD
        return events, read

    @staticmethod
    def _classify(
        events: Sequence[StoredEvent],
        coverage: _Coverage,
        *,
        now: datetime,
        grace: timedelta,
        signed_since: datetime | None,
        base: UnsignedReport,
    ) -> UnsignedReport:
        unsigned: list[StoredEvent] = []
        keyless: list[StoredEvent] = []
        uncovered: list[StoredEvent] = []
        pending = 0
        for event in events:
            moment = _time(event.timestamp)
            if moment is None or moment > now + TAIL_SLACK:  # no time, or a time to come
                unsigned.append(event)
            elif moment >= now - grace:
                pending += 1
            elif signed_since is not None and moment >= signed_since:
                unsigned.append(event)
            elif event.keyless and event.category == "backbone":
                keyless.append(event)
            elif coverage.covers(moment):
                unsigned.append(event)
            else:
                uncovered.append(event)
        return UnsignedReport(
            unsigned=tuple(unsigned),
            keyless=tuple(keyless),
            uncovered=tuple(uncovered),
            pending=pending,
            hours=base.hours,
            hours_read=base.hours_read,
            lookahead_digests=base.lookahead_digests,
            copies=base.copies,
        )


def _entries(digests: Iterable[Mapping[str, Any]]) -> Iterable[tuple[str, str]]:
    """(event id, hour) of every entry the digests list (an unreadable time: hour "")."""
    for record in digests:
        for entry in record.get("events.entries") or []:
            try:
                hour = hour_of(str(entry[2]))
            except (ValueError, IndexError):
                hour = ""
            yield str(entry[0]), hour


def _unlisted(events: list[StoredEvent], listed: Iterable[str]) -> list[StoredEvent]:
    wanted = {e.event_id for e in events}
    found = {event_id for event_id in listed if event_id in wanted}
    return [e for e in events if e.event_id not in found or not e.event_id]


def _within(event: StoredEvent, since: datetime | None, until: datetime | None) -> bool:
    moment = _time(event.timestamp)
    if moment is None:
        return True
    return (since is None or moment >= since) and (until is None or moment < until)


def _grace(heads: Sequence[Mapping[str, Any]]) -> timedelta:
    intervals = []
    for head in heads:
        try:
            intervals.append(float(head.get("chain.interval_seconds") or 0))
        except (TypeError, ValueError):
            continue
    longest = max([i for i in intervals if i > 0], default=DEFAULT_DIGEST_INTERVAL)
    return TAIL_INTERVALS * timedelta(seconds=longest) + TAIL_SLACK


def _floor(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil(moment: datetime | None) -> datetime | None:
    floor = _floor(moment)
    if moment is None or floor is None:
        return None
    return floor if floor == moment else floor + HOUR
