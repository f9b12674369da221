"""Audit search, event detail, pivots and exports in the console."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from console import CONSOLE_PATH
from tests.console._support import World, person, world

SEARCH = CONSOLE_PATH + "/audit"


def event_links(page: str) -> list[str]:
    return re.findall(r'href="/_gateway/console/audit/events/([^"]+)"', page)


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[World]:
    yield from world(tmp_path, person("school_admin", tenant="school-a", subject="admin-a"))


@pytest.fixture
def student(tmp_path: Path) -> Iterator[World]:
    yield from world(tmp_path, person("student", tenant="school-a", subject="pupil"))


class TestSearch:
    def test_filters_narrow_the_result(self, officer: World) -> None:
        """A subject filter shows that person's events only, with the exact total."""
        ids = officer.add_events({"user.id": "iss|p"}, {"user.id": "iss|q"}, {"user.id": "iss|p"})
        page = officer.client.get(SEARCH, params={"subject": "iss|p"}).text
        assert sorted(event_links(page)) == sorted([ids[0], ids[2]])
        assert "<strong>2</strong>" in page

    def test_blank_fields_mean_any(self, officer: World) -> None:
        """The empty inputs a submitted form sends do not filter (nor fail)."""
        officer.add_events({"user.id": "iss|p"})
        answer = officer.client.get(SEARCH, params={"subject": "", "tenant": "", "q": ""})
        assert answer.status_code == 200
        assert len(event_links(answer.text)) == 1

    def test_paging_follows_the_cursor(self, officer: World) -> None:
        """With 25 per page, the next-page link shows the rest, none twice."""
        ids = officer.add_events(*({"user.id": f"iss|{n}"} for n in range(30)))
        first = officer.client.get(SEARCH, params={"size": "25", "order": "asc"}).text
        assert event_links(first) == ids[:25]
        following = re.search(r'href="(/_gateway/console/audit\?[^"]+)" rel="next"', first)
        assert following is not None
        second = officer.client.get(following.group(1).replace("&amp;", "&")).text
        assert event_links(second) == ids[25:]
        assert 'rel="next"' not in second

    def test_bad_filter_is_a_400_naming_it(self, officer: World) -> None:
        """A malformed filter is a 400 page that names the parameter."""
        answer = officer.client.get(SEARCH, params={"source_ip": "not-an-ip"})
        assert answer.status_code == 400
        assert "source_ip" in answer.text

    def test_search_is_audited(self, officer: World) -> None:
        """Each search page is an audit_search event with the filters."""
        officer.client.get(SEARCH, params={"action": "logout"})
        [event] = officer.emitted("audit_search")
        assert "logout" in event["labels"]["filters"]

    def test_school_admin_sees_own_tenant_only(self, admin: World) -> None:
        """A school admin's search shows their tenant's events, never another's."""
        ids = admin.add_events({"organization.id": "school-a"}, {"organization.id": "school-b"})
        assert event_links(admin.client.get(SEARCH).text) == [ids[0]]

    def test_school_admin_asking_another_tenant_refused(self, admin: World) -> None:
        """Asking for another tenant is refused with a 403 page, not widened."""
        assert admin.client.get(SEARCH, params={"tenant": "school-b"}).status_code == 403

    def test_other_roles_refused(self, student: World) -> None:
        """Reached at all (the policy would stop a student first), search refuses: 403."""
        assert student.client.get(SEARCH).status_code == 403


