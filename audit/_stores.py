"""Build a store from settings: ``opensearch_store(...)`` or ``sqlite_store(...)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from audit._opensearch import OpenSearchStore
from audit._sqlite import SQLiteStore

__all__ = ["opensearch_store", "sqlite_store"]


def sqlite_store(*, path: str | Path) -> SQLiteStore:
    """The embedded store in one SQLite file (WAL), for the demo and single-machine installs."""
    return SQLiteStore(path=path)


def opensearch_store(
    *,
    url: str | Sequence[str],
    index_prefix: str = "",
    username: str | None = None,
    password: str | None = None,
    ca_certs: str | None = None,
    shards: int = 1,
    replicas: int = 1,
    timeout: float = 30.0,
) -> OpenSearchStore:
    """An OpenSearch store (TLS with a pinned CA and basic auth for a real cluster)."""
    return OpenSearchStore(
        url=url,
        index_prefix=index_prefix,
        username=username,
        password=password,
        ca_certs=ca_certs,
        shards=shards,
        replicas=replicas,
        timeout=timeout,
    )
