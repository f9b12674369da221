"""The search extensions of the store contract (issue 7), against both stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit import AuditStore, OpenSearchStore, Page, Scope, SQLiteStore
from audit._store import Total
from tests.audit.test_store_contract import record, write


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


def ids(store: AuditStore, scope: Scope) -> set[str]:
    return {str(doc["event.id"]) for doc in store.search(scope, size=1000)}


def one_match(
    store: AuditStore, scope: Scope, wanted: dict[str, Any], other: dict[str, Any]
) -> None:
    hit = record(0, **wanted)
    miss = record(1, **other)
    write(store, hit, miss)
    assert ids(store, scope) == {hit.event_id}


class TestFilters:
    def test_subject_matches_actor_and_target(self, store: AuditStore) -> None:
        """``subjects`` finds the person as user.id and as user.target.id, nobody else."""
        actor = record(0, **{"user.id": "iss|p"})
        target = record(1, **{"user.id": "iss|t", "user.target.id": "iss|p"})
        other = record(2, **{"user.id": "iss|q"})
        write(store, actor, target, other)
        assert ids(store, Scope(subjects=["iss|p"])) == {actor.event_id, target.event_id}

    def test_target_id(self, store: AuditStore) -> None:
        """``target_ids`` matches user.target.id only."""
        one_match(
            store,
            Scope(target_ids=["42"]),
            {"user.id": "a", "user.target.id": "42"},
            {"user.id": "42"},
        )

    def test_tenant_matches_organisation_and_data_tenant(self, store: AuditStore) -> None:
        """``tenants`` finds the tenant's own events and access to data of the tenant."""
        own = record(0, **{"organization.id": "school-a"})
        data = record(1, **{"organization.id": "sup-1", "labels": {"data_tenant": "school-a"}})
        other = record(2, **{"organization.id": "school-b", "labels": {"data_tenant": "school-b"}})
        write(store, own, data, other)
        assert ids(store, Scope(tenants=["school-a"])) == {own.event_id, data.event_id}

    def test_outcome(self, store: AuditStore) -> None:
        """``outcomes`` matches event.outcome."""
        one_match(
            store,
            Scope(outcomes=["success"]),
            {"event.outcome": "success"},
            {"event.outcome": "failure"},
        )

    def test_status_code(self, store: AuditStore) -> None:
        """``status_codes`` matches http.response.status_code."""
        one_match(
            store,
            Scope(status_codes=[403]),
            {"http.response.status_code": 403},
            {"http.response.status_code": 401},
        )

    def test_trace_id(self, store: AuditStore) -> None:
        """``trace_ids`` matches the request id."""
        one_match(store, Scope(trace_ids=["req-1"]), {"trace.id": "req-1"}, {"trace.id": "req-2"})

    def test_rule_name(self, store: AuditStore) -> None:
        """``rule_names`` matches rule.name."""
        one_match(store, Scope(rule_names=["r1"]), {"rule.name": "r1"}, {"rule.name": "r2"})

    def test_source_cidr(self, store: AuditStore) -> None:
        """A CIDR in ``source_ips`` matches the addresses inside it."""
        one_match(
            store,
            Scope(source_ips=["192.0.2.0/24"]),
            {"source.ip": "192.0.2.9"},
            {"source.ip": "198.51.100.9"},
        )

    def test_text_in_path_is_case_insensitive(self, store: AuditStore) -> None:
        """Free text matches a substring of url.path regardless of case."""
        one_match(
            store,
            Scope(text="STUDENTS"),
            {"url.path": "/api/schools/a/students/7"},
            {"url.path": "/activities"},
        )

    def test_text_in_error_message(self, store: AuditStore) -> None:
        """Free text matches a word of error.message."""
        one_match(
            store,
            Scope(text="refused"),
            {"error.message": "upstream connection refused"},
            {"error.message": "timed out"},
        )

    def test_text_wildcards_are_literal(self, store: AuditStore) -> None:
        """A ``*`` in free text is a literal star, not a wildcard that matches everything."""
        one_match(store, Scope(text="a*b"), {"url.path": "/x/a*b"}, {"url.path": "/x/ab"})

    def test_blank_text_is_refused(self) -> None:
        """Blank free text is an error, not a match-everything filter."""
        with pytest.raises(ValueError, match="blank"):
            Scope(text="  ")


class TestTotal:
    def test_exact_below_limit(self, store: AuditStore) -> None:
        """Up to the limit the total is exact."""
        write(store, *(record(i) for i in range(3)))
        assert store.total(Scope(), limit=3) == Total(3, exact=True)

    def test_at_least_beyond_limit(self, store: AuditStore) -> None:
        """Beyond the limit the total says at least the limit."""
        write(store, *(record(i) for i in range(4)))
        assert store.total(Scope(), limit=3) == Total(3, exact=False)


class TestCounts:
    def test_by_action_and_week(self, store: AuditStore) -> None:
        """Counts group by keyword fields and by ISO week (Monday, UTC)."""
        # BASE is Tuesday 2026-03-10; +7 days is the next week.
        write(
            store,
            record(0, **{"event.action": "access_denied"}),
            record(1, **{"event.action": "access_denied"}),
            record(2, **{"event.action": "logout"}),
            record(7 * 24 * 60, **{"event.action": "logout"}),
        )
        assert store.counts(Scope(), by=["week", "event.action"]) == {
            ("2026-03-09", "access_denied"): 2,
            ("2026-03-09", "logout"): 1,
            ("2026-03-16", "logout"): 1,
        }

    def test_by_role_counts_each_role_of_an_event(self, store: AuditStore) -> None:
        """An event counts once under each of its roles, and under '' when it has none."""
        write(
            store,
            record(0, **{"user.roles": ["teacher"]}),
            record(1, **{"user.roles": ["teacher", "school_admin"]}),
            record(2),
        )
        assert store.counts(Scope(), by=["user.roles", "event.action"]) == {
            ("teacher", "access_denied"): 2,
            ("school_admin", "access_denied"): 1,
            ("", "access_denied"): 1,
        }

    def test_missing_field_counts_as_empty(self, store: AuditStore) -> None:
        """An event without the field is counted under the empty key."""
        write(store, record(0, **{"organization.id": "school-a"}), record(1))
        assert store.counts(Scope(), by=["organization.id"]) == {("school-a",): 1, ("",): 1}

    def test_unknown_key_is_refused(self, store: AuditStore) -> None:
        """Grouping by a field outside COUNT_KEYS is an error."""
        with pytest.raises(ValueError, match="cannot count"):
            store.counts(Scope(), by=["user.id"])


class TestPaging:
    def test_pages_cover_everything_once(self, store: AuditStore) -> None:
        """Paging with ``after`` yields every event exactly once, in time order."""
        written = [record(i % 5) for i in range(23)]  # ties on @timestamp
        write(store, *written)
        seen: list[str] = []
        after: Page | None = None
        while True:
            page = store.search(Scope(), size=4, after=after)
            if not page:
                break
            seen += [str(doc["event.id"]) for doc in page]
            after = Page.of(page[-1])
        assert sorted(seen) == sorted(r.event_id for r in written)
        assert len(seen) == len(set(seen))
