"""One contract for both stores: SQLite (embedded) and OpenSearch (the real node)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit import AuditStore, OpenSearchStore, Page, Record, Scope, SQLiteStore
from audit.events import parse_timestamp
from audit.processors import EMITTED_NS, audit_processors, render_json, run_chain

BASE = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CHAIN = audit_processors(render=False)


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


def record(minutes: int = 0, **fields: Any) -> Record:
    """A record as the pipeline makes it, at BASE + minutes."""
    moment = BASE + timedelta(minutes=minutes)
    event = {"event.action": "access_denied", EMITTED_NS: int(moment.timestamp() * 1e9)}
    event.update(fields)
    doc = run_chain(CHAIN, event)
    return Record(doc["event.id"], doc["@timestamp"], render_json(None, "", doc))


def raw(doc: dict[str, Any]) -> Record:
    """A record with exactly this document (to test what the store refuses)."""
    base = record()
    full = orjson.loads(base.document)
    full.update(doc)
    return Record(base.event_id, base.timestamp, orjson.dumps(full))


def write(store: AuditStore, *records: Record) -> list[str]:
    results = store.write(list(records))
    store.refresh()
    return [r.status for r in results]


class TestWrite:
    def test_written_event_reads_back(self, store: AuditStore) -> None:
        """What was written comes back field for field."""
        fields: dict[str, Any] = {
            "user.id": "iss|1",
            "user.roles": ["teacher"],
            "source.ip": "192.0.2.7",
        }
        rec = record(0, **fields)
        assert write(store, rec) == ["stored"]
        [doc] = store.search(Scope())
        assert doc["event.id"] == rec.event_id
        assert doc["user.roles"] == ["teacher"]
        assert doc["source.ip"] == "192.0.2.7"
        assert doc["audit.category"] == "access_denied"
        assert doc["@timestamp"] == "2026-03-10T12:00:00.000000Z"

    def test_second_write_is_duplicate(self, store: AuditStore) -> None:
        """Writing the same event id again stores nothing new and says duplicate."""
        rec = record()
        assert write(store, rec) == ["stored"]
        assert write(store, rec) == ["duplicate"]
        assert store.count(Scope()) == 1

    @pytest.mark.parametrize(
        "bad",
        [
            {"user.password": "x"},  # a field the schema does not know
            {"http.response.status_code": "not-a-number"},
            {"source.ip": "not-an-ip"},
        ],
    )
    def test_schema_violation_rejected_with_reason(
        self, store: AuditStore, bad: dict[str, Any]
    ) -> None:
        """A document that does not fit the schema is rejected (with a reason), not stored."""
        good = record(minutes=1)
        results = store.write([raw(bad), good])
        assert [r.status for r in results] == ["rejected", "stored"]
        assert results[0].reason and results[0].error_type
        store.refresh()
        assert store.count(Scope()) == 1

    def test_deadletters_kept_whole(self, store: AuditStore) -> None:
        """A dead letter keeps the document and the reason."""
        bad = raw({"http.response.status_code": "x"})
        [result] = store.write([bad])
        store.write_deadletters([(bad, result)])
        store.refresh()
        [letter] = store.deadletters()
        assert letter["event_id"] == bad.event_id
        assert letter["document"] == bad.document.decode()
        assert letter["reason"] == result.reason


class TestSearch:
    @pytest.fixture
    def loaded(self, store: AuditStore) -> AuditStore:
        write(
            store,
            record(0, **{"user.id": "a", "organization.id": "school-a", "source.ip": "192.0.2.1"}),
            record(
                1, **{"user.id": "b", "organization.id": "school-b", "source.ip": "192.0.2.200"}
            ),
            record(
                2, **{"event.action": "login_failure", "user.id": "a", "source.ip": "2001:db8::1"}
            ),
            record(3, **{"event.action": "hold_placed", "user.id": "c", "labels": {"case": "i-7"}}),
        )
        return store

    def test_oldest_first(self, loaded: AuditStore) -> None:
        """Results come oldest first."""
        stamps = [d["@timestamp"] for d in loaded.search(Scope())]
        assert stamps == sorted(stamps) and len(stamps) == 4

    @pytest.mark.parametrize(
        ("scope", "users"),
        [
            (Scope(user_ids=["a"]), ["a", "a"]),
            (Scope(organization_ids=["school-b"]), ["b"]),
            (Scope(categories=["authentication"]), ["a"]),
            (Scope(actions=["hold_placed"]), ["c"]),
            (Scope(source_ips=["192.0.2.0/25"]), ["a"]),
            (Scope(source_ips=["2001:db8::/32", "192.0.2.200"]), ["b", "a"]),
            (
                Scope(since=BASE + timedelta(minutes=1), until=BASE + timedelta(minutes=3)),
                ["b", "a"],
            ),
            (Scope(labels={"case": "i-7"}), ["c"]),
            (Scope(user_ids=["a"], categories=["access_denied"]), ["a"]),
        ],
    )
    def test_scope_selects(self, loaded: AuditStore, scope: Scope, users: list[str]) -> None:
        """Each scope condition selects the same events in both stores."""
        assert [d["user.id"] for d in loaded.search(scope)] == users
        assert loaded.count(scope) == len(users)

    def test_newest_first(self, loaded: AuditStore) -> None:
        """newest_first reverses the order."""
        stamps = [d["@timestamp"] for d in loaded.search(Scope(), newest_first=True)]
        assert stamps == sorted(stamps, reverse=True) and len(stamps) == 4

    @pytest.mark.parametrize("newest_first", [False, True])
    def test_pages_cover_everything_once(self, loaded: AuditStore, newest_first: bool) -> None:
        """Paging with `after` visits every event once, in order."""
        seen: list[str] = []
        after = None
        while page := loaded.search(Scope(), size=3, newest_first=newest_first, after=after):
            seen += [d["event.id"] for d in page]
            after = Page.of(page[-1])
        everything = loaded.search(Scope(), size=100, newest_first=newest_first)
        assert seen == [d["event.id"] for d in everything] and len(seen) == 4

    def test_exclude_removes_held_events(self, loaded: AuditStore) -> None:
        """Events matching an exclude scope (a hold) are left out."""
        held = Scope(user_ids=["a"], categories=["authentication"])
        assert [d["user.id"] for d in loaded.search(Scope(user_ids=["a"]), exclude=[held])] == ["a"]

    def test_ids_list_what_search_finds(
        self, loaded: AuditStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``ids`` lists the ids and (millisecond) timestamps of what search selects, in its
        order, across pages (OpenSearch: two ids a page here), holds left out."""
        monkeypatch.setattr("audit._opensearch.IDS_PAGE", 2)
        held = [Scope(organization_ids=["school-b"])]
        found = loaded.search(Scope(until=BASE + timedelta(days=1)), exclude=held)
        listed = list(loaded.ids(Scope(until=BASE + timedelta(days=1)), exclude=held))
        assert [i for i, _ in listed] == [d["event.id"] for d in found] and len(listed) == 3
        for (_, stamp), doc in zip(listed, found, strict=True):
            assert parse_timestamp(stamp) == parse_timestamp(doc["@timestamp"])


