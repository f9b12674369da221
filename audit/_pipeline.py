"""The audit pipeline: enqueue on the request path, spool, ship to the store, never lose.

::

    emit() ──▶ bounded queue ──▶ writer thread ──▶ spool (disk) ──▶ shipper thread ──▶ store
    (µs, no I/O)                 processor chain    append-only      batches, retries,
                                 + JSON render      segments         dead letters

``emit`` stamps the time, captures the caller's context variables (so ``merge_contextvars``
sees the request's context although the chain runs later, in the writer thread), copies the
event and appends it to a bounded ``deque``. The writer runs the structlog chain
(:func:`audit.processors.audit_processors`), renders JSON and appends to the spool. The
shipper reads batches from the spool (by count, bytes and age), writes them with ``create``
by event id, retries the whole batch on connection errors/429/5xx and failed items
individually, with exponential backoff and full jitter, and sends mapping rejections to the
dead letters (file and index). The spool's cursor moves only past stored records.

When the spool is full (its byte bound, or the disk), each retention category's policy
applies: ``block`` (``emit`` raises :class:`audit.errors.AuditUnavailable`; the gateway
answers 503) or ``drop`` (counted per category; an ``audit_events_dropped`` event is recorded
once space returns). Events still in memory when the process is killed with SIGKILL are lost:
the writer drains the queue continuously, so this window is the last few milliseconds.

Both loops are threads, not asyncio tasks: the store clients and file I/O are blocking, and a
thread keeps the gateway's event loop free of them. The gateway calls ``await start()`` and
``await aclose()`` from its lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import structlog

from audit._spool import Batch, FsyncPolicy, Spool, encode
from audit._store import AuditStore, ItemResult, Record
from audit.errors import AuditUnavailable, SpoolFull, StoreError, StoreUnavailable
from audit.events import Action, Category, action_spec, parse_timestamp
from audit.processors import EMITTED_NS, Pseudonymise, audit_processors, render_json, run_chain

__all__ = ["DEFAULT_FULL_POLICY", "AuditPipeline", "Metrics"]

log = structlog.get_logger("audit.pipeline")

FullPolicy = Literal["block", "drop"]
#: Holds, policy and role changes (the backbone), logins and personal-data access fail closed.
DEFAULT_FULL_POLICY: Final[Mapping[Category, FullPolicy]] = {
    Category.AUTHENTICATION: "block",
    Category.ACCESS_DENIED: "drop",
    Category.PERSONAL_DATA: "block",
    Category.ERRORS: "drop",
    Category.BACKBONE: "block",
}
DEFAULT_MAX_QUEUE: Final = 10_000
DEFAULT_BATCH_SIZE: Final = 1000
DEFAULT_BATCH_BYTES: Final = 4 * 1024 * 1024
DEFAULT_FLUSH_INTERVAL: Final = 0.2
DEFAULT_BACKOFF_BASE: Final = 0.1
DEFAULT_BACKOFF_MAX: Final = 30.0
DEFAULT_CLOSE_TIMEOUT: Final = 10.0
WRITER_CHUNK: Final = 256
IDLE_WAIT: Final = 0.05
#: After the spool was full, events are accepted again once it is below this fraction.
RESUME_RATIO: Final = 0.9


@dataclass(frozen=True, slots=True)
class Metrics:
    """A snapshot of the pipeline, as plain numbers for Prometheus."""

    queue_depth: int
    spool_bytes: int
    events_emitted: int
    events_spooled: int
    events_shipped: int
    events_duplicate: int
    retries: int
    dead_letters: int
    drops: Mapping[str, int] = field(default_factory=dict)
    refused: Mapping[str, int] = field(default_factory=dict)
    oldest_unshipped_age_seconds: float = 0.0
    spool_full: bool = False

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Prometheus-style samples: (metric name, labels, value); counters end in _total."""
        out: list[tuple[str, dict[str, str], float]] = [
            ("audit_queue_depth", {}, self.queue_depth),
            ("audit_spool_bytes", {}, self.spool_bytes),
            ("audit_events_emitted_total", {}, self.events_emitted),
            ("audit_events_spooled_total", {}, self.events_spooled),
            ("audit_events_shipped_total", {}, self.events_shipped),
            ("audit_events_duplicate_total", {}, self.events_duplicate),
            ("audit_retries_total", {}, self.retries),
            ("audit_dead_letters_total", {}, self.dead_letters),
            ("audit_oldest_unshipped_age_seconds", {}, self.oldest_unshipped_age_seconds),
            ("audit_spool_full", {}, float(self.spool_full)),
        ]
        for category in Category:
            out.append(
                (
                    "audit_events_dropped_total",
                    {"category": category.value},
                    self.drops.get(category.value, 0),
                )
            )
            out.append(
                (
                    "audit_events_refused_total",
                    {"category": category.value},
                    self.refused.get(category.value, 0),
                )
            )
        return out


