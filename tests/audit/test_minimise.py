"""audit/_minimise.py and OpenSearchStore.minimise on the node (``_update_by_query``)."""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opensearchpy import OpenSearch

from audit import OpenSearchStore, Scope
from audit._chain import event_hash
from audit._minimise import MINIMISE_SCRIPT
from audit._retention_log import minimised_form
from audit._store import truncate_ip
from audit.errors import StoreError, StoreUnavailable
from audit.events import index_name
from tests.audit.test_store_contract import BASE, record
from tools.opensearch_node import Node

pytestmark = pytest.mark.opensearch
UNTIL = BASE + timedelta(hours=12)  # everything on 2026-03-10 (BASE is its noon)
KILLED = 37  # the exit status of a child killed between two batches


def made(node: Node, prefix: str, *, on_node: bool, **options: Any) -> OpenSearchStore:
    store = OpenSearchStore(
        url=node.url, index_prefix=prefix, replicas=0, minimise_on_node=on_node, **options
    )
    store.ensure_schema()
    return store


@pytest.fixture
def on_node(opensearch_node: Node, index_prefix: str) -> Iterator[OpenSearchStore]:
    """Minimises with ``_update_by_query``, two events per request."""
    store = made(opensearch_node, index_prefix + "node-", on_node=True, batch=2)
    yield store
    store.close()


@pytest.fixture
def on_client(opensearch_node: Node, index_prefix: str) -> Iterator[OpenSearchStore]:
    """Minimises the way it did before: documents read and put back whole."""
    store = made(opensearch_node, index_prefix + "client-", on_node=False, batch=2)
    yield store
    store.close()


#: Events in every shape minimisation meets: IPv4, IPv6 (compressed, exploded, upper case,
#: an IPv4 tail), no address, no user agent, labels, lists, text beyond ASCII.
SHAPES: list[dict[str, Any]] = [
    {"user.id": "a", "source.ip": "192.0.2.77", "user_agent.original": "Mozilla/5.0"},
    {"user.id": "b", "source.ip": "2001:db8:1234:5678::9", "user_agent.original": "curl/8"},
    {"user.id": "c", "source.ip": "2001:0DB8:0000:0000:0000:0000:0000:0001"},
    {"user.id": "d", "source.ip": "::ffff:198.51.100.20", "user_agent.original": "x"},
    {"user.id": "e", "user_agent.original": "only an agent"},
    {"user.id": "f", "source.ip": "10.1.2.3", "labels": {"data_tenant": "school-b"}},
    {"user.id": "g", "source.ip": "0:0:1::5", "url.path": "/api/schüler/Ω", "user.roles": ["a"]},
    {"user.id": "held", "source.ip": "203.0.113.9", "user_agent.original": "kept whole"},
]


def load(store: OpenSearchStore, shapes: list[dict[str, Any]]) -> list[str]:
    records = [record(m, **fields) for m, fields in enumerate(shapes)]
    assert {r.status for r in store.write(records)} == {"stored"}
    store.refresh()
    return [r.event_id for r in records]


def sources(client: OpenSearch, store: OpenSearchStore) -> dict[str, dict[str, Any]]:
    """Every stored document of the store by id, as stored (``_source``)."""
    client.indices.refresh(index=f"{store.index_prefix}*")
    hits = client.search(index=f"{store.index_prefix}audit-events-*", body={"size": 1000})
    return {h["_id"]: h["_source"] for h in hits["hits"]["hits"]}


def day(store: OpenSearchStore) -> str:
    return index_name(store.index_prefix, "2026-03-10T00:00:00Z")


def addresses() -> list[str]:
    """Generated addresses in every text form Python's ``ipaddress`` reads, and edge cases."""
    rng = random.Random(8)  # noqa: S311 - test data, not secrets
    found = ["0.0.0.0"]  # noqa: S104 - an address to minimise, not to bind
    found += ["255.255.255.255", "::", "::1", "1::", "1:2:3:4:5:6:7:8", "0:0:1::"]
    found += ["::2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4", "::1.2.3.4", "fe80::1%eth0", "1:0:0::"]
    for _ in range(150):
        found.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        # zero runs in every place: clear a random run of hextets
        value = rng.getrandbits(128)
        start, length = rng.randrange(8), rng.randrange(9)
        for hextet in range(start, min(8, start + length)):
            value &= ~(0xFFFF << (16 * (7 - hextet)))
        six = ipaddress.IPv6Address(value)
        found += [str(six), six.exploded, six.exploded.upper(), str(six).upper()]
        tail = ipaddress.IPv4Address(value & 0xFFFFFFFF)
        found.append(":".join(six.exploded.split(":")[:6]) + f":{tail}")
    return found


