"""The data-subject export: everything about one person, in order, with a cover."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit import AuditStore, MemorySink, OpenSearchStore, PersonMap, Record, SQLiteStore
from audit._export import SubjectExporter
from audit._search import BadFilter, Requester, SearchRefused
from audit.errors import PersonMapInvalid
from tests.audit.test_store_contract import record, write

OFFICER = Requester("iss|sec", frozenset({"security_officer"}), None)
ADMIN_A = Requester("iss|adm", frozenset({"school_admin"}), "school-a")
PUPIL = "iss|pupil"


@pytest.fixture(params=["sqlite", "opensearch"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    made: AuditStore
    if request.param == "sqlite":
        made = SQLiteStore(path=tmp_path / "audit.db")
    else:
        node = request.getfixturevalue("opensearch_node")
        prefix = request.getfixturevalue("index_prefix")
        made = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
    made.ensure_schema()
    yield made
    made.close()


def seed(store: AuditStore) -> dict[str, str]:
    login = record(
        0, **{"event.action": "login_success", "user.id": PUPIL, "organization.id": "school-a"}
    )
    read = record(
        5,
        **{
            "event.action": "personal_data_access",
            "user.id": "iss|teacher",
            "user.roles": ["teacher"],
            "user.target.id": PUPIL,
            "organization.id": "school-a",
            "audit.data_categories": ["b"],
            "labels": {"route_family": "school_students", "data_tenant": "school-a"},
        },
    )
    elsewhere = record(9, **{"user.id": PUPIL, "organization.id": "school-b"})
    other = record(3, **{"user.id": "iss|someone-else", "organization.id": "school-a"})
    write(store, login, read, elsewhere, other)
    return {"login": login.event_id, "read": read.event_id, "elsewhere": elsewhere.event_id}


class TestExport:
    def test_actor_and_target_events_in_time_order(self, store: AuditStore) -> None:
        """The export holds the person's own events and others' access to their data, in order."""
        made = seed(store)
        export = SubjectExporter(store=store, sink=MemorySink()).export(OFFICER, PUPIL)
        assert [e["event.id"] for e in export.events] == [
            made["login"],
            made["read"],
            made["elsewhere"],
        ]

    def test_cover_states_consultations_with_date_and_purpose(self, store: AuditStore) -> None:
        """The cover lists each consultation by someone else: date, role, purpose (C-579/21)."""
        seed(store)
        cover = SubjectExporter(store=store, sink=MemorySink()).export(OFFICER, PUPIL).cover
        [consultation] = cover["consultations"]
        assert consultation["purposes"] == "school_students"
        assert consultation["data_categories"] == ["b"]
        assert consultation["by"] == "role:teacher"
        assert consultation["date"].startswith("2026-03-10T12:05")
        assert cover["events"] == 3
        assert cover["counts_by_category"] == {
            "authentication": 1,
            "personal_data_access": 1,
            "access_denied": 1,
        }

    def test_staff_identity_kept_when_not_pseudonymised(self, store: AuditStore) -> None:
        """With pseudonymise_staff=False the staff member's id stays."""
        seed(store)
        exporter = SubjectExporter(store=store, sink=MemorySink(), pseudonymise_staff=False)
        users = [e["user.id"] for e in exporter.export(OFFICER, PUPIL).events]
        assert "iss|teacher" in users

    def test_other_persons_details_left_out(self, store: AuditStore) -> None:
        """Another person acting appears by role, without their address, browser or token
        hash; another person whose data the subject read appears as 'another person'."""
        read_me = record(
            0,
            **{
                "user.id": "iss|teacher",
                "user.roles": ["teacher"],
                "user.target.id": PUPIL,
                "source.ip": "198.51.100.7",
                "user_agent.original": "TeacherBrowser/1.0",
                "audit.token_hash": "abc123",
            },
        )
        i_read = record(1, **{"user.id": PUPIL, "user.target.id": "iss|classmate"})
        write(store, read_me, i_read)
        first, second = (
            SubjectExporter(store=store, sink=MemorySink()).export(OFFICER, PUPIL).events
        )
        assert first["user.id"] == "role:teacher"
        assert not {"source.ip", "user_agent.original", "audit.token_hash"} & set(first)
        assert first["user.target.id"] == PUPIL
        assert (second["user.id"], second["user.target.id"]) == (PUPIL, "another person")

    def test_same_subject_at_two_issuers_never_merges(self, store: AuditStore) -> None:
        """'42' at one issuer and '42' at another are two people: each export holds its own."""
        mine = record(0, **{"user.id": "https://idp-a.example|42"})
        read = record(1, **{"user.id": "iss|t", "user.target.id": "https://idp-a.example|42"})
        theirs = record(2, **{"user.id": "https://idp-b.example|42"})
        other_read = record(3, **{"user.id": "iss|t", "user.target.id": "https://idp-b.example|42"})
        write(store, mine, read, theirs, other_read)
        export = SubjectExporter(store=store, sink=MemorySink()).export(
            OFFICER, "https://idp-a.example|42"
        )
        assert [e["event.id"] for e in export.events] == [mine.event_id, read.event_id]

    @pytest.mark.parametrize("subject", ["42", "|42", "iss|", "iss-without-bar"])
    def test_unqualified_subject_is_refused(self, store: AuditStore, subject: str) -> None:
        """A subject without its issuer could be anyone's: the export refuses it."""
        with pytest.raises(BadFilter, match="issuer"):
            SubjectExporter(store=store, sink=MemorySink()).export(OFFICER, subject)

    def test_school_admin_exports_own_tenant_only(self, store: AuditStore) -> None:
        """A school admin's export leaves out the person's events at another tenant."""
        made = seed(store)
        export = SubjectExporter(store=store, sink=MemorySink()).export(ADMIN_A, PUPIL)
        assert made["elsewhere"] not in {e["event.id"] for e in export.events}
        assert len(export.events) == 2

    def test_export_is_audited(self, store: AuditStore) -> None:
        """An export emits audit_export naming the subject and the number of events."""
        seed(store)
        sink = MemorySink()
        SubjectExporter(store=store, sink=sink).export(OFFICER, PUPIL)
        [event] = sink.events
        assert event["event.action"] == "audit_export"
        assert event["user.target.id"] == PUPIL
        assert event["labels"]["results"] == "3"

    def test_refused_export_is_audited(self, store: AuditStore) -> None:
        """A teacher may not export; the refusal is recorded."""
        sink = MemorySink()
        teacher = Requester("iss|t", frozenset({"teacher"}), "school-a")
        with pytest.raises(SearchRefused):
            SubjectExporter(store=store, sink=sink).export(teacher, PUPIL)
        assert sink.events[0]["event.outcome"] == "failure"


