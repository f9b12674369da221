"""audit/_opensearch.py: settings are checked when the store is built (no node needed)."""

from __future__ import annotations

import pytest

from audit import OpenSearchStore, opensearch_store


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
