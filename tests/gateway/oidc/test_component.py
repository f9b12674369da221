"""gateway/oidc/_component.py: which revocation record the settings select."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.oidc import (
    MemoryRevocations,
    OpenSearchRevocations,
    SQLiteRevocations,
    revocation_store,
)
from gateway.settings import SettingsError
from tests.gateway.oidc._idp import settings
from tools.opensearch_node import Node


class TestRevocationStoreSelection:
    def test_memory_by_default(self, tmp_path: Path) -> None:
        """Without a choice the record is this process's memory (one instance)."""
        assert isinstance(revocation_store(settings(tmp_path)), MemoryRevocations)

    def test_audit_with_sqlite_audit_store(self, tmp_path: Path) -> None:
        """``audit`` with the SQLite audit store: a table in the audit file."""
        found = revocation_store(
            settings(
                tmp_path,
                SESSION__REVOCATION_STORE="audit",
                AUDIT__SQLITE_PATH=str(tmp_path / "audit.db"),
            )
        )
        assert isinstance(found, SQLiteRevocations)
        found.close()
        assert (tmp_path / "audit.db").exists()

    def test_audit_with_opensearch(
        self, tmp_path: Path, opensearch_node: Node, index_prefix: str
    ) -> None:
        """``audit`` with OpenSearch: the index of the audit cluster, polled as configured."""
        found = revocation_store(
            settings(
                tmp_path,
                SESSION__REVOCATION_STORE="audit",
                SESSION__REVOCATION_POLL_INTERVAL="200ms",
                AUDIT__STORE="opensearch",
                AUDIT__OPENSEARCH_URLS=opensearch_node.url,
                AUDIT__INDEX_PREFIX=index_prefix,
                AUDIT__REPLICAS="0",
            )
        )
        assert isinstance(found, OpenSearchRevocations)
        assert found.index == f"{index_prefix}gateway-revocations"
        found.close()

    def test_poll_interval_below_staleness(self, tmp_path: Path) -> None:
        """A poll interval not below the staleness limit is refused at start-up."""
        with pytest.raises(SettingsError, match="revocation_poll_interval"):
            settings(
                tmp_path,
                SESSION__REVOCATION_POLL_INTERVAL="5s",
                SESSION__REVOCATION_MAX_STALENESS="5s",
            )
