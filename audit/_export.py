"""The data-subject export for an access request (AVG art. 15; EU Court C-579/21).

Every event about one person, in time order, with a cover section: the period, counts by
category, and each consultation of their data by someone else with its date and purposes (the
route family and data categories), as C-579/21 asks. "About the person" is:

* every event where they act (``user.id``) or are named as the target (``user.target.id``) by
  their issuer-qualified user id, matched exactly (two issuers' same subject never merge);
* every personal-data access event whose target is one of their **platform ids** (the ids the
  platform uses in its paths, such as ``stu-1`` in ``/api/schools/school-a/students/stu-1``),
  under that id's tenant. The platform provides which ids are whose (:mod:`audit._persons`,
  setting ``audit.person_map_file``); the cover lists the ids used and where they came from,
  and says so when no map was configured (the export then misses others' reads by id).

Other people's identities in the events are replaced by their roles (and their address,
browser and token hash left out), unless the exporter is built with
``pseudonymise_staff=False`` (setting ``audit.export_pseudonymise_staff``). Scope is enforced
as for search (:func:`audit._search.scope_for`): a school admin exports only what their own
tenant may see. Every export is an ``audit_export`` event.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from audit._persons import PersonDirectory, PlatformId
from audit._search import BadFilter, Filters, Requester, SearchRefused, backbone_event, scope_for
from audit._sink import AuditSink
from audit._store import PLATFORM_ID_CATEGORY, AuditStore, Page, Scope
from audit.events import FIELDS, Action

__all__ = [
    "ANOTHER_PERSON",
    "EXPORT_COLUMNS",
    "OTHER_PERSON_FIELDS",
    "SubjectExport",
    "SubjectExporter",
]

#: The CSV columns: every schema field, in schema order.
EXPORT_COLUMNS: Final = tuple(f.name for f in FIELDS)
PAGE_SIZE: Final = 1000
#: Fields that identify the person acting; left out when that is someone else.
OTHER_PERSON_FIELDS: Final = ("source.ip", "user_agent.original", "audit.token_hash")
#: What the export shows instead of the id of someone else whose data the subject read.
ANOTHER_PERSON: Final = "another person"
#: Cells starting with these are prefixed with ``'`` so spreadsheets do not run them.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class SubjectExport:
    """The cover section and the events (oldest first) about one subject."""

    cover: dict[str, Any]
    events: list[dict[str, Any]]

    def to_json(self) -> bytes:
        return orjson.dumps({"cover": self.cover, "events": self.events})

    def to_csv(self) -> str:
        """The cover as ``cover,key,value`` rows, an empty row, then one row per event."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        for key, value in self.cover.items():
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            writer.writerow(["cover", key, _cell(text)])
        writer.writerow([])
        writer.writerow(EXPORT_COLUMNS)
        for event in self.events:
            writer.writerow([_cell(_text(event.get(name))) for name in EXPORT_COLUMNS])
        return out.getvalue()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


class _Person:
    """Who an export is about: the user id and their platform ids (what names them in events)."""

    def __init__(self, user_id: str, platform_ids: tuple[PlatformId, ...]) -> None:
        self.user_id = user_id
        self._any_tenant = {p.person_id for p in platform_ids if not p.tenant}
        self._by_tenant = {(p.tenant, p.person_id) for p in platform_ids if p.tenant}

    def is_target(self, event: dict[str, Any]) -> bool:
        """Whether the event's target is this person (by user id, or by platform id)."""
        target = event.get("user.target.id")
        if target is None:
            return False
        if target == self.user_id:
            return True
        if event.get("audit.category") != PLATFORM_ID_CATEGORY:
            return False
        tenant = (event.get("labels") or {}).get("data_tenant")
        return target in self._any_tenant or (tenant, target) in self._by_tenant