CLASSMATE = "iss|classmate"
#: The platform's map: PUPIL is stu-1 at school-a, CLASSMATE stu-2 at school-a.
PERSONS = PersonMap(
    [(PUPIL, "school-a", "stu-1"), (CLASSMATE, "school-a", "stu-2"), (PUPIL, "", "p-77")]
)


def read_of(minutes: int, target: str, tenant: str, **extra: Any) -> Record:
    """A teacher's read of a pupil's record as the gateway records it: the bare platform id."""
    fields: dict[str, Any] = {
        "event.action": "personal_data_access",
        "user.id": "iss|teacher",
        "user.roles": ["teacher"],
        "organization.id": tenant,
        "user.target.id": target,
        "url.path": f"/api/schools/{tenant}/students/{target}",
        "audit.data_categories": ["a", "b"],
        "labels": {"route_family": "school_students", "data_tenant": tenant},
    }
    fields.update(extra)
    return record(minutes, **fields)


class TestPlatformIds:
    def test_read_by_platform_id_is_in_the_export(self, store: AuditStore) -> None:
        """A read of stu-1 at school-a is in PUPIL's export, in time order with their own
        events, and listed as a consultation on the cover."""
        mine = record(0, **{"user.id": PUPIL, "event.action": "login_success"})
        read = read_of(5, "stu-1", "school-a")
        later = record(9, **{"user.id": PUPIL})
        write(store, later, read, mine)
        export = SubjectExporter(store=store, sink=MemorySink(), persons=PERSONS).export(
            OFFICER, PUPIL
        )
        assert [e["event.id"] for e in export.events] == [
            mine.event_id,
            read.event_id,
            later.event_id,
        ]
        [consultation] = export.cover["consultations"]
        assert (consultation["by"], consultation["purposes"]) == ("role:teacher", "school_students")
        assert export.events[1]["user.target.id"] == "stu-1"  # their own id, not "another person"

    def test_classmates_read_is_not_in_the_export(self, store: AuditStore) -> None:
        """A read of stu-2 (another pupil) is in neither the cover nor the events of PUPIL."""
        write(store, read_of(0, "stu-2", "school-a"))
        exporter = SubjectExporter(store=store, sink=MemorySink(), persons=PERSONS)
        assert exporter.export(OFFICER, PUPIL).events == []
        assert len(exporter.export(OFFICER, CLASSMATE).events) == 1

    def test_same_id_under_another_tenant_is_not_theirs(self, store: AuditStore) -> None:
        """stu-1 at school-b is someone else: not in PUPIL's export."""
        write(store, read_of(0, "stu-1", "school-b"))
        export = SubjectExporter(store=store, sink=MemorySink(), persons=PERSONS).export(
            OFFICER, PUPIL
        )
        assert export.events == []

    def test_platform_wide_id_matches_under_any_tenant(self, store: AuditStore) -> None:
        """An id mapped without a tenant matches reads under every tenant."""
        write(store, read_of(0, "p-77", "school-b"))
        export = SubjectExporter(store=store, sink=MemorySink(), persons=PERSONS).export(
            OFFICER, PUPIL
        )
        assert len(export.events) == 1

    def test_only_personal_data_events_match_by_platform_id(self, store: AuditStore) -> None:
        """An event of another kind whose target happens to equal the id is not theirs."""
        write(
            store,
            read_of(0, "stu-1", "school-a", **{"event.action": "access_denied"}),
        )
        export = SubjectExporter(store=store, sink=MemorySink(), persons=PERSONS).export(
            OFFICER, PUPIL
        )
        assert export.events == []

    def test_school_admin_of_another_tenant_sees_no_read(self, store: AuditStore) -> None:
        """The scope still applies: school-b's admin does not get school-a's read."""
        write(store, read_of(0, "stu-1", "school-a"))
        admin_b = Requester("iss|adm-b", frozenset({"school_admin"}), "school-b")
        export = SubjectExporter(store=store, sink=MemorySink(), persons=PERSONS).export(
            admin_b, PUPIL
        )
        assert export.events == []

    def test_cover_names_the_ids_and_their_source(self, store: AuditStore) -> None:
        """The cover lists the platform ids used and the map they came from."""
        export = SubjectExporter(store=store, sink=MemorySink(), persons=PERSONS).export(
            OFFICER, PUPIL
        )
        assert export.cover["platform_ids"] == {
            "source": "person map",
            "ids": [{"tenant": None, "id": "p-77"}, {"tenant": "school-a", "id": "stu-1"}],
        }

    def test_without_a_map_the_cover_says_reads_by_id_are_missing(self, store: AuditStore) -> None:
        """Without a person map the cover warns that reads by platform id are not included."""
        write(store, read_of(0, "stu-1", "school-a"))
        export = SubjectExporter(store=store, sink=MemorySink()).export(OFFICER, PUPIL)
        assert export.events == []
        assert "not included" in export.cover["platform_ids"]["note"]

    def test_unreadable_map_stops_the_export(self, store: AuditStore) -> None:
        """A map that cannot be read stops the export rather than missing reads."""

        class Broken:
            source = "broken"

            def platform_ids(self, user_id: str) -> tuple[()]:
                raise PersonMapInvalid("unreadable")

        with pytest.raises(PersonMapInvalid):
            SubjectExporter(store=store, sink=MemorySink(), persons=Broken()).export(OFFICER, PUPIL)