class TestEvent:
    def test_detail_shows_fields_and_pivots(self, officer: World) -> None:
        """The detail page lists the fields and links to the same person, IP and request."""
        [event_id] = officer.add_events(
            {
                "user.id": "iss|p",
                "source.ip": "192.0.2.7",
                "trace.id": "req-9",
                "labels": {"k": "v"},
            }
        )
        page = officer.client.get(f"{SEARCH}/events/{event_id}").text
        assert "labels.k" in page
        assert "/_gateway/console/audit?subject=iss%7Cp" in page
        assert "/_gateway/console/audit?source_ip=192.0.2.7" in page
        assert "/_gateway/console/audit?request_id=req-9" in page

    def test_unknown_event_is_404(self, officer: World) -> None:
        """An id that matches nothing is a 404 page."""
        assert officer.client.get(f"{SEARCH}/events/nope").status_code == 404

    def test_school_admin_cannot_open_another_tenants_event(self, admin: World) -> None:
        """Another tenant's event is not found for a school admin (no hint it exists)."""
        [event_id] = admin.add_events({"organization.id": "school-b"})
        assert admin.client.get(f"{SEARCH}/events/{event_id}").status_code == 404

    def test_detail_is_audited(self, officer: World) -> None:
        """Opening an event is an audit_search event naming it."""
        [event_id] = officer.add_events({"user.id": "iss|p"})
        officer.client.get(f"{SEARCH}/events/{event_id}")
        [event] = officer.emitted("audit_search")
        assert event["labels"]["event_id"] == event_id

    def test_markup_in_events_is_escaped(self, officer: World) -> None:
        """An attacker-chosen value is shown as text, never as markup."""
        [event_id] = officer.add_events({"url.path": "/<script>alert(1)</script>"})
        page = officer.client.get(f"{SEARCH}/events/{event_id}").text
        assert "<script>" not in page
        assert "&lt;script&gt;" in page


class TestExport:
    def test_csv_export_of_the_current_result(self, officer: World) -> None:
        """The export holds exactly the filtered events, as CSV, and is an audit_export."""
        officer.add_events({"user.id": "iss|p"}, {"user.id": "iss|q"})
        answer = officer.client.get(
            SEARCH + "/export", params={"subject": "iss|q", "format": "csv"}
        )
        assert answer.status_code == 200
        assert answer.headers["content-disposition"].startswith("attachment")
        rows = list(csv.reader(io.StringIO(answer.text)))
        header = rows.index(next(r for r in rows if r and r[0] == "@timestamp"))
        users = [r[rows[header].index("user.id")] for r in rows[header + 1 :]]
        assert users == ["iss|q"]
        [event] = officer.emitted("audit_export")
        assert event["labels"]["results"] == "1"

    def test_json_export(self, officer: World) -> None:
        """The JSON export has the cover with the filters and the events."""
        officer.add_events({"user.id": "iss|p"})
        answer = officer.client.get(SEARCH + "/export", params={"format": "json"})
        body = json.loads(answer.content)
        assert body["cover"]["events"] == 1
        assert len(body["events"]) == 1

    def test_school_admin_export_is_scoped(self, admin: World) -> None:
        """A school admin's export holds their tenant's events only."""
        admin.add_events({"organization.id": "school-a"}, {"organization.id": "school-b"})
        body = json.loads(admin.client.get(SEARCH + "/export", params={"format": "json"}).content)
        assert [e["organization.id"] for e in body["events"]] == ["school-a"]


class TestSubjectExport:
    def test_export_of_one_person(self, officer: World) -> None:
        """The subject export has that person's events, with the cover, audited."""
        officer.add_events({"user.id": "iss|p"}, {"user.id": "iss|q"})
        answer = officer.client.get(
            CONSOLE_PATH + "/subjects/export", params={"subject": "iss|p", "format": "json"}
        )
        body = json.loads(answer.content)
        assert body["cover"]["subject"] == "iss|p"
        assert [e["user.id"] for e in body["events"]] == ["iss|p"]
        assert officer.emitted("audit_export")

    def test_school_admin_exports_own_tenant_only(self, admin: World) -> None:
        """A school admin's subject export leaves out the person's events elsewhere."""
        admin.add_events(
            {"user.id": "iss|p", "organization.id": "school-a"},
            {"user.id": "iss|p", "organization.id": "school-b"},
        )
        answer = admin.client.get(
            CONSOLE_PATH + "/subjects/export", params={"subject": "iss|p", "format": "json"}
        )
        body = json.loads(answer.content)
        assert [e["organization.id"] for e in body["events"]] == ["school-a"]

    def test_subject_required(self, officer: World) -> None:
        """Without a subject the export is a 400 page."""
        assert officer.client.get(CONSOLE_PATH + "/subjects/export").status_code == 400
