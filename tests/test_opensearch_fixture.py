"""The OpenSearch fixtures give a real node and keep tests apart."""

from __future__ import annotations

from opensearchpy import OpenSearch

from tests._opensearch import delete_prefixed, new_prefix
from tools.opensearch_node import Node


class TestNode:
    def test_is_a_real_opensearch_2_19(self, opensearch: OpenSearch, opensearch_node: Node) -> None:
        """The node answers as an OpenSearch distribution of the 2.19 line."""
        info = opensearch.info()
        assert info["version"]["distribution"] == "opensearch"
        assert info["version"]["number"].startswith("2.19.")
        assert info["version"]["number"] == opensearch_node.version

    def test_index_and_search(self, opensearch: OpenSearch, index_prefix: str) -> None:
        """Documents indexed through opensearch-py are found by a search."""
        index = f"{index_prefix}events"
        opensearch.indices.create(
            index=index,
            body={
                "mappings": {
                    "dynamic": "strict",
                    "properties": {
                        "action": {"type": "keyword"},
                        "message": {"type": "text"},
                    },
                }
            },
        )
        docs = [
            ("1", "login_success", "leerling logged in"),
            ("2", "login_failure", "state mismatch at callback"),
            ("3", "access_denied", "teacher of school A asked for school B"),
        ]
        for doc_id, action, message in docs:
            opensearch.index(index=index, id=doc_id, body={"action": action, "message": message})
        opensearch.indices.refresh(index=index)

        by_term = opensearch.search(
            index=index, body={"query": {"term": {"action": "login_failure"}}}
        )
        assert [hit["_id"] for hit in by_term["hits"]["hits"]] == ["2"]
        by_text = opensearch.search(index=index, body={"query": {"match": {"message": "school"}}})
        assert by_text["hits"]["total"]["value"] == 1
        assert by_text["hits"]["hits"][0]["_source"]["action"] == "access_denied"


class TestIndexPrefix:
    def test_prefixes_differ_between_tests(self, index_prefix: str, opensearch: OpenSearch) -> None:
        """A fresh prefix starts with no indices under it."""
        assert opensearch.indices.get(index=f"{index_prefix}*", expand_wildcards="all") == {}

    def test_cleanup_removes_indices(self, opensearch: OpenSearch) -> None:
        """Indices and templates made under a prefix are gone after cleanup."""
        prefix = new_prefix()
        opensearch.indices.create(index=f"{prefix}a")
        opensearch.indices.put_index_template(
            name=f"{prefix}tmpl", body={"index_patterns": [f"{prefix}tmpl-*"]}
        )
        delete_prefixed(opensearch, prefix)
        assert opensearch.indices.exists(index=f"{prefix}a") is False
        assert opensearch.indices.exists_index_template(name=f"{prefix}tmpl") is False