class TestFormats:
    def test_json_round_trips(self, store: AuditStore) -> None:
        """The JSON form holds the cover and the events."""
        seed(store)
        export = SubjectExporter(store=store, sink=MemorySink()).export(OFFICER, PUPIL)
        assert orjson.loads(export.to_json())["events"] == export.events

    def test_csv_has_cover_then_one_row_per_event(self, store: AuditStore) -> None:
        """The CSV form starts with cover rows, then a header and one row per event."""
        seed(store)
        export = SubjectExporter(store=store, sink=MemorySink()).export(OFFICER, PUPIL)
        rows = list(csv.reader(io.StringIO(export.to_csv())))
        blank = rows.index([])
        assert all(row[0] == "cover" for row in rows[:blank])
        header, *events = rows[blank + 1 :]
        assert len(events) == 3
        assert events[0][header.index("user.id")] == PUPIL

    def test_csv_neutralises_formulas(self, store: AuditStore) -> None:
        """A cell that a spreadsheet would run as a formula is prefixed with a quote."""
        write(store, record(0, **{"user.id": PUPIL, "url.path": "=HYPERLINK(1)"}))
        text = SubjectExporter(store=store, sink=MemorySink()).export(OFFICER, PUPIL).to_csv()
        assert "'=HYPERLINK(1)" in text
