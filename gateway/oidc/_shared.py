# ruff: noqa: S608 - SQL is built from our own table constant; values are bound
"""State every gateway instance must share: single-use login states and brute-force counters.

Behind a load balancer (DESIGN.md §5) a login's callback may reach another instance than its
start, and an attacker spreads attempts over all of them. So the records that make a login
state single-use and the failure counters and blocks of the throttle live in a store the
instances already share: the audit store.

- :class:`OpenSearchState`: one document per record in ``{prefix}gateway-shared-state`` of
  the audit cluster. "Use once" is ``op_type=create`` (a second create is a 409, and an
  expired record is replaced only with ``if_seq_no``/``if_primary_term``). A counter is one
  document per key and window that every failure overwrites: OpenSearch gives each write of
  a document the next ``_version`` atomically, so the version a write returns is the count,
  with no read-modify-write race to lose (a compare-and-set loop would fail under exactly the
  concurrent flood it is meant to count). No scripts (painless is absent from the test
  distribution).
- :class:`SQLiteState`: a table in the audit store's SQLite file, one ``BEGIN IMMEDIATE``
  transaction per operation (single machine; the demo).
- :class:`MemoryState`: one process (unit tests, a single instance), bounded.

Keys are stored only as SHA-256 hashes (a subject id is personal data; an IP address too).
Every record has an expiry and expired ones are deleted now and then (``PRUNE_INTERVAL``): in
OpenSearch by :func:`delete_expired`, batches of ``PRUNE_BATCH`` until none is left or the run
has taken ``PRUNE_BUDGET`` seconds (then the next write starts another run at once), in a
thread of its own so no login waits for it.
A store that cannot be reached raises :class:`~gateway.oidc.errors.StateUnavailable`: the
callers refuse what needed it (fail closed), never accept a state twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from opensearchpy.exceptions import OpenSearchException

from audit._opensearch import connect, translated_errors
from audit.errors import StoreError
from gateway.oidc.errors import StateUnavailable

logger = logging.getLogger(__name__)

__all__ = [
    "Block",
    "MemoryState",
    "OpenSearchState",
    "PruneResult",
    "SQLiteState",
    "SharedState",
    "delete_expired",
]

STATE_INDEX: Final = "gateway-shared-state"
STATE_TABLE: Final = "gateway_shared_state"
PRUNE_INTERVAL: Final = 600.0
#: Expired OpenSearch records deleted per search + bulk round of a prune run.
PRUNE_BATCH: Final = 1000
#: A prune run stops starting rounds after this long (the next one picks up the rest).
PRUNE_BUDGET: Final = 30.0
MAX_MEMORY_ENTRIES: Final = 100_000
DEFAULT_TIMEOUT: Final = 5.0
#: Creating the index (once per process) may take longer than one record's read or write.
SETUP_TIMEOUT: Final = 30.0
BUSY_TIMEOUT: Final = 5.0
#: How long closing waits for a prune run still going (it ends at its next round).
PRUNE_JOIN_TIMEOUT: Final = 5.0

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Block:
    """A key's current (or last) block: until when, and how many blocks in a row."""

    until: float
    strikes: int


class SharedState(Protocol):
    """The records all gateway instances share (every method may raise StateUnavailable)."""

    async def use_once(self, key: str, *, until: float) -> bool:
        """True the first time ``key`` is used (remembered until ``until``), else False."""

    async def add_failure(self, key: str, *, window: float) -> int:
        """Count one failure of ``key`` in the current window (fixed windows of ``window``
        seconds from the epoch, the same on every instance); the count so far in it."""

    async def blocked(self, key: str) -> Block | None:
        """``key``'s block record, or None (it may have ended: compare ``until``)."""

    async def set_block(self, key: str, block: Block, *, forget_at: float) -> None:
        """Record ``block`` for ``key``, remembered until ``forget_at`` (for backoff)."""

    async def aclose(self) -> None:
        """Release connections."""


def _record_id(kind: str, key: str) -> str:
    return f"{kind}-{hashlib.sha256(key.encode('utf-8', 'replace')).hexdigest()}"


def window_start(now: float, window: float) -> float:
    """The start of the fixed window holding ``now``."""
    return math.floor(now / window) * window


# --- one process ------------------------------------------------------------------------------


