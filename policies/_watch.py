"""Reload the policy when its files change: a small polling watcher the gateway can run.

Polling ``stat`` (mtime, size, inode) of the four files is cheap and works the same on every
file system and with atomic renames (``mv new policy.csv``). A change is acted on only when two
polls in a row see the same new signature, so a file caught half-written is not loaded; a
reload that fails anyway keeps the old policy (:meth:`PolicyStore.reload`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from policies._store import PolicyStore

__all__ = ["DEFAULT_INTERVAL", "PolicyWatcher"]

DEFAULT_INTERVAL: Final = 2.0

_Signature = tuple[tuple[int, int, int] | None, ...]


def _signature(paths: Iterable[Path]) -> _Signature:
    found: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found.append(None)
        else:
            found.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(found)


class PolicyWatcher:
    """Calls ``store.reload()`` after the store's files change and settle."""

    def __init__(self, store: PolicyStore, *, interval: float = DEFAULT_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._store = store
        self._paths = tuple(store.paths.values())
        self.interval = interval
        self._applied = _signature(self._paths)
        self._pending: _Signature | None = None

    def poll(self) -> bool | None:
        """One check: ``None`` if nothing to do, else whether the reload succeeded."""
        current = _signature(self._paths)
        if current == self._applied:
            self._pending = None
            return None
        if current != self._pending:
            self._pending = current  # seen once: wait one interval for the writer to finish
            return None
        self._applied, self._pending = current, None
        return self._store.reload()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; reloads run in a thread."""
        while not stop.is_set():
            await asyncio.to_thread(self.poll)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except TimeoutError:
                continue
