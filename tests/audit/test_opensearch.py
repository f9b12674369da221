"""audit/_opensearch.py: settings checked when the store is built; whole-day deletion."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from opensearchpy import OpenSearch

from audit import OpenSearchStore, Scope, opensearch_store
from audit._opensearch import connect
from audit.events import index_name
from tests.audit.test_store_contract import BASE, record
from tools.opensearch_node import Node


class TestSettings:
    def test_basic_auth_over_plain_http_refused(self) -> None:
        """A password would travel in clear text: refused at construction."""
        with pytest.raises(ValueError, match="https"):
            OpenSearchStore(url="http://127.0.0.1:9200", username="u", password="p")

    def test_username_without_password_refused(self) -> None:
        """Half a credential is a configuration mistake."""
        with pytest.raises(ValueError, match="both"):
            OpenSearchStore(url="https://127.0.0.1:9200", username="u")

    def test_mixed_schemes_refused(self) -> None:
        """All nodes of a cluster use the same scheme."""
        with pytest.raises(ValueError, match="all"):
            OpenSearchStore(url=["https://a:9200", "http://b:9200"])

    def test_bad_prefix_refused(self) -> None:
        """An index prefix with pattern or path characters is refused."""
        with pytest.raises(ValueError, match="prefix"):
            OpenSearchStore(url="http://127.0.0.1:9200", index_prefix="a*,b")

    def test_shards_and_replicas_checked(self) -> None:
        """At least one shard; replicas not negative."""
        with pytest.raises(ValueError, match="shards"):
            OpenSearchStore(url="http://127.0.0.1:9200", shards=0)

    def test_factory_builds_https_store_with_auth(self) -> None:
        """The factory passes TLS and credentials through (nothing is contacted yet)."""
        store = opensearch_store(
            url="https://search.example:9200", username="audit", password="pw", replicas=2
        )
        assert store.index_prefix == ""
        store.close()


@pytest.mark.opensearch
class TestDeleteWholeDays:
    def _load(self, store: OpenSearchStore) -> None:
        store.ensure_schema()
        records = [record(m) for m in range(3)]  # 2026-03-10
        records += [record(24 * 60 + m, **{"user.id": "later"}) for m in range(2)]  # 03-11
        assert {r.status for r in store.write(records)} == {"stored"}
        store.refresh()

    def test_fully_selected_day_dropped_as_index(
        self, os_store: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """A day whose events are all selected goes as a whole index; the next day stays."""
        self._load(os_store)
        day1 = index_name(os_store.index_prefix, "2026-03-10T00:00:00Z")
        day2 = index_name(os_store.index_prefix, "2026-03-11T00:00:00Z")
        assert os_store.delete(Scope(until=BASE + timedelta(hours=12))) == 3
        assert not opensearch.indices.exists(index=day1)
        assert opensearch.indices.exists(index=day2)
        assert os_store.count(Scope()) == 2

    def test_held_majority_keeps_its_index(
        self, os_store: OpenSearchStore, opensearch: OpenSearch
    ) -> None:
        """With most of the day held, the others go one by one and the index stays
        writable (the shipper can still file late events there)."""
        self._load(os_store)
        day1 = index_name(os_store.index_prefix, "2026-03-10T00:00:00Z")
        held = [d["event.id"] for d in os_store.search(Scope(until=BASE + timedelta(minutes=2)))]
        scope = Scope(until=BASE + timedelta(hours=12))
        assert os_store.delete(scope, exclude=[Scope(event_ids=held)]) == 1
        assert [d["event.id"] for d in os_store.search(scope)] == held
        settings = opensearch.indices.get_settings(index=day1)[day1]["settings"]["index"]
        assert settings.get("blocks", {}).get("write") in (None, "false")
        assert os_store.write([record(5)])[0].status == "stored"


class TestConnectionPool:
    def test_pool_size_reaches_the_connection(self) -> None:
        """The sync client's urllib3 pool gets the configured size (not the default of 1)."""
        client = connect("http://127.0.0.1:9200", pool_size=7)
        [connection] = client.transport.connection_pool.connections
        assert connection.pool.pool.maxsize == 7
        client.close()

    @pytest.mark.opensearch
    def test_concurrent_requests_share_the_pool_without_discards(
        self, opensearch_node: Node, caplog: pytest.LogCaptureFixture
    ) -> None:
        """As many concurrent requests as the pool size: every connection is kept, none is
        discarded with urllib3's "Connection pool is full" warning."""
        client = connect(opensearch_node.url, pool_size=4)
        barrier = threading.Barrier(4)

        def slow_request() -> None:
            barrier.wait(timeout=10)
            # waits the full 300 ms for nodes that never come: the four requests overlap
            client.transport.perform_request(
                "GET", "/_cluster/health?wait_for_nodes=9&timeout=300ms", params={"ignore": 408}
            )

        with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
            threads = [threading.Thread(target=slow_request) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        client.close()
        assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
        assert all(not thread.is_alive() for thread in threads)