class AuditPipeline:
    """An :class:`audit.AuditSink` that ships to ``store`` through a durable spool.

    Use ``await start()`` once (it opens the spool and starts the loops; replay of what the
    spool holds from an earlier run happens in the background) and ``await aclose()`` at
    shutdown (drains the queue into the spool, then ships for up to ``close_timeout``
    seconds; whatever is left stays spooled for the next start).
    """

    def __init__(
        self,
        *,
        store: AuditStore,
        spool_dir: str | Path,
        spool_max_bytes: int = 256 * 1024 * 1024,
        fsync: FsyncPolicy = "interval",
        full_policy: Mapping[Category, str] | Mapping[str, str] | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        pseudonymise: Pseudonymise | None = None,
        on_shipped: Callable[[Sequence[Record]], None] | None = None,
    ) -> None:
        policy: dict[Category, str] = dict(DEFAULT_FULL_POLICY)
        for name, value in (full_policy or {}).items():
            if name not in set(Category):
                raise ValueError(f"unknown audit category {name!r} in the spool-full policy")
            policy[Category(name)] = value
        if any(value not in ("block", "drop") for value in policy.values()):
            raise ValueError("spool-full policies are 'block' or 'drop'")
        if max_queue < 1 or batch_size < 1 or batch_bytes < 1 or flush_interval <= 0:
            raise ValueError("queue, batch sizes and flush interval must be positive")
        self._store = store
        self._spool_dir = Path(spool_dir)
        self._spool_max_bytes = spool_max_bytes
        self._fsync: FsyncPolicy = fsync
        self._policy = policy
        self._blocking = frozenset(c for c, p in policy.items() if p == "block")
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._flush_interval = flush_interval
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._close_timeout = close_timeout
        self._chain = audit_processors(pseudonymise=pseudonymise, render=False)
        # Tamper evidence (audit/_digestwriter.py): called by the shipper with the records
        # each batch stored, before the cursor moves, and with () when idle. A hook with a
        # ``close()`` is closed by close() once the shipper has stopped.
        self._on_shipped = on_shipped or _no_hook
        self._stored: list[Record] = []

        self._queue: deque[tuple[int, contextvars.Context, dict[str, Any], Category]] = deque()
        self._wake_writer = threading.Event()
        self._wake_shipper = threading.Event()
        self._space = threading.Condition()
        self._stopping = threading.Event()
        self._writer_done = threading.Event()
        self._accepting = True  # events emitted before start() wait in the queue
        self._spool_full = False
        self._spool: Spool | None = None
        self._threads: list[threading.Thread] = []

        self._emitted = 0
        self._spooled = 0
        self._shipped = 0
        self._duplicates = 0
        self._retries = 0
        self._dead_letters = 0
        self._drops: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._unreported_drops: Counter[str] = Counter()
        self._drop_lock = threading.Lock()  # drops come from any thread; only on that path
        self._head_ns: int | None = None
        self._schema_ready = False
        self._writer_busy = False
        self._stop_deadline: float | None = None
        self._closed = False

    # --- the request path ------------------------------------------------------------------

    def emit(self, event: Mapping[str, Any]) -> None:
        """Enqueue one event: no I/O, no lock held. See :mod:`audit._sink` for the contract."""
        self._enqueue(time.time_ns(), contextvars.copy_context(), dict(event))

    def emit_at(
        self, event: Mapping[str, Any], *, emitted_ns: int, context: Mapping[str, Any]
    ) -> None:
        """:meth:`emit` for an event emitted elsewhere (:mod:`audit._worker`): at
        ``emitted_ns``, with ``context`` the structlog context variables bound there (the
        event's own fields win, as with ``merge_contextvars``)."""
        merged = dict(context)
        merged.update(event)
        self._enqueue(emitted_ns, contextvars.Context(), merged)

    def _enqueue(
        self, emitted_ns: int, context: contextvars.Context, event: dict[str, Any]
    ) -> None:
        spec = action_spec(event.get("event.action"))
        category = Category.BACKBONE if spec is None else spec.category
        queue = self._queue
        if self._accepting and not self._spool_full and len(queue) < self._max_queue:
            queue.append((emitted_ns, context, event, category))
            self._emitted += 1
            if len(queue) == 1:
                self._wake_writer.set()
            return
        self._refuse(category)

    def _refuse(self, category: Category) -> None:
        if category in self._blocking:
            self._refused[category.value] += 1
            raise AuditUnavailable(f"audit log cannot record a {category.value} event now")
        self._count_drop(category)

    def _count_drop(self, category: Category) -> None:
        with self._drop_lock:
            self._drops[category.value] += 1
            self._unreported_drops[category.value] += 1

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool and start the writer and shipper threads."""
        await asyncio.to_thread(self.open)

    async def aclose(self) -> None:
        """Stop accepting, spool everything queued, ship for up to ``close_timeout`` seconds
        (what is left stays spooled for the next start), stop."""
        await asyncio.to_thread(self.close)

    async def ready(self) -> bool:
        """True when the store answers and both loops run (for the health endpoint)."""
        return await asyncio.to_thread(self.is_ready)

    def is_ready(self) -> bool:
        """Synchronous :meth:`ready` (it pings the store: blocking)."""
        alive = bool(self._threads) and all(t.is_alive() for t in self._threads)
        return alive and self._store.ping()

    def open(self) -> None:
        """Synchronous :meth:`start`, for scripts and CLIs."""
        if self._threads or self._closed:
            raise RuntimeError("a pipeline starts once: it is running or was closed")
        self._spool = Spool(
            directory=self._spool_dir, max_bytes=self._spool_max_bytes, fsync=self._fsync
        )
        self._stopping.clear()
        self._writer_done.clear()
        self._threads = [
            threading.Thread(target=self._writer_loop, name="audit-writer", daemon=True),
            threading.Thread(target=self._shipper_loop, name="audit-shipper", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        self._accepting = False
        self._closed = True
        if not self._threads:
            return
        self._stopping.set()
        self._wake_writer.set()
        self._wake_shipper.set()
        with self._space:
            self._space.notify_all()
        writer, shipper = self._threads
        writer.join()
        # No timeout: the shipper gives up after close_timeout plus at most one request's
        # timeout, and the spool must not be closed under a thread still using it.
        shipper.join()
        self._threads = []
        hook_close = getattr(self._on_shipped, "close", None)
        if callable(hook_close):
            try:  # the digest writer closes its open interval and ships that digest
                hook_close()
            except Exception:  # the events are safe: say so and go on closing
                log.exception("audit_ship_hook_close_failed")
        if self._spool is not None:
            self._spool.close()  # kept: metrics() still reports what stays spooled

    def is_idle(self) -> bool:
        """True when everything emitted so far is stored: no queue, no batch in the writer's
        hands, an empty spool (non-blocking; :meth:`wait_idle` waits for it)."""
        spool = self._spool
        idle = not self._queue and not self._writer_busy
        return idle and spool is not None and spool.is_empty()

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything emitted so far is stored (or timeout); True when idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_idle():
                return True
            time.sleep(0.01)
        return False

    def metrics(self) -> Metrics:
        """Queue depth, spool bytes, counters and the age of the oldest unshipped event."""
        spool = self._spool
        head = spool.head_timestamp() if spool is not None else None
        oldest = _ns_of(head) if head is not None else None
        if self._queue:
            with contextlib.suppress(IndexError):  # emptied meanwhile by the writer
                queued = self._queue[0][0]
                oldest = queued if oldest is None else min(oldest, queued)
        age = max(0.0, (time.time_ns() - oldest) / 1e9) if oldest is not None else 0.0
        return Metrics(
            queue_depth=len(self._queue),
            spool_bytes=spool.unshipped_bytes if spool is not None else 0,
            events_emitted=self._emitted,
            events_spooled=self._spooled,
            events_shipped=self._shipped,
            events_duplicate=self._duplicates,
            retries=self._retries,
            dead_letters=self._dead_letters,
            drops=dict(self._drops),
            refused=dict(self._refused),
            oldest_unshipped_age_seconds=age,
            spool_full=self._spool_full,
        )

    # --- writer: queue → chain → spool -----------------------------------------------------

    def _render(self, item: tuple[int, contextvars.Context, dict[str, Any], Category]) -> bytes:
        emitted_ns, context, event, _ = item
        event[EMITTED_NS] = emitted_ns
        try:
            doc = context.run(run_chain, self._chain, event)
        except Exception:  # a bug in a processor must not lose the event
            log.exception("audit_chain_failed")
            doc = run_chain(
                self._chain,
                {
                    EMITTED_NS: emitted_ns,
                    "event.action": event.get("event.action"),
                    "labels": {"chain_error": "true"},
                },
            )
        record = Record(str(doc["event.id"]), str(doc["@timestamp"]), render_json(None, "", doc))
        return encode(record)

    def _writer_loop(self) -> None:
        while True:
            try:
                self._write_until_stopped()
                return
            except Exception:  # a dead writer would lose every later event: log, go on
                log.exception("audit_writer_failed")
                time.sleep(IDLE_WAIT)

    def _write_until_stopped(self) -> None:
        spool = self._spool
        assert spool is not None  # noqa: S101 - set by open()
        queue = self._queue
        while True:
            self._wake_writer.clear()
            if not queue:
                if self._stopping.is_set():
                    break
                self._writer_busy = False
                spool.sync_if_due()
                self._report_drops()
                self._wake_writer.wait(IDLE_WAIT)
                continue
            self._writer_busy = True
            items: list[tuple[int, contextvars.Context, dict[str, Any], Category]] = []
            while queue and len(items) < WRITER_CHUNK:
                items.append(queue.popleft())
            lines = [self._render(item) for item in items]
            try:
                spool.append(lines)
                self._spooled += len(lines)
                self._set_full(False)
            except SpoolFull:
                for item, line in zip(items, lines, strict=True):
                    self._append_one(spool, item[3], line)
            except OSError:
                log.exception("audit_spool_write_failed")
                for item, line in zip(items, lines, strict=True):
                    self._append_one(spool, item[3], line)
            self._wake_shipper.set()
        self._writer_busy = False
        self._writer_done.set()
        self._wake_shipper.set()

    def _append_one(self, spool: Spool, category: Category, line: bytes) -> None:
        """Spool one record when the spool was full: drop it, or wait for space (block)."""
        while True:
            try:
                spool.append([line])
                self._spooled += 1
                return
            except (SpoolFull, OSError):
                self._set_full(True)
            if category not in self._blocking:
                self._count_drop(category)
                return
            self._wake_shipper.set()
            with self._space:
                self._space.wait(IDLE_WAIT)
            if self._stopping.is_set() and not self._shipper_alive():
                log.error("audit_event_lost_at_shutdown", category=category.value)
                return

    def _shipper_alive(self) -> bool:
        return len(self._threads) == 2 and self._threads[1].is_alive()

    def _set_full(self, full: bool) -> None:
        if full != self._spool_full:
            self._spool_full = full
            log.warning("audit_spool_full" if full else "audit_spool_space_returned")

    def _report_drops(self) -> None:
        """Once there is room again, record that events were dropped (an alert event)."""
        if self._spool_full or not self._unreported_drops:
            return
        spool = self._spool
        if spool is not None and spool.live_bytes > spool.max_bytes * RESUME_RATIO:
            return
        with self._drop_lock:
            counts = dict(self._unreported_drops)
            self._unreported_drops.clear()
        labels = {f"dropped_{category}": str(n) for category, n in counts.items()}
        try:
            self.emit({"event.action": Action.AUDIT_EVENTS_DROPPED, "labels": labels})
        except AuditUnavailable:
            with self._drop_lock:
                self._unreported_drops.update(counts)

    # --- shipper: spool → store ------------------------------------------------------------

    def _backoff(self, attempt: int) -> None:
        ceiling = min(self._backoff_max, self._backoff_base * (2**attempt))
        delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
        stop_at = self._stop_deadline
        if stop_at is None:
            self._stopping.wait(delay)  # close() cuts a long backoff short
        else:  # closing: keep pacing the last attempts until the close deadline
            time.sleep(min(delay, max(0.0, stop_at - time.monotonic())))

    def _giving_up(self) -> bool:
        """During close: True once the close timeout has passed."""
        if not self._stopping.is_set():
            return False
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self._close_timeout
        return time.monotonic() >= self._stop_deadline

    def _shipper_loop(self) -> None:
        self._stop_deadline = None
        attempt = 0
        while True:
            try:
                self._ship_until_stopped()
                return
            except Exception:  # e.g. a spool I/O error: log, back off, resume from the cursor
                log.exception("audit_shipper_failed")
                self._retries += 1
                if self._spool is not None:
                    self._spool.rewind()
                if self._giving_up():
                    return
                self._backoff(attempt)
                attempt += 1

    def _ship_until_stopped(self) -> None:
        spool = self._spool
        assert spool is not None  # noqa: S101 - set by open()
        attempt = 0
        while not self._schema_ready:
            try:
                self._store.ensure_schema()
                self._schema_ready = True
            except StoreError as exc:
                log.warning("audit_store_schema_failed", error=str(exc))
                self._retries += 1
                if self._giving_up():
                    return
                self._backoff(attempt)
                attempt += 1
        while True:
            if self._giving_up():  # closing: a backlog stays spooled for the next start
                return
            # Judged before reading: a record the writer spools after an empty read must not
            # be left behind because the writer finished meanwhile.
            finished = self._stopping.is_set() and self._writer_done.is_set()
            batch = spool.read(max_records=self._batch_size, max_bytes=self._batch_bytes)
            if not batch.records and not batch.corrupt:
                self._head_ns = None
                if finished:
                    return
                self._on_shipped(())
                self._wake_shipper.clear()
                self._wake_shipper.wait(self._flush_interval)
                continue
            if batch.records:
                self._head_ns = _ns_of(batch.records[0].timestamp)
            if (
                len(batch.records) < self._batch_size
                and not self._stopping.is_set()
                and self._head_ns is not None
                and time.time_ns() - self._head_ns < self._flush_interval * 1e9
            ):  # a small batch of fresh events: wait a little for more
                spool.rewind()
                self._wake_shipper.clear()
                self._wake_shipper.wait(self._flush_interval / 4)
                continue
            self._stored = []
            if not self._ship(spool, batch):
                return  # closing, and the store is still away: the spool keeps the rest
            self._on_shipped(self._stored)
            spool.commit(batch.end)
            if self._spool_full and spool.live_bytes <= spool.max_bytes * RESUME_RATIO:
                self._set_full(False)  # room again: accept events, report what was dropped
                self._wake_writer.set()
            with self._space:
                self._space.notify_all()

    def _ship(self, spool: Spool, batch: Batch) -> bool:
        """Store every record of ``batch`` (or dead-letter it); False if giving up on close."""
        if batch.corrupt:
            bad = [
                (Record("", "", line), ItemResult("rejected", why, "corrupt"))
                for line, why in batch.corrupt
            ]
            self._deadletter(spool, bad)
        pending = batch.records
        attempt = 0
        while pending:
            try:
                results = self._store.write(pending)
            except StoreUnavailable as exc:
                log.warning("audit_store_unavailable", error=str(exc), records=len(pending))
                results = [ItemResult("retry", str(exc))] * len(pending)
            except StoreError as exc:  # the request as a whole was refused: find the culprit
                if len(pending) == 1:
                    results = [ItemResult("rejected", str(exc), "request_rejected")]
                else:
                    half = len(pending) // 2
                    first = Batch(pending[:half], batch.end, [])
                    second = Batch(pending[half:], batch.end, [])
                    return self._ship(spool, first) and self._ship(spool, second)
            retry = self._tally(spool, pending, results)
            if retry:
                self._retries += len(retry)
                if self._giving_up():
                    spool.rewind()
                    return False
                self._backoff(attempt)
                attempt += 1
            pending = retry
        return True

    def _tally(
        self, spool: Spool, pending: list[Record], results: list[ItemResult]
    ) -> list[Record]:
        """Count stored and duplicate items, dead-letter rejected ones; return the rest."""
        retry: list[Record] = []
        rejected: list[tuple[Record, ItemResult]] = []
        for record, result in zip(pending, results, strict=True):
            if result.status in ("stored", "duplicate"):
                self._stored.append(record)
                self._shipped += 1
                self._duplicates += result.status == "duplicate"
            elif result.status == "rejected":
                rejected.append((record, result))
            else:
                retry.append(record)
        if rejected:
            self._deadletter(spool, rejected)
        return retry

    def _deadletter(self, spool: Spool, items: list[tuple[Record, ItemResult]]) -> None:
        spool.deadletter(items)  # the file first: it does not depend on the store
        self._dead_letters += len(items)
        for record, result in items:
            log.error("audit_event_dead_lettered", event_id=record.event_id, reason=result.reason)
        try:
            self._store.write_deadletters([(r, i) for r, i in items if r.event_id])
        except StoreError as exc:
            log.warning("audit_deadletter_index_failed", error=str(exc))


def _no_hook(_records: Sequence[Record]) -> None:
    """No tamper-evidence hook configured."""


def _ns_of(timestamp: str) -> int | None:
    try:
        return int(parse_timestamp(timestamp).timestamp() * 1e9)
    except ValueError:
        return None
