"""Fixtures for retention tests: audit and hold stores on SQLite and on the real node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit import AuditStore, OpenSearchStore, Record, SQLiteStore
from audit.processors import EMITTED_NS, audit_processors, render_json, run_chain
from retention._holdstore import HoldStore, OpenSearchHoldStore, SQLiteHoldStore
from retention._runstore import OpenSearchRunStore, RunStore, SQLiteRunStore

CHAIN = audit_processors(render=False)
NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class Stores:
    """An audit store and the hold and run stores kept next to it."""

    events: AuditStore
    holds: HoldStore
    runs: RunStore


@pytest.fixture(params=["sqlite", "opensearch"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    made = make_stores(request.param, tmp_path / "audit.db", request)
    yield made
    close(made)


def make_stores(kind: str, path: Path, request: pytest.FixtureRequest | None = None) -> Stores:
    """Stores over one SQLite file, or over the node under the test's index prefix."""
    events: AuditStore
    holds: HoldStore
    runs: RunStore
    if kind == "sqlite":
        events = SQLiteStore(path=path)
        holds = SQLiteHoldStore(path=path)
        runs = SQLiteRunStore(path=path)
    else:
        assert request is not None
        node = request.getfixturevalue("opensearch_node")
        prefix = request.getfixturevalue("index_prefix")
        events = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
        holds = OpenSearchHoldStore(url=node.url, index_prefix=prefix, replicas=0)
        runs = OpenSearchRunStore(url=node.url, index_prefix=prefix, replicas=0)
    for store in (events, holds, runs):
        store.ensure_schema()
    return Stores(events, holds, runs)


def close(stores: Stores) -> None:
    stores.runs.close()
    stores.holds.close()
    stores.events.close()


def record(age: timedelta, action: str = "access_denied", **fields: Any) -> Record:
    """A record as the pipeline makes it, ``age`` before NOW."""
    moment = NOW - age
    event = {"event.action": action, EMITTED_NS: int(moment.timestamp() * 1e9)}
    event.update(fields)
    doc = run_chain(CHAIN, event)
    return Record(doc["event.id"], doc["@timestamp"], render_json(None, "", doc))


def write(store: AuditStore, *records: Record) -> None:
    results = store.write(list(records))
    assert all(r.status == "stored" for r in results), results
    store.refresh()
