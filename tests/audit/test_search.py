"""Audit search: filters, scope by role (no widening), paging, and the audit of searches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from audit import AuditStore, MemorySink, OpenSearchStore, Scope, SQLiteStore
from audit._search import (
    AuditSearch,
    BadFilter,
    Filters,
    Requester,
    SearchRefused,
    decode_cursor,
    encode_cursor,
    parse_filters,
    scope_for,
)
from audit._store import Page
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


class TestCursor:
    def test_garbage_cursor_is_bad_filter(self) -> None:
        """A cursor that does not decode is a bad filter."""
        with pytest.raises(BadFilter, match="cursor"):
            decode_cursor("!!!", newest_first=False)

    def test_cursor_for_other_order_is_refused(self) -> None:
        """A cursor made for newest-first does not page an oldest-first search."""

        cursor = encode_cursor(Page("2026-03-10T12:00:00Z", "e1"), newest_first=True)
        with pytest.raises(BadFilter):
            decode_cursor(cursor, newest_first=False)
        assert decode_cursor(cursor, newest_first=True) == Page("2026-03-10T12:00:00Z", "e1")
