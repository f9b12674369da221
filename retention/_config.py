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
    return OpenSearchHoldStore(
        **settings.opensearch_access(),
    )


def run_store(settings: AuditSettings) -> RunStore:
    """The run lock and reports next to the configured audit store (tables or an index)."""
    if settings.store == "sqlite":
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteRunStore(path=settings.sqlite_path)
    return OpenSearchRunStore(
        **settings.opensearch_access(),
    )
