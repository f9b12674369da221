"""Shared fixtures: one OpenSearch node per test session, one index prefix per test.

Under ``make test`` the node is started before pytest and given as ``OPENSEARCH_URL``. When
pytest runs on its own, the session fixture starts a node itself with the same tool. Tests that
need OpenSearch never skip: when no node can be had, they fail and say why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opensearchpy import OpenSearch

from tests._opensearch import delete_prefixed, new_prefix
from tools.opensearch_node import Node, NodeError, available_node


def pytest_report_header() -> str | None:
    url = os.environ.get("OPENSEARCH_URL")
    version = os.environ.get("OPENSEARCH_RUNNING_VERSION")
    if url and version:
        return f"opensearch: {version} at {url}"
    return None


@pytest.fixture(scope="session")
def opensearch_node() -> Iterator[Node]:
    try:
        with available_node() as node:
            yield node
    except NodeError as exc:
        pytest.fail(f"no OpenSearch node could be had: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def opensearch(opensearch_node: Node) -> Iterator[OpenSearch]:
    client = OpenSearch(hosts=[opensearch_node.url], timeout=30)
    yield client
    client.close()


@pytest.fixture
def index_prefix(opensearch: OpenSearch) -> Iterator[str]:
    """A prefix no other test uses; everything created under it is removed afterwards."""
    prefix = new_prefix()
    yield prefix
    delete_prefixed(opensearch, prefix)