class TestDeleteAndMinimise:
    def test_delete_needs_upper_bound(self, store: AuditStore) -> None:
        """Deleting without `until` is refused: nobody deletes audit events by hand."""
        with pytest.raises(ValueError, match="until"):
            store.delete(Scope(user_ids=["a"]))

    def test_delete_by_scope_spares_held(self, store: AuditStore) -> None:
        """Delete removes what the scope selects, except what an exclude scope holds."""
        write(store, *(record(m, **{"user.id": f"u{m}"}) for m in range(6)))
        until = BASE + timedelta(minutes=4)
        deleted = store.delete(Scope(until=until), exclude=[Scope(user_ids=["u1"])])
        assert deleted == 3
        store.refresh()
        assert sorted(d["user.id"] for d in store.search(Scope())) == ["u1", "u4", "u5"]

    def test_minimise_truncates_ip_and_drops_user_agent(self, store: AuditStore) -> None:
        """Minimisation cuts IPv4 to /24 and IPv6 to /48, drops the user agent, marks it."""
        ua = {"user_agent.original": "Firefox"}
        write(
            store,
            record(0, **{"source.ip": "192.0.2.77", **ua}),
            record(1, **{"source.ip": "2001:db8:1234:5678::9", **ua}),
            record(2, **{"source.ip": "198.51.100.9", "user.id": "held", **ua}),
        )
        until = BASE + timedelta(minutes=10)
        assert store.minimise(Scope(until=until), exclude=[Scope(user_ids=["held"])]) == 2
        store.refresh()
        docs = store.search(Scope())
        assert [d["source.ip"] for d in docs] == ["192.0.2.0", "2001:db8:1234::", "198.51.100.9"]
        assert [d.get("user_agent.original") for d in docs] == [None, None, "Firefox"]
        assert store.count(Scope(minimised=True)) == 2

    def test_minimised_user_agent_is_absent_and_the_rest_kept(self, store: AuditStore) -> None:
        """Both stores drop the user agent's key (not a null) and keep every other field."""
        rec = record(0, **{"source.ip": "192.0.2.77", "user_agent.original": "Firefox"})
        write(store, rec)
        [before] = store.search(Scope())
        assert store.minimise(Scope(until=BASE + timedelta(minutes=10))) == 1
        store.refresh()
        [after] = store.search(Scope())
        assert "user_agent.original" not in after
        expected = {k: v for k, v in before.items() if k != "user_agent.original"}
        expected.update({"source.ip": "192.0.2.0", "audit.minimised": True})
        assert after == expected

    def test_minimise_twice_changes_nothing(self, store: AuditStore) -> None:
        """A second run finds nothing left to minimise."""
        write(store, record(0, **{"source.ip": "192.0.2.77"}))
        until = BASE + timedelta(minutes=10)
        assert store.minimise(Scope(until=until)) == 1
        assert store.minimise(Scope(until=until)) == 0


class TestHealth:
    def test_ping(self, store: AuditStore) -> None:
        """A reachable store answers ping."""
        assert store.ping() is True


class TestExcludeWithMissingFields:
    def test_event_without_the_held_field_is_not_held(self, store: AuditStore) -> None:
        """An event lacking the field a hold names is outside the hold, so it is deleted."""
        write(store, record(0), record(1, **{"user.id": "held"}))
        until = BASE + timedelta(minutes=10)
        assert store.delete(Scope(until=until), exclude=[Scope(user_ids=["held"])]) == 1
        store.refresh()
        assert [d.get("user.id") for d in store.search(Scope())] == ["held"]