#: Addresses Python's ``ipaddress`` refuses (the script must refuse them as well).
REFUSED = [
    *("01.2.3.4", "1.2.3", "1.2.3.256", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3"),
    *("12345::", "g::", "1.2.3.4%x", "1:2:3:4:5:6:7::8", "fe80::1%", "::1.2.3", "1.2.3.4/24"),
    *("1:2:3:4:5:6:7:", "", "::01.2.3.4"),
]


class TestScript:
    def test_truncation_matches_python_for_every_form(
        self, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """The script's address is ``truncate_ip``'s, text for text, for every generated form."""
        index = f"{index_prefix}script"
        opensearch.indices.create(index=index, body={"mappings": {"dynamic": False}})
        given = addresses()
        lines: list[dict[str, Any]] = []
        for n, address in enumerate(given):
            lines += [{"index": {"_index": index, "_id": str(n)}}, {"source.ip": address}]
        opensearch.bulk(body=lines, refresh=True)
        answer = opensearch.update_by_query(
            index=index, body={"script": MINIMISE_SCRIPT}, refresh=True
        )
        assert answer["updated"] == len(given) and not answer["failures"]
        hits = opensearch.search(index=index, body={"size": 10_000})["hits"]["hits"]
        got = {int(h["_id"]): h["_source"]["source.ip"] for h in hits}
        assert {n: truncate_ip(a) for n, a in enumerate(given)} == got

    @pytest.mark.parametrize("address", REFUSED)
    def test_refuses_what_python_refuses(
        self, opensearch: OpenSearch, index_prefix: str, address: str
    ) -> None:
        """An address Python cannot read stops the update with the document unchanged."""
        with pytest.raises(ValueError):
            truncate_ip(address)
        index = f"{index_prefix}refused"
        opensearch.indices.create(index=index, body={"mappings": {"dynamic": False}})
        opensearch.index(index=index, id="1", body={"source.ip": address}, refresh=True)
        answer = opensearch.update_by_query(
            index=index, body={"script": MINIMISE_SCRIPT}, refresh=True, ignore=(400, 500)
        )
        assert answer.get("updated", 0) == 0
        assert opensearch.get(index=index, id="1")["_source"] == {"source.ip": address}


class TestSameAsBefore:
    def test_documents_identical_field_by_field(
        self, on_node: OpenSearchStore, on_client: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """The same events minimised on the node and from the client are the same documents,
        with the hash retention recorded for them; the held event stays as it was."""
        assert on_node.minimises_on_node()
        held = [Scope(user_ids=["held"])]
        ids = load(on_node, SHAPES)
        for doc in sources(opensearch, on_node).values():  # the very same documents
            opensearch.index(index=day(on_client), id=doc["event.id"], body=doc)
        before = sources(opensearch, on_node)
        assert on_client.minimise(Scope(until=UNTIL), exclude=held) == len(SHAPES) - 1
        assert on_node.minimise(Scope(until=UNTIL), exclude=held) == len(SHAPES) - 1
        by_node, by_client = sources(opensearch, on_node), sources(opensearch, on_client)
        assert sorted(by_node) == sorted(by_client) == sorted(ids)
        for event_id in ids:
            # the same fields and values (the node writes the keys in another order)
            assert by_node[event_id] == by_client[event_id]
            assert event_hash(by_node[event_id]) == event_hash(by_client[event_id])
            if by_node[event_id]["user.id"] == "held":
                assert by_node[event_id] == before[event_id]
            else:
                assert event_hash(by_node[event_id]) == event_hash(minimised_form(before[event_id]))

    def test_second_run_changes_nothing(self, on_node: OpenSearchStore) -> None:
        """What is minimised is not selected again."""
        load(on_node, SHAPES[:3])
        assert on_node.minimise(Scope(until=UNTIL)) == 3
        assert on_node.minimise(Scope(until=UNTIL)) == 0


class TestGuard:
    def test_stops_between_requests(self, on_node: OpenSearchStore, opensearch: OpenSearch) -> None:
        """The guard is asked before each request of two; at its no the step stops, the
        rest stays unminimised and the index refreshes again."""
        load(on_node, SHAPES[:5])
        answers = iter([True, False])
        assert on_node.minimise(Scope(until=UNTIL), guard=lambda: next(answers)) == 2
        assert on_node.count(Scope(minimised=True)) == 2
        assert on_node.count(Scope(minimised=False)) == 3
        settings = opensearch.indices.get_settings(index=day(on_node))[day(on_node)]["settings"]
        assert "refresh_interval" not in settings["index"]

    def test_hold_placed_mid_run_is_respected_by_the_next(self, on_node: OpenSearchStore) -> None:
        """A hold placed during the step stops it (the guard says no); the replanned step with
        the hold excluded leaves the held events whole."""
        load(on_node, SHAPES[:6])
        calls: list[int] = []

        def guard() -> bool:
            calls.append(1)
            return len(calls) < 2  # the hold appears after the first request

        first = on_node.minimise(Scope(until=UNTIL), guard=guard)
        held = [Scope(user_ids=["c", "d", "e", "f"])]
        second = on_node.minimise(Scope(until=UNTIL), exclude=held)
        assert (first, second) == (2, 0)
        kept = {d["user.id"]: d for d in on_node.search(Scope(minimised=False))}
        assert sorted(kept) == ["c", "d", "e", "f"]
        assert kept["d"]["user_agent.original"] == "x"


class TestInterrupted:
    def test_killed_run_is_completed_by_the_next(
        self, on_node: OpenSearchStore, opensearch_node: Node, opensearch: OpenSearch
    ) -> None:
        """A run killed between two requests leaves each event whole or minimised; the next
        run minimises the rest and the index refreshes again."""
        ids = load(on_node, SHAPES[:7])
        before = sources(opensearch, on_node)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; it always leaves through os._exit
            try:
                child = made(opensearch_node, on_node.index_prefix, on_node=True, batch=2)
                asked = iter([True, True])

                def guard() -> bool:
                    return next(asked, None) or os._exit(KILLED)

                child.minimise(Scope(until=UNTIL), guard=guard)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == KILLED
        # a request the child started runs on in the node: each event changes whole or not
        opensearch.tasks.list(actions="*byquery", wait_for_completion=True)
        on_node.refresh()  # the killed run left refresh off on the index
        assert on_node.count(Scope(minimised=True)) == 4
        assert on_node.minimise(Scope(until=UNTIL)) == 3
        after = sources(opensearch, on_node)
        assert {i: after[i] for i in ids} == {i: minimised_form(before[i]) for i in ids}
        settings = opensearch.indices.get_settings(index=day(on_node))[day(on_node)]["settings"]
        assert "refresh_interval" not in settings["index"]

    def test_event_changed_under_the_run_is_minimised_too(
        self, on_node: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """An event rewritten between the listing and the node's write (a version conflict)
        is run again after a refresh, not skipped."""
        ids = load(on_node, SHAPES[:4])
        doc = sources(opensearch, on_node)[ids[0]]
        rewritten: list[object] = []

        def rewrite() -> bool:  # e.g. ``audit migrate`` putting the event back unchanged, once
            if not rewritten:
                rewritten.append(opensearch.index(index=day(on_node), id=ids[0], body=doc))
            return True

        assert on_node.minimise(Scope(until=UNTIL), guard=rewrite) == 4
        assert on_node.count(Scope(minimised=False)) == 0


class TestRefused:
    def test_write_blocked_index_is_a_store_error_and_nothing_changes(
        self, on_node: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """A write-blocked day: StoreError naming the block, every event as it was; once the
        block is lifted the next run minimises them."""
        ids = load(on_node, SHAPES[:3])
        before = sources(opensearch, on_node)
        opensearch.indices.put_settings(index=day(on_node), body={"index.blocks.write": True})
        with pytest.raises(StoreError, match="cluster_block_exception"):
            on_node.minimise(Scope(until=UNTIL))
        assert sources(opensearch, on_node) == before
        opensearch.indices.put_settings(index=day(on_node), body={"index.blocks.write": None})
        assert on_node.minimise(Scope(until=UNTIL)) == 3
        assert sorted(sources(opensearch, on_node)) == sorted(ids)

    def test_closed_index_is_left_for_a_later_run(
        self, on_node: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """A closed day is not read, written or counted; reopened, it is minimised."""
        load(on_node, SHAPES[:3])
        opensearch.indices.close(index=day(on_node))
        assert on_node.minimise(Scope(until=UNTIL)) == 0
        opensearch.indices.open(index=day(on_node), wait_for_active_shards="1")
        assert on_node.count(Scope(minimised=False)) == 3
        assert on_node.minimise(Scope(until=UNTIL)) == 3

    def test_batch_over_its_time_is_cancelled(
        self, opensearch_node: Node, index_prefix: str, opensearch: OpenSearch
    ) -> None:
        """A request that outlives the task timeout is cancelled: StoreUnavailable, each event
        whole or minimised, and the next run finishes the rest."""
        store = made(opensearch_node, index_prefix + "slow-", on_node=True)
        records = [record(m % 600, **{"source.ip": f"192.0.2.{m % 250}"}) for m in range(3000)]
        assert {r.status for r in store.write(records)} == {"stored"}
        store.refresh()
        hurried = made(
            opensearch_node, index_prefix + "slow-", on_node=True, minimise_task_timeout=1e-9
        )
        with pytest.raises(StoreUnavailable, match="cancelled"):
            hurried.minimise(Scope(until=UNTIL))
        done = store.count(Scope(minimised=True))
        assert done < 3000
        assert store.minimise(Scope(until=UNTIL)) == 3000 - done
        assert all("user_agent.original" not in d for d in store.search(Scope(), size=50))
        hurried.close()
        store.close()
