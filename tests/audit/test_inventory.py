"""audit/_inventory.py: the store's events per hour and per id, on the real node and SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
from opensearchpy import OpenSearch

from audit import AuditStore, OpenSearchStore
from audit._inventory import hour_of, hour_start, inventory_of
from tests.audit.test_store_contract import BASE, record, store, write

__all__ = ["store"]  # the contract's fixture: both stores


class TestHourOf:
    def test_canonical_timestamp_is_sliced(self) -> None:
        """The stores' canonical form gives its first 13 characters."""
        assert hour_of("2027-01-15T08:59:59.999999Z") == "2027-01-15T08"

    def test_other_forms_are_put_in_utc(self) -> None:
        """A timestamp with an offset (OpenSearch keeps what was sent) gives its UTC hour."""
        assert hour_of("2027-01-15T01:30:00+02:00") == "2027-01-14T23"

    def test_not_a_timestamp_raises(self) -> None:
        """Garbage is a ValueError (verify then reads that hour id by id)."""
        with pytest.raises(ValueError):
            hour_of("yesterday")

    def test_hour_start_round_trips(self) -> None:
        """An hour key's first moment has that key."""
        assert hour_of(hour_start("2027-01-15T08").isoformat()) == "2027-01-15T08"


class TestInventory:
    def test_hours_count_events_per_hour(self, store: AuditStore) -> None:
        """Per hour of @timestamp, within [since, until): hours without events left out."""
        write(store, *(record(minutes) for minutes in (0, 10, 70, 200)))
        key = BASE.strftime("%Y-%m-%dT%H")
        found = inventory_of(store).hours(since=None, until=None)
        assert sum(found.values()) == 4
        assert found == {key: 2, "2026-03-10T13": 1, "2026-03-10T15": 1}
        later = inventory_of(store).hours(since=BASE + timedelta(minutes=60), until=None)
        assert sum(later.values()) == 2

    def test_ids_in_lists_one_hour(self, store: AuditStore) -> None:
        """ids_in gives the ids of that hour only, each once with its count of documents."""
        made = [record(0), record(180)]
        write(store, *made)
        hour = hour_of(made[0].timestamp)
        assert dict(inventory_of(store).ids_in(hour)) == {made[0].event_id: 1}

    def test_describe_says_no_personal_data(self, store: AuditStore) -> None:
        """describe returns id, time, action, category and place; no user or address."""
        made = record(0, **{"user.id": "iss|pupil-7", "source.ip": "192.0.2.9"})
        write(store, made)
        [found] = inventory_of(store).describe([made.event_id])
        assert (found.event_id, found.action, found.keyless) == (
            made.event_id,
            "access_denied",
            False,
        )
        assert "pupil-7" not in repr(found) and "192.0.2.9" not in repr(found)


class TestOpenSearchOnly:
    def test_document_without_an_event_id_is_counted(
        self, opensearch: OpenSearch, os_store: OpenSearchStore
    ) -> None:
        """A document with no event.id (the mapping does not require one) is listed as ''."""
        os_store.ensure_schema()
        made = record(0)
        write(os_store, made)
        index = next(iter(opensearch.indices.get(index=f"{os_store.index_prefix}audit-events-*")))
        opensearch.index(
            index=index, body={"@timestamp": made.timestamp, "event.action": "x"}, refresh=True
        )
        found = dict(inventory_of(os_store).ids_in(hour_of(made.timestamp)))
        assert found == {made.event_id: 1, "": 1}
