"""Audit search: filters, scope by role (no widening), paging, and the audit of searches."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit import AuditStore, MemorySink, OpenSearchStore, Scope, SQLiteStore
from audit._search import (
    AuditSearch,
    BadFilter,
    Cursor,
    CursorCodec,
    Filters,
    Requester,
    SearchRefused,
    parse_filters,
    scope_digest,
    scope_for,
)
from audit._store import Page
from audit.errors import PointInTimeGone
from tests.audit.test_store_contract import record, write

OFFICER = Requester("iss|sec", frozenset({"security_officer"}), None)
RESPONDER = Requester("iss|ir", frozenset({"incident_responder"}), None)
ADMIN_A = Requester("iss|adm", frozenset({"school_admin"}), "school-a")


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


class TestParseFilters:
    def test_every_filter(self) -> None:
        """Each query parameter lands in its filter, repeated ones as a list."""
        got = parse_filters(
            {
                "subject": ["iss|1", "iss|2"],
                "target": ["42"],
                "tenant": ["school-a"],
                "source_ip": ["192.0.2.0/24"],
                "category": ["access_denied"],
                "action": ["access_denied"],
                "outcome": ["failure"],
                "status": ["403"],
                "request_id": ["req-1"],
                "rule": ["r1"],
                "since": ["2026-03-01T00:00:00Z"],
                "until": ["2026-03-02T00:00:00+01:00"],
                "q": ["students"],
            }
        )
        assert got == Filters(
            subjects=("iss|1", "iss|2"),
            target_ids=("42",),
            tenants=("school-a",),
            source_ips=("192.0.2.0/24",),
            categories=("access_denied",),
            actions=("access_denied",),
            outcomes=("failure",),
            status_codes=(403,),
            trace_ids=("req-1",),
            rule_names=("r1",),
            since=datetime(2026, 3, 1, tzinfo=UTC),
            until=datetime(2026, 3, 1, 23, tzinfo=UTC),
            text="students",
        )

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"source_ip": ["not-an-ip"]}, "source_ip"),
            ({"status": ["abc"]}, "status"),
            ({"status": ["99"]}, "status"),
            ({"category": ["nope"]}, "category"),
            ({"action": ["drop_tables"]}, "action"),
            ({"outcome": ["maybe"]}, "outcome"),
            ({"since": ["yesterday"]}, "since"),
            ({"since": ["2026-03-01T00:00:00"]}, "since"),
            ({"since": ["2026-03-02T00:00:00Z"], "until": ["2026-03-01T00:00:00Z"]}, "before"),
            ({"since": ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"]}, "once"),
            ({"q": ["   "]}, "q"),
            ({"subject": ["a\nb"]}, "subject"),
            ({"colour": ["red"]}, "unknown"),
            ({"tenant": ["t"] * 101}, "at most"),
        ],
    )
    def test_bad_filter_names_the_parameter(
        self, params: dict[str, list[str]], message: str
    ) -> None:
        """A malformed filter is refused with a message naming it."""
        with pytest.raises(BadFilter, match=message):
            parse_filters(params)


class TestScopeFor:
    @pytest.mark.parametrize("who", [OFFICER, RESPONDER])
    def test_security_roles_search_everything(self, who: Requester) -> None:
        """Security staff get exactly the filters they asked for, any tenant."""
        scope = scope_for(who, Filters(tenants=("school-b",), actions=("logout",)))
        assert scope == Scope(tenants=("school-b",), actions=("logout",))

    def test_admin_without_tenant_filter_gets_own_tenant(self) -> None:
        """A school admin's search is confined to their own tenant."""
        assert scope_for(ADMIN_A, Filters()).tenants == ("school-a",)

    def test_admin_naming_own_tenant_is_allowed(self) -> None:
        """Naming one's own tenant is allowed and changes nothing."""
        assert scope_for(ADMIN_A, Filters(tenants=("school-a",))).tenants == ("school-a",)

    @pytest.mark.parametrize(
        "tenants",
        [("school-b",), ("school-a", "school-b"), ("*",), ("school-*",), ("",), ("SCHOOL-A",)],
    )
    def test_admin_cannot_widen_by_tenant(self, tenants: tuple[str, ...]) -> None:
        """Another tenant, a list, a wildcard or a case variant is refused."""
        with pytest.raises(SearchRefused):
            scope_for(ADMIN_A, Filters(tenants=tenants))

    @pytest.mark.parametrize(
        "filters",
        [
            Filters(subjects=("iss|someone-at-b",)),
            Filters(text="*"),
            Filters(source_ips=("0.0.0.0/0",)),
            Filters(categories=("backbone",), actions=("audit_search",)),
        ],
    )
    def test_admin_other_filters_keep_tenant(self, filters: Filters) -> None:
        """Other filters only narrow: the admin's tenant condition is always there."""
        assert scope_for(ADMIN_A, filters).tenants == ("school-a",)

    @pytest.mark.parametrize(
        "who",
        [
            Requester("iss|t", frozenset({"teacher"}), "school-a"),
            Requester("iss|c", frozenset({"compliance_reviewer"}), None),
            Requester("iss|p", frozenset({"platform_admin"}), None),
            Requester(None, frozenset(), None),
            Requester("iss|a", frozenset({"school_admin"}), None),
        ],
    )
    def test_others_are_refused(self, who: Requester) -> None:
        """Any other role (or a school admin without a tenant) may not search."""
        with pytest.raises(SearchRefused):
            scope_for(who, Filters())


