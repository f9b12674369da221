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
from gateway.oidc.errors import RevocationJournalError
from gateway.settings import Settings, SettingsError
from tests.gateway.oidc._idp import settings
from tools.opensearch_node import Node


def _opensearch_settings(tmp_path: Path, node: Node, index_prefix: str) -> Settings:
    return settings(
        tmp_path,
        SESSION__REVOCATION_STORE="audit",
        SESSION__REVOCATION_POLL_INTERVAL="200ms",
        AUDIT__STORE="opensearch",
        AUDIT__OPENSEARCH_URLS=node.url,
        AUDIT__INDEX_PREFIX=index_prefix,
        AUDIT__REPLICAS="0",
        AUDIT__SPOOL_DIR=str(tmp_path / "spool"),
    )


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
        found = revocation_store(_opensearch_settings(tmp_path, opensearch_node, index_prefix))
        assert isinstance(found, OpenSearchRevocations)
        assert found.index == f"{index_prefix}gateway-revocations"
        found.close()

    def test_opensearch_journal_beside_audit_spool(
        self, tmp_path: Path, opensearch_node: Node, index_prefix: str
    ) -> None:
        """With OpenSearch, revocations the cluster has not taken are journaled in
        ``revocations`` under this process's audit spool directory."""
        found = revocation_store(_opensearch_settings(tmp_path, opensearch_node, index_prefix))
        assert isinstance(found, OpenSearchRevocations)
        assert (tmp_path / "spool" / "revocations" / "journal").exists()
        found.close()

    def test_unusable_journal_directory_refused_at_start(
        self, tmp_path: Path, opensearch_node: Node, index_prefix: str
    ) -> None:
        """A spool directory the journal cannot be made in stops the start (no instance
        runs whose revocations would be lost at its next crash)."""
        (tmp_path / "spool").write_text("a file, not a directory")
        with pytest.raises(RevocationJournalError, match="spool"):
            revocation_store(_opensearch_settings(tmp_path, opensearch_node, index_prefix))

    def test_poll_interval_below_staleness(self, tmp_path: Path) -> None:
        """A poll interval not below the staleness limit is refused at start-up."""
        with pytest.raises(SettingsError, match="revocation_poll_interval"):
            settings(
                tmp_path,
                SESSION__REVOCATION_POLL_INTERVAL="5s",
                SESSION__REVOCATION_MAX_STALENESS="5s",
            )
