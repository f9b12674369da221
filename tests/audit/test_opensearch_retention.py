"""audit/_opensearch.py: retention's paths (the ``-kept`` move, the guard, minimisation)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from opensearchpy import OpenSearch

from audit import OpenSearchStore, Scope
from audit.events import index_name
from tests.audit.test_store_contract import BASE, record
from tools.opensearch_node import Node

pytestmark = pytest.mark.opensearch
UNTIL = BASE + timedelta(hours=12)  # everything on 2026-03-10 (BASE is its noon)


@pytest.fixture
def small(opensearch_node: Node, index_prefix: str) -> Iterator[OpenSearchStore]:
    """A store working in batches of two events, so a step takes several requests."""
    store = OpenSearchStore(url=opensearch_node.url, index_prefix=index_prefix, replicas=0, batch=2)
    store.ensure_schema()
    yield store
    store.close()


def load(store: OpenSearchStore, users: list[str]) -> list[str]:
    """One event per user on 2026-03-10, a minute apart; their ids in that order."""
    records = [record(m, **{"user.id": user}) for m, user in enumerate(users)]
    assert {r.status for r in store.write(records)} == {"stored"}
    store.refresh()
    return [r.event_id for r in records]


def day(store: OpenSearchStore) -> str:
    return index_name(store.index_prefix, "2026-03-10T00:00:00Z")


def in_index(client: OpenSearch, index: str) -> list[str]:
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"size": 100})["hits"]["hits"]
    return sorted(h["_id"] for h in hits)


KILLED = 37  # the exit status of a child killed at the crash point


def killed_after_copy(url: str, prefix: str, scope: Scope, exclude: Sequence[Scope]) -> None:
    """``delete`` in a forked child that dies (``os._exit``: no clean-up, no unblocking)
    right after copying a day's spared events to ``-kept``, before the day's drop."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; it always leaves through os._exit
        try:
            store = OpenSearchStore(url=url, index_prefix=prefix, replicas=0, batch=2)
            copy = store._copy

            def crash(index: str, query: Mapping[str, Any], target: str) -> list[str]:
                copy(index, query, target)
                os._exit(KILLED)

            store._copy = crash  # type: ignore[method-assign]
            store.delete(scope, exclude=exclude)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == KILLED


def setting(client: OpenSearch, index: str, *path: str) -> object:
    found: object = client.indices.get_settings(index=index)[index]["settings"]["index"]
    for key in path:
        found = found.get(key) if isinstance(found, dict) else None
    return found