class MemoryState:
    """In-process records, at most ``max_entries`` of each kind (the oldest forgotten first)."""

    def __init__(self, *, max_entries: int = MAX_MEMORY_ENTRIES, clock: Clock = time.time) -> None:
        self._max = max_entries
        self._clock = clock
        self._used: OrderedDict[str, float] = OrderedDict()
        self._counters: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._blocks: OrderedDict[str, tuple[Block, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._used) + len(self._counters) + len(self._blocks)

    async def use_once(self, key: str, *, until: float) -> bool:
        now = self._clock()
        found = self._used.get(key)
        if found is not None and found > now:
            return False
        self._put(self._used, key, until)
        return True

    async def add_failure(self, key: str, *, window: float) -> int:
        start = window_start(self._clock(), window)
        found, count = self._counters.get(key, (start, 0))
        if found != start:
            count = 0
        self._put(self._counters, key, (start, count + 1))
        return count + 1

    async def blocked(self, key: str) -> Block | None:
        found = self._blocks.get(key)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    async def set_block(self, key: str, block: Block, *, forget_at: float) -> None:
        self._put(self._blocks, key, (block, forget_at))

    async def aclose(self) -> None:
        return None

    def _put(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._max:
            table.popitem(last=False)


# --- SQLite (one machine) ---------------------------------------------------------------------

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (id TEXT PRIMARY KEY, "
    "a REAL NOT NULL, b INTEGER NOT NULL, expires REAL NOT NULL)"
)


class SQLiteState:
    """Records in a table of the audit store's SQLite file, shared by the instances on one
    machine; each operation is one immediate transaction."""

    def __init__(self, *, path: Path, clock: Clock = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock
        self._pruned = 0.0

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateUnavailable(f"shared state (SQLite): {exc}") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StateUnavailable(f"shared state (SQLite): {exc}") from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _row(self, db: sqlite3.Connection, record: str) -> tuple[float, int, float] | None:
        row = db.execute(f"SELECT a, b, expires FROM {STATE_TABLE} WHERE id = ?", (record,))
        found = row.fetchone()
        return None if found is None else (float(found[0]), int(found[1]), float(found[2]))

    def _write(self, db: sqlite3.Connection, record: str, a: float, b: int, expires: float) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO {STATE_TABLE} (id, a, b, expires) VALUES (?, ?, ?, ?)",
            (record, a, b, expires),
        )

    def _use_once(self, key: str, until: float) -> bool:
        record, now = _record_id("used", key), self._clock()
        with self._transaction() as db:
            found = self._row(db, record)
            if found is not None and found[2] > now:
                return False
            self._write(db, record, 0.0, 0, until)
            self._maybe_prune(db, now)
        return True

    def _add_failure(self, key: str, window: float) -> int:
        record, now = _record_id("count", key), self._clock()
        start = window_start(now, window)
        with self._transaction() as db:
            found = self._row(db, record)
            count = found[1] if found is not None and found[0] == start else 0
            self._write(db, record, start, count + 1, start + window)
            self._maybe_prune(db, now)
        return count + 1

    def _blocked(self, key: str) -> Block | None:
        with self._transaction() as db:
            found = self._row(db, _record_id("block", key))
        if found is None or found[2] <= self._clock():
            return None
        return Block(until=found[0], strikes=found[1])

    def _set_block(self, key: str, block: Block, forget_at: float) -> None:
        with self._transaction() as db:
            self._write(db, _record_id("block", key), block.until, block.strikes, forget_at)

    def _maybe_prune(self, db: sqlite3.Connection, now: float) -> None:
        if now - self._pruned >= PRUNE_INTERVAL:
            self._pruned = now
            db.execute(f"DELETE FROM {STATE_TABLE} WHERE expires <= ?", (now,))

    async def use_once(self, key: str, *, until: float) -> bool:
        return await asyncio.to_thread(self._use_once, key, until)

    async def add_failure(self, key: str, *, window: float) -> int:
        return await asyncio.to_thread(self._add_failure, key, window)

    async def blocked(self, key: str) -> Block | None:
        return await asyncio.to_thread(self._blocked, key)

    async def set_block(self, key: str, block: Block, *, forget_at: float) -> None:
        await asyncio.to_thread(self._set_block, key, block, forget_at)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()


# --- OpenSearch (the audit cluster) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one prune run did: records deleted, and whether no expired one was left."""

    deleted: int
    done: bool


def delete_expired(
    client: Any,
    index: str,
    *,
    field: str,
    now: float,
    batch: int = PRUNE_BATCH,
    budget: float = PRUNE_BUDGET,
    monotonic: Clock = time.monotonic,
) -> PruneResult:
    """Delete the documents of ``index`` whose ``field`` is at or before ``now``: a search for
    ``batch`` of them, a bulk delete (refreshed, so the next search no longer finds them), again
    until a search finds fewer than ``batch`` or ``budget`` seconds have passed. Core APIs only
    (``delete_by_query`` lives in a module the test distribution lacks). Raises what the client
    raises."""
    deadline = monotonic() + budget
    deleted = 0
    while True:
        response = client.search(
            index=index,
            body={"query": {"range": {field: {"lte": now}}}, "size": batch},
            _source=False,
        )
        ids = [hit["_id"] for hit in response["hits"]["hits"]]
        if ids:
            lines = [{"delete": {"_index": index, "_id": record}} for record in ids]
            client.bulk(body=lines, refresh="true")
            deleted += len(ids)
        if len(ids) < batch:
            return PruneResult(deleted=deleted, done=True)
        if monotonic() >= deadline:
            return PruneResult(deleted=deleted, done=False)


_MAPPINGS: Final = {
    "dynamic": "strict",
    "properties": {
        "kind": {"type": "keyword"},
        "a": {"type": "double"},
        "b": {"type": "long"},
        "expires": {"type": "double"},
    },
}


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """Every failure to reach or use the cluster as StateUnavailable (fail closed)."""
    try:
        with translated_errors():
            yield
    except (StoreError, OpenSearchException, OSError) as exc:
        raise StateUnavailable(f"shared state (OpenSearch): {exc}") from exc


class OpenSearchState:
    """Records as documents of ``{prefix}gateway-shared-state`` in the audit cluster."""

    def __init__(
        self,
        *,
        url: str | Sequence[str],
        index_prefix: str = "",
        username: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
        replicas: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        prune_batch: int = PRUNE_BATCH,
        prune_budget: float = PRUNE_BUDGET,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.index = f"{index_prefix.lower()}{STATE_INDEX}"
        self._client = connect(
            url,
            username=username,
            password=password,
            ca_certs=ca_certs,
            timeout=timeout,
            max_retries=0,
        )
        self._replicas = replicas
        self._clock = clock
        self._monotonic = monotonic
        self._prune_batch = prune_batch
        self._prune_budget = prune_budget
        self._ready = False
        self._pruned = 0.0
        self._lock = threading.Lock()
        self._pruner: threading.Thread | None = None

    def _ensure_index(self) -> None:
        if self._ready:
            return
        with self._lock, _unavailable():
            if not self._client.indices.exists(index=self.index, request_timeout=SETUP_TIMEOUT):
                try:
                    self._client.indices.create(
                        index=self.index,
                        body={
                            "settings": {
                                "number_of_shards": 1,
                                "number_of_replicas": self._replicas,
                                "refresh_interval": "1s",
                            },
                            "mappings": _MAPPINGS,
                        },
                        request_timeout=SETUP_TIMEOUT,
                    )
                except OpenSearchException as exc:
                    # Another instance created it first.
                    if "resource_already_exists" not in str(exc):
                        raise
            # A GET on a shard not yet started answers 503: wait until it can serve.
            self._client.cluster.health(
                index=self.index, wait_for_status="yellow", request_timeout=SETUP_TIMEOUT
            )
            self._ready = True

    def _get(self, record: str) -> tuple[dict[str, Any], int, int] | None:
        with _unavailable():
            # ``ignore=404``: a missing record is the common case, not a failure to log.
            found = self._client.get(index=self.index, id=record, realtime=True, ignore=404)
        if not found.get("found"):
            return None
        return dict(found["_source"]), int(found["_seq_no"]), int(found["_primary_term"])

    def _create(self, record: str, doc: dict[str, Any]) -> bool:
        """Create ``record``; False when it already exists."""
        with _unavailable():
            # ``ignore=409``: "already there" is an answer (a replay), not a failure to log.
            response = self._client.index(
                index=self.index, id=record, body=doc, op_type="create", ignore=409
            )
        return bool(response.get("result") == "created")

    def _replace(self, record: str, doc: dict[str, Any], seq_no: int, primary_term: int) -> bool:
        """Overwrite ``record`` if nobody changed it since it was read; False on a lost race."""
        with _unavailable():
            response = self._client.index(
                index=self.index,
                id=record,
                body=doc,
                if_seq_no=seq_no,
                if_primary_term=primary_term,
                ignore=409,
            )
        return bool(response.get("result") in ("created", "updated"))

    def _use_once(self, key: str, until: float) -> bool:
        self._ensure_index()
        record = _record_id("used", key)
        doc = {"kind": "used", "a": 0.0, "b": 0, "expires": until}
        if self._create(record, doc):
            self._maybe_prune()
            return True
        found = self._get(record)
        if found is None or found[0].get("expires", 0) > self._clock():
            return False  # used (or gone between the two calls: still refuse)
        # An expired record nobody pruned yet: the key may be used again, once.
        return self._replace(record, doc, found[1], found[2])

    def _add_failure(self, key: str, window: float) -> int:
        self._ensure_index()
        start = window_start(self._clock(), window)
        record = _record_id("count", f"{key}|{start:.0f}")
        doc = {"kind": "count", "a": start, "b": 0, "expires": start + window}
        with _unavailable():
            response = self._client.index(index=self.index, id=record, body=doc)
        self._maybe_prune()
        return int(response["_version"])

    def _blocked(self, key: str) -> Block | None:
        self._ensure_index()
        found = self._get(_record_id("block", key))
        if found is None or float(found[0]["expires"]) <= self._clock():
            return None
        return Block(until=float(found[0]["a"]), strikes=int(found[0]["b"]))

    def _set_block(self, key: str, block: Block, forget_at: float) -> None:
        self._ensure_index()
        doc = {"kind": "block", "a": block.until, "b": block.strikes, "expires": forget_at}
        with _unavailable():
            self._client.index(index=self.index, id=_record_id("block", key), body=doc)

    def _maybe_prune(self) -> None:
        """Start a prune run in the background now and then (one at a time per instance)."""
        now = self._clock()
        with self._lock:
            if now - self._pruned < PRUNE_INTERVAL or (
                self._pruner is not None and self._pruner.is_alive()
            ):
                return
            self._pruned = now
            self._pruner = threading.Thread(
                target=self._prune_in_background, name="shared-state-prune", daemon=True
            )
            self._pruner.start()

    def _prune_in_background(self) -> None:
        try:
            result = self.prune()
        except StateUnavailable as exc:
            logger.warning("pruning the shared state failed: %s", exc)
            result = PruneResult(deleted=0, done=False)
        if not result.done:
            with self._lock:
                self._pruned = 0.0  # more left (or it failed): the next write starts again

    def prune(self) -> PruneResult:
        """Delete expired records, in batches, for at most ``prune_budget`` seconds."""
        self._ensure_index()
        with _unavailable():
            return delete_expired(
                self._client,
                self.index,
                field="expires",
                now=self._clock(),
                batch=self._prune_batch,
                budget=self._prune_budget,
                monotonic=self._monotonic,
            )

    def refresh(self) -> None:
        """Make every record visible to search (tests)."""
        with _unavailable():
            self._client.indices.refresh(index=self.index)

    async def use_once(self, key: str, *, until: float) -> bool:
        return await asyncio.to_thread(self._use_once, key, until)

    async def add_failure(self, key: str, *, window: float) -> int:
        return await asyncio.to_thread(self._add_failure, key, window)

    async def blocked(self, key: str) -> Block | None:
        return await asyncio.to_thread(self._blocked, key)

    async def set_block(self, key: str, block: Block, *, forget_at: float) -> None:
        await asyncio.to_thread(self._set_block, key, block, forget_at)

    def join_prune(self, timeout: float | None = PRUNE_JOIN_TIMEOUT) -> None:
        """Wait for the prune run in the background, if one is going (shutdown, tests)."""
        pruner = self._pruner
        if pruner is not None:
            pruner.join(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.join_prune)
        self._client.close()
