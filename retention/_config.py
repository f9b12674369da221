"""Stores from the gateway's ``[audit]`` settings: holds live where the events live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retention._holdstore import HoldStore, OpenSearchHoldStore, SQLiteHoldStore
from retention._runstore import OpenSearchRunStore, RunStore, SQLiteRunStore

if TYPE_CHECKING:  # gateway.settings imports retention to validate [retention]
    from gateway.settings import AuditSettings

__all__ = ["hold_store", "run_store"]


def hold_store(settings: AuditSettings) -> HoldStore:
    """The hold store next to the configured audit store (table or index)."""
    if settings.store == "sqlite":
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteHoldStore(path=settings.sqlite_path)
    password = settings.opensearch_password.reveal() if settings.opensearch_password else None
    return OpenSearchHoldStore(
        url=list(settings.opensearch_urls),
        index_prefix=settings.index_prefix,
        username=settings.opensearch_username,
        password=password,
        ca_certs=str(settings.opensearch_ca_file) if settings.opensearch_ca_file else None,
        replicas=settings.replicas,
    )


def run_store(settings: AuditSettings) -> RunStore:
    """The run lock and reports next to the configured audit store (tables or an index)."""
    if settings.store == "sqlite":
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteRunStore(path=settings.sqlite_path)
    password = settings.opensearch_password.reveal() if settings.opensearch_password else None
    return OpenSearchRunStore(
        url=list(settings.opensearch_urls),
        index_prefix=settings.index_prefix,
        username=settings.opensearch_username,
        password=password,
        ca_certs=str(settings.opensearch_ca_file) if settings.opensearch_ca_file else None,
        replicas=settings.replicas,
    )