class TestKeptMove:
    def test_spared_few_moved_and_day_dropped(
        self, small: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """A day whose selected events outnumber the spared ones: the spared go to the day's
        ``-kept`` index under their own ids and the day's index is dropped whole."""
        ids = load(small, ["a", "b", "c", "held"])
        held = Scope(user_ids=("held",))
        assert small.delete(Scope(until=UNTIL), exclude=[held]) == 3
        assert not opensearch.indices.exists(index=day(small))
        assert in_index(opensearch, day(small) + "-kept") == [ids[3]]
        [found] = small.search(Scope(until=UNTIL))
        assert (found["event.id"], found["user.id"]) == (ids[3], "held")

    def test_kept_index_in_a_window_ending_that_day(
        self, small: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """The ``-kept`` index counts as its day when a time window picks indices."""
        load(small, ["a", "b", "c", "held"])
        small.delete(Scope(until=UNTIL), exclude=[Scope(user_ids=("held",))])
        within = small._indices_within(BASE - timedelta(hours=1), BASE)
        assert within == [day(small) + "-kept"]

    def test_kept_index_pruned_in_place(
        self, small: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """Deleting from a ``-kept`` index never moves again: by id, or whole when all go."""
        load(small, ["a", "b", "c", "d", "x", "y"])  # 4 go, 2 moved
        small.delete(Scope(until=UNTIL), exclude=[Scope(user_ids=("x", "y"))])
        assert small.delete(Scope(until=UNTIL), exclude=[Scope(user_ids=("y",))]) == 1
        assert [d["user.id"] for d in small.search(Scope())] == ["y"]
        assert opensearch.indices.exists(index=day(small) + "-kept")
        assert small.delete(Scope(until=UNTIL)) == 1
        assert not opensearch.indices.exists(index=day(small) + "-kept")

    def test_guard_stop_before_the_drop_leaves_the_day(
        self, small: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """A guard saying stop before the drop: nothing deleted, the copies removed again,
        the day's index writable."""
        ids = load(small, ["a", "b", "c", "held"])
        asked: list[int] = []

        def stop() -> bool:
            asked.append(len(in_index(opensearch, day(small) + "-kept")))
            return False

        assert (
            small.delete(Scope(until=UNTIL), exclude=[Scope(user_ids=("held",))], guard=stop) == 0
        )
        assert asked == [1]  # asked once, after the copy, before the drop
        assert in_index(opensearch, day(small)) == sorted(ids)
        assert in_index(opensearch, day(small) + "-kept") == []
        assert setting(opensearch, day(small), "blocks", "write") in (None, "false")

    def test_interrupted_move_completed_by_the_next(
        self, small: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """Copies left in ``-kept`` by a run killed before the drop (and its write block)
        are overwritten by the next move; each event ends up stored once."""
        ids = load(small, ["a", "b", "c", "held"])
        opensearch.index(
            index=day(small) + "-kept", id=ids[3], body=small.search(Scope(event_ids=(ids[3],)))[0]
        )
        assert small.delete(Scope(until=UNTIL), exclude=[Scope(user_ids=("held",))]) == 3
        small.refresh()
        assert [d["event.id"] for d in small.search(Scope())] == [ids[3]]


class TestDays:
    def test_days_with_selected_events(self, small: OpenSearchStore) -> None:
        """``days`` names each UTC day holding a selected event, oldest first; a day whose
        only events are held is not named."""
        minutes = [0, 5, 24 * 60, 2 * 24 * 60]  # 03-10 twice, 03-11, 03-12 (held)
        users = ["a", "b", "c", "held"]
        written = [record(m, **{"user.id": u}) for m, u in zip(minutes, users, strict=True)]
        assert {r.status for r in small.write(written)} == {"stored"}
        small.refresh()
        found = small.days(
            Scope(until=BASE + timedelta(days=5)), exclude=[Scope(user_ids=("held",))]
        )
        midnight = BASE.replace(hour=0)
        assert found == [midnight, midnight + timedelta(days=1)]


class TestInterruptedMove:
    def test_killed_between_copy_and_drop_is_undone(
        self, small: OpenSearchStore, opensearch: OpenSearch, opensearch_node: Node
    ) -> None:
        """A run killed after the copy leaves the spared event twice and the day blocked;
        ``undo_interrupted_moves`` removes the copy and the block, and a later move works."""
        ids = load(small, ["a", "b", "c", "held"])
        held = [Scope(user_ids=("held",))]
        killed_after_copy(opensearch_node.url, small.index_prefix, Scope(until=UNTIL), held)
        small.refresh()
        assert small.count(Scope()) == 5  # the held event in the day and in ``-kept``
        assert setting(opensearch, day(small), "blocks", "write") == "true"
        assert small.undo_interrupted_moves() == [day(small)]
        assert sorted(d["event.id"] for d in small.search(Scope())) == sorted(ids)
        assert in_index(opensearch, day(small) + "-kept") == []
        assert setting(opensearch, day(small), "blocks", "write") in (None, "false")
        assert small.delete(Scope(until=UNTIL), exclude=held) == 3
        assert [d["event.id"] for d in small.search(Scope())] == [ids[3]]

    def test_finished_move_and_writable_day_left_alone(
        self, small: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """Without a write block nothing is undone: a finished move's ``-kept`` events and a
        new event of the same day (a late one, a new daily index) stay."""
        ids = load(small, ["a", "b", "c", "held"])
        small.delete(Scope(until=UNTIL), exclude=[Scope(user_ids=("held",))])
        late = load(small, ["late"])
        assert small.undo_interrupted_moves() == []
        assert sorted(d["event.id"] for d in small.search(Scope())) == sorted([ids[3], *late])


class TestGuard:
    def test_by_id_stops_between_batches(self, small: OpenSearchStore) -> None:
        """Deleting by id asks before each bulk request and stops at the first no."""
        load(small, ["a", "b", "c", "d", "e", "f"])
        answers = iter([True, False])
        spared = Scope(until=BASE + timedelta(minutes=4), since=BASE + timedelta(minutes=1))
        # 3 selected of 6: by id (moving the rest would cost more), two per request
        done = small.delete(Scope(until=UNTIL), exclude=[spared], guard=lambda: next(answers))
        assert done == 2
        small.refresh()
        assert [d["user.id"] for d in small.search(Scope())] == ["b", "c", "d", "f"]

    def test_minimise_stops_between_batches_and_refresh_is_back(
        self, small: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """Minimising asks before each bulk request; stopped, the index refreshes again."""
        load(small, ["a", "b", "c", "d", "e"])
        answers = iter([True, False])
        assert small.minimise(Scope(until=UNTIL), guard=lambda: next(answers)) == 2
        assert small.count(Scope(minimised=True)) == 2
        assert setting(opensearch, day(small), "refresh_interval") is None

    def test_minimise_all_in_batches(self, small: OpenSearchStore, opensearch: OpenSearch) -> None:
        """Without a stop every event is minimised, in several bulk requests."""
        load(small, ["a", "b", "c", "d", "e"])
        assert small.minimise(Scope(until=UNTIL), guard=lambda: True) == 5
        assert small.count(Scope(minimised=False)) == 0
        assert all("user_agent.original" not in d for d in small.search(Scope()))
        assert setting(opensearch, day(small), "refresh_interval") is None