class TestAuditSearch:
    def test_admin_sees_own_tenant_and_data_tenant_only(self, store: AuditStore) -> None:
        """Run against the store, a school admin finds their tenant's events and nothing else."""
        own = record(0, **{"organization.id": "school-a"})
        data = record(1, **{"organization.id": "sup", "labels": {"data_tenant": "school-a"}})
        other = record(2, **{"organization.id": "school-b"})
        write(store, own, data, other)
        result = AuditSearch(store=store, sink=MemorySink()).search(ADMIN_A, Filters())
        assert {e["event.id"] for e in result.events} == {own.event_id, data.event_id}
        assert (result.total.value, result.total.exact) == (2, True)

    def test_search_is_audited(self, store: AuditStore) -> None:
        """A search emits audit_search with who, the filters and how many results."""
        write(store, record(0, **{"event.outcome": "failure"}), record(1))
        sink = MemorySink()
        AuditSearch(store=store, sink=sink).search(OFFICER, Filters(outcomes=("failure",)))
        [event] = sink.events
        assert event["event.action"] == "audit_search"
        assert event["event.outcome"] == "success"
        assert event["user.id"] == "iss|sec"
        assert orjson.loads(event["labels"]["filters"]) == {"outcomes": ["failure"]}
        assert event["labels"]["results"] == "1"

    def test_refusal_is_audited(self, store: AuditStore) -> None:
        """A refused search is recorded as a failed audit_search, then raised."""
        sink = MemorySink()
        with pytest.raises(SearchRefused):
            AuditSearch(store=store, sink=sink).search(ADMIN_A, Filters(tenants=("school-b",)))
        [event] = sink.events
        assert (event["event.action"], event["event.outcome"]) == ("audit_search", "failure")

    @pytest.mark.parametrize("newest_first", [False, True])
    def test_pages_across_ten_thousand_without_gaps_or_repeats(
        self, store: AuditStore, newest_first: bool
    ) -> None:
        """Cursor paging over 10,050 events returns each once, sorted, and the total says
        'at least 10,000'."""
        written = [record(i // 7) for i in range(10_050)]  # many events share a timestamp
        for start in range(0, len(written), 2000):
            store.write(written[start : start + 2000])
        store.refresh()
        search = AuditSearch(store=store, sink=MemorySink())
        seen: list[tuple[str, str]] = []
        cursor = None
        while True:
            result = search.search(
                OFFICER, Filters(), size=1000, cursor=cursor, newest_first=newest_first
            )
            seen += [(e["@timestamp"], e["event.id"]) for e in result.events]
            cursor = result.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(written) == len(set(seen))
        assert seen == sorted(seen, reverse=newest_first)
        assert (result.total.value, result.total.exact) == (10_000, False)


def _flip(text: str, at: int) -> str:
    """``text`` with the base64 character at ``at`` changed."""
    swapped = "A" if text[at] != "A" else "B"
    return text[:at] + swapped + text[at + 1 :]


class TestCursor:
    codec = CursorCodec(key=b"k" * 32)
    cursor = Cursor(Page("2026-03-10T12:00:00Z", "e1"), True, "pit-1", "d" * 32)

    def test_round_trip(self) -> None:
        """A cursor decodes to what was encoded."""
        assert self.codec.decode(self.codec.encode(self.cursor)) == self.cursor

    def test_garbage_is_bad_filter(self) -> None:
        """A cursor that does not decode is a bad filter."""
        with pytest.raises(BadFilter, match="cursor"):
            self.codec.decode("!!!")

    @pytest.mark.parametrize("at", [0, 5, 30, -3])
    def test_altered_cursor_is_refused(self, at: int) -> None:
        """Changing any part (tag or payload) makes the cursor invalid."""
        text = self.codec.encode(self.cursor)
        with pytest.raises(BadFilter, match="altered"):
            self.codec.decode(_flip(text, at % len(text)))

    def test_forged_payload_without_key_is_refused(self) -> None:
        """A cursor written by hand (unsigned, as the old format was) is refused."""
        payload = orjson.dumps([1, "2026-03-10T12:00:00Z", "e1", "asc", None, "d" * 32])
        text = base64.urlsafe_b64encode(b"\0" * 16 + payload).decode()
        with pytest.raises(BadFilter, match="altered"):
            self.codec.decode(text)

    def test_other_key_is_refused(self) -> None:
        """A cursor made with another key (another deployment) does not decode here."""
        other = CursorCodec(key=b"x" * 32).encode(self.cursor)
        with pytest.raises(BadFilter):
            self.codec.decode(other)

    def test_short_key_is_refused(self) -> None:
        """A signing key under 16 bytes is a configuration error."""
        with pytest.raises(ValueError, match="16 bytes"):
            CursorCodec(key=b"short")

    def test_digest_depends_on_user_and_scope(self) -> None:
        """Another user, or another scope, gives another digest."""
        base = scope_digest(OFFICER, Scope(tenants=("school-a",)))
        assert base == scope_digest(OFFICER, Scope(tenants=("school-a",)))
        assert base != scope_digest(RESPONDER, Scope(tenants=("school-a",)))
        assert base != scope_digest(OFFICER, Scope(tenants=("school-b",)))


class TestCursorScope:
    """A cursor only pages the search that made it, on both stores."""

    def _first(self, store: AuditStore, who: Requester, search: AuditSearch) -> str:
        write(
            store,
            *(record(i, **{"organization.id": "school-a"}) for i in range(3)),
            *(record(10 + i, **{"organization.id": "school-b"}) for i in range(3)),
        )
        cursor = search.search(who, Filters(), size=1).next_cursor
        assert cursor is not None
        return cursor

    def test_admin_cannot_replay_officers_cursor(self, store: AuditStore) -> None:
        """A school admin using a security officer's cursor is refused, and it is audited."""
        sink = MemorySink()
        search = AuditSearch(store=store, sink=sink, cursor_key=b"k" * 32)
        cursor = self._first(store, OFFICER, search)
        with pytest.raises(BadFilter, match="another search or another user"):
            search.search(ADMIN_A, Filters(), size=1, cursor=cursor)
        assert (sink.events[-1]["event.outcome"], sink.events[-1]["user.id"]) == (
            "failure",
            "iss|adm",
        )

    def test_cursor_with_other_filters_is_refused(self, store: AuditStore) -> None:
        """The same user cannot carry a cursor over to other filters."""
        search = AuditSearch(store=store, sink=MemorySink(), cursor_key=b"k" * 32)
        cursor = self._first(store, OFFICER, search)
        with pytest.raises(BadFilter, match="another search"):
            search.search(OFFICER, Filters(tenants=("school-b",)), size=1, cursor=cursor)

    def test_cursor_for_other_order_is_refused(self, store: AuditStore) -> None:
        """A cursor made oldest-first does not page a newest-first search."""
        search = AuditSearch(store=store, sink=MemorySink(), cursor_key=b"k" * 32)
        cursor = self._first(store, OFFICER, search)
        with pytest.raises(BadFilter, match="other sort order"):
            search.search(OFFICER, Filters(), size=1, cursor=cursor, newest_first=True)

    def test_admin_pages_stay_in_tenant(self, store: AuditStore) -> None:
        """Paging a school admin's search to the end yields their tenant's events only."""
        search = AuditSearch(store=store, sink=MemorySink(), cursor_key=b"k" * 32)
        cursor: str | None = self._first(store, ADMIN_A, search)
        seen = []
        while cursor is not None:
            page = search.search(ADMIN_A, Filters(), size=1, cursor=cursor)
            seen += [e["organization.id"] for e in page.events]
            cursor = page.next_cursor
        assert seen == ["school-a", "school-a"]


class TestPointInTime:
    """On OpenSearch, later pages read from the point in time opened after the first."""

    @pytest.fixture
    def os_store(self, opensearch_node: Any, index_prefix: str) -> Iterator[OpenSearchStore]:
        made = OpenSearchStore(url=opensearch_node.url, index_prefix=index_prefix, replicas=0)
        made.ensure_schema()
        yield made
        made.close()

    def test_events_written_meanwhile_do_not_shift_pages(self, os_store: OpenSearchStore) -> None:
        """Events written after the first page neither appear nor change the total."""
        write(os_store, *(record(i) for i in range(6)))
        search = AuditSearch(store=os_store, sink=MemorySink())
        first = search.search(OFFICER, Filters(), size=2)
        write(os_store, *(record(3, **{"event.reason": "late"}) for _ in range(5)))
        seen = [e["event.id"] for e in first.events]
        cursor = first.next_cursor
        while cursor is not None:
            page = search.search(OFFICER, Filters(), size=2, cursor=cursor)
            assert (page.total.value, page.total.exact) == (6, True)
            seen += [e["event.id"] for e in page.events]
            assert all("event.reason" not in e for e in page.events)
            cursor = page.next_cursor
        assert len(seen) == len(set(seen)) == 6
        assert os_store.count(Scope()) == 11

    def test_expired_point_in_time_is_a_clear_error(self, os_store: OpenSearchStore) -> None:
        """A cursor whose point in time is gone asks to search again (400), not a 5xx."""
        write(os_store, *(record(i) for i in range(4)))
        search = AuditSearch(store=os_store, sink=MemorySink(), cursor_key=b"k" * 32)
        cursor = search.search(OFFICER, Filters(), size=2).next_cursor
        assert cursor is not None
        pit = CursorCodec(key=b"k" * 32).decode(cursor).pit
        assert pit is not None
        os_store.close_pit(pit)
        with pytest.raises(PointInTimeGone):
            search.search(OFFICER, Filters(), size=2, cursor=cursor)

    def test_sqlite_cursor_has_no_point_in_time(self, tmp_path: Path) -> None:
        """The embedded store pages by position alone."""
        store = SQLiteStore(path=tmp_path / "a.db")
        store.ensure_schema()
        write(store, *(record(i) for i in range(3)))
        codec = CursorCodec(key=b"k" * 32)
        cursor = AuditSearch(store=store, sink=MemorySink(), cursor_key=b"k" * 32).search(
            OFFICER, Filters(), size=1
        )
        assert cursor.next_cursor is not None
        assert codec.decode(cursor.next_cursor).pit is None