class SubjectExporter:
    """Builds subject exports from ``store`` and records each in ``sink``.

    ``persons`` is the platform's person map (which platform ids are whose); without one, an
    export finds others' reads only where the event names the person's user id."""

    def __init__(
        self,
        *,
        store: AuditStore,
        sink: AuditSink,
        pseudonymise_staff: bool = True,
        persons: PersonDirectory | None = None,
    ) -> None:
        self._store = store
        self._sink = sink
        self._pseudonymise = pseudonymise_staff
        self._persons = persons

    def export(self, who: Requester, subject: str) -> SubjectExport:
        """Everything about ``subject`` that ``who`` may see; raises SearchRefused/BadFilter,
        and :class:`audit.errors.PersonMapInvalid` when the person map cannot be read.

        ``subject`` is issuer-qualified (``issuer|subject``, as ``user.id`` records people) and
        matched exactly: the same subject at two issuers is two people and never merges."""
        if not subject or len(subject) > 512 or not subject.isprintable():
            raise BadFilter("subject: empty, too long or not printable")
        issuer, bar, local = subject.rpartition("|")
        if not bar or not issuer or not local:
            raise BadFilter("subject: give the issuer-qualified user id, issuer|subject")
        filters = Filters(subjects=(subject,))
        try:
            scope = scope_for(who, filters)
        except SearchRefused as exc:
            self._emit(who, subject, outcome="failure", labels={"refused": str(exc)})
            raise
        platform_ids = self._persons.platform_ids(subject) if self._persons is not None else ()
        scope = replace(scope, platform_ids=[(p.tenant, p.person_id) for p in platform_ids])
        person = _Person(subject, platform_ids)
        events = [self._shown(event, person) for event in self._all(scope)]
        cover = _cover(person, events)
        cover["platform_ids"] = {
            "source": self._persons.source if self._persons is not None else None,
            "ids": [{"tenant": p.tenant or None, "id": p.person_id} for p in platform_ids],
        }
        if self._persons is None:
            cover["platform_ids"]["note"] = (
                "no person map configured: reads of this person's records by platform id "
                "are not included"
            )
        export = SubjectExport(cover, events)
        self._emit(
            who,
            subject,
            outcome="success",
            labels={"results": str(len(events)), "platform_ids": str(len(platform_ids))},
        )
        return export

    def _all(self, scope: Scope) -> Iterator[dict[str, Any]]:
        after: Page | None = None
        while True:
            page = self._store.search(scope, size=PAGE_SIZE, after=after)
            yield from page
            if len(page) < PAGE_SIZE:
                return
            after = Page.of(page[-1])

    def _shown(self, event: dict[str, Any], person: _Person) -> dict[str, Any]:
        """The event as the subject receives it. With pseudonymisation, another person acting
        appears by role only (and without their address, browser or token hash), and another
        person whose data the subject read appears as ``another person``."""
        if not self._pseudonymise:
            return event
        shown = dict(event)
        actor = event.get("user.id")
        if actor not in (None, person.user_id):
            roles = event.get("user.roles") or []
            shown["user.id"] = "role:" + (",".join(roles) if roles else "unknown")
            for name in OTHER_PERSON_FIELDS:
                shown.pop(name, None)
        if event.get("user.target.id") is not None and not person.is_target(event):
            shown["user.target.id"] = ANOTHER_PERSON
        return shown

    def _emit(self, who: Requester, subject: str, *, outcome: str, labels: dict[str, Any]) -> None:
        event = backbone_event(Action.AUDIT_EXPORT, who, outcome=outcome, labels=labels)
        event["user.target.id"] = subject
        self._sink.emit(event)


def _cover(person: _Person, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Period, counts by category, and each consultation of the person's data by someone
    else (``by`` as shown: a role when pseudonymised)."""
    consultations = [
        {
            "date": event["@timestamp"],
            "by": event.get("user.id"),
            "purposes": (event.get("labels") or {}).get("route_family", ""),
            "data_categories": event.get("audit.data_categories") or [],
        }
        for event in events
        if person.is_target(event) and event.get("user.id") != person.user_id
    ]
    return {
        "subject": person.user_id,
        "generated_at": datetime.now(UTC).isoformat(),
        "period": {
            "first": events[0]["@timestamp"] if events else None,
            "last": events[-1]["@timestamp"] if events else None,
        },
        "events": len(events),
        "counts_by_category": dict(Counter(str(e.get("audit.category")) for e in events)),
        "consultations": consultations,
    }
