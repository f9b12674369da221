"""The audit pipeline in a process of its own, so the request process only enqueues.

::

    gateway process                              audit worker process (audit._worker.main)
    emit() ──▶ deque ──▶ flusher thread ──pipe──▶ reader ──▶ AuditPipeline (chain, spool, ship)
    (µs: no chain, no I/O)  orjson lines, one       │                       │
                            write per tick          └── metrics lines ◀─────┘ (stdout, 4 per s)

Measured (``python -m bench.gateway``): the processor chain, the spool writer and the shipper
cost about as much CPU per request as the whole forwarding path, all under the request
process's GIL. :class:`AuditWorker` moves them into a child process that runs an ordinary
:class:`audit.AuditPipeline` (same chain, spool and shipper; the shipper's one place where a
batch passes, ``AuditPipeline._ship``, runs there). The request process keeps a bounded deque
and a flusher thread that writes each tick's events as JSON lines to a pipe.

The personal-data access event, recorded on nearly every allowed request, also comes in a
compact form (:meth:`AuditWorker.emit_personal_data`, :mod:`audit._access`): a tuple of what
varies per request, written as a JSON array and expanded into the full event by the worker
process, so the request process neither builds nor writes the dict (measured in
``bench/PROFILE.md``). Its line is ``[emitted_ns, context, [fields...]]``; it is queued,
refused, written, read and stored exactly as the expanded event would be.

What is not lost, and when:

- the parent keeps the read end of the pipe open, so a worker that dies leaves the events
  still in the pipe to its replacement (restarted after ``restart_delay``, doubled for each
  death in a row of a worker that ran less than ``stable_after``, up to
  ``max_restart_delay``: a worker that cannot run is not respawned in a hot loop); the spool
  it left behind is replayed by the new worker as at any start;
- a worker that cannot take events (its spool is full and the category's policy is
  ``block``) stops reading; the pipe fills, the parent's deque fills to ``max_queue``, and from
  then on ``emit`` applies the category's policy at once: ``block`` raises
  :class:`audit.errors.AuditUnavailable` (the gateway answers 503), ``drop`` counts the drop.
  The parent also refuses as soon as the worker reports its spool full, as the in-process
  pipeline does;
- at shutdown the parent flushes its deque and closes the pipe; the worker spools what it
  read, ships for up to its close timeout and exits (what is left stays spooled);
- if the gateway process is killed, the pipe's write end closes with it: the worker reads
  what is left, spools and ships it, and exits;
- lost on SIGKILL, as with the in-process pipeline's queue: events in the parent's deque
  (at most one ``write_interval``) and events the worker had read but not yet spooled.

The worker runs in its own session and ignores SIGTERM and SIGINT, so a Ctrl-C at the
terminal or a service manager's SIGTERM reaches only the gateway, which then drains the worker
in order (SIGKILL still ends it; its spool stays for the next start). Raw events cross the
pipe in memory only; the spool on disk holds them after the chain (redacted, escaped), as
before.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import importlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import orjson
import structlog

from audit._access import PERSONAL_DATA_ACTION, PersonalDataAccess, personal_data_access_event
from audit._pipeline import DEFAULT_FULL_POLICY, AuditPipeline, Metrics
from audit.errors import AuditUnavailable
from audit.events import Category, action_spec

__all__ = ["AuditWorker", "WorkerSpec", "restart_backoff"]

logger = logging.getLogger("audit.worker")

DEFAULT_MAX_QUEUE: Final = 10_000
DEFAULT_WRITE_INTERVAL: Final = 0.02
DEFAULT_RESTART_DELAY: Final = 0.5
DEFAULT_MAX_RESTART_DELAY: Final = 10.0
#: A worker that ran this long before it died is restarted after ``restart_delay`` again.
DEFAULT_STABLE_AFTER: Final = 10.0
REPORT_INTERVAL: Final = 0.25
READY_INTERVAL: Final = 2.0
#: The kernel's pipe buffer is raised to this (Linux; the default is 64 KiB).
PIPE_BYTES: Final = 1024 * 1024
#: The file descriptor on which a worker reads its :class:`WorkerSpec` (pickled).
SPEC_FD: Final = 3
#: One line per event: ``[emitted_ns, context, event]`` and a newline (``event`` an object, or
#: the array of a compact personal-data access).
_JSON_OPTIONS: Final = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
_LINE_FAST: Final = orjson.OPT_APPEND_NEWLINE
#: How the worker is started (``-m audit._worker`` would import this module twice: the
#: package imports it).
_WORKER_COMMAND: Final = "import sys; from audit._worker import main; sys.exit(main())"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How the worker builds its pipeline: ``factory`` ("module:function") called with
    ``args``; it returns an unopened :class:`AuditPipeline`. Sent to the worker over a private
    pipe (it may hold store credentials), never on the command line or in the environment."""

    factory: str
    args: tuple[Any, ...] = ()


_EMPTY: Final = Metrics(
    queue_depth=0,
    spool_bytes=0,
    events_emitted=0,
    events_spooled=0,
    events_shipped=0,
    events_duplicate=0,
    retries=0,
    dead_letters=0,
)


def _add(earlier: Metrics, current: Metrics) -> Metrics:
    """Counters summed over workers; gauges (queue, spool, age, full) from the current one."""
    drops = Counter(earlier.drops)
    drops.update(current.drops)
    refused = Counter(earlier.refused)
    refused.update(current.refused)
    return replace(
        current,
        events_emitted=earlier.events_emitted + current.events_emitted,
        events_spooled=earlier.events_spooled + current.events_spooled,
        events_shipped=earlier.events_shipped + current.events_shipped,
        events_duplicate=earlier.events_duplicate + current.events_duplicate,
        retries=earlier.retries + current.retries,
        dead_letters=earlier.dead_letters + current.dead_letters,
        drops=dict(drops),
        refused=dict(refused),
    )


def restart_backoff(deaths: int, *, base: float, cap: float) -> float:
    """Seconds to wait before restarting a worker after ``deaths`` quick deaths in a row
    before this one: ``base``, doubled for each, at most ``cap``."""
    return float(min(base * 2 ** min(deaths, 32), cap))


#: What the deque holds: (emitted_ns, structlog context, event or compact personal-data access).
_Item = tuple[int, dict[str, Any], dict[str, Any] | PersonalDataAccess]


def _jsonable(value: Any) -> Any:
    """What orjson cannot write itself: sets as sorted lists (as the chain's stamp does),
    anything else as its text (as the chain's renderer does)."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


class AuditWorker:
    """An :class:`audit.AuditSink` whose pipeline runs in a supervised child process.

    The same lifecycle as :class:`AuditPipeline`: ``await start()``, ``await aclose()``,
    ``await ready()``, ``metrics()`` (the worker's figures, reported four times a second, plus
    this process's queue and what waits in the pipe).
    """

    def __init__(
        self,
        *,
        spec: WorkerSpec,
        full_policy: Mapping[Category, str] | Mapping[str, str] | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        write_interval: float = DEFAULT_WRITE_INTERVAL,
        restart_delay: float = DEFAULT_RESTART_DELAY,
        max_restart_delay: float = DEFAULT_MAX_RESTART_DELAY,
        stable_after: float = DEFAULT_STABLE_AFTER,
        close_timeout: float = 60.0,
        start_timeout: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        policy: dict[Category, str] = dict(DEFAULT_FULL_POLICY)
        for name, value in (full_policy or {}).items():
            if name not in set(Category):
                raise ValueError(f"unknown audit category {name!r} in the spool-full policy")
            policy[Category(name)] = value
        if any(value not in ("block", "drop") for value in policy.values()):
            raise ValueError("spool-full policies are 'block' or 'drop'")
        if max_queue < 1 or not 0 < write_interval <= 1 or restart_delay < 0:
            raise ValueError("max_queue, write_interval and restart_delay out of range")
        if max_restart_delay < restart_delay or stable_after <= 0:
            raise ValueError("max_restart_delay below restart_delay, or stable_after not > 0")
        self._spec = pickle.dumps(spec)
        self._blocking = frozenset(c for c, p in policy.items() if p == "block")
        self._max_queue = max_queue
        self._write_interval = write_interval
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay
        self._stable_after = stable_after
        self._quick_deaths = 0  # in a row, each of a worker that ran less than stable_after
        self._last_restart_delay: float | None = None
        self._spawned_at = 0.0
        self._close_timeout = close_timeout
        self._start_timeout = start_timeout
        self._python = python

        self._queue: deque[_Item] = deque()
        self._accepting = True  # events emitted before start() wait in the queue
        self._emitted = 0
        self._drops: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._serialise_failures = 0
        self._restarts = 0
        # What the flusher wrote to the pipe, to turn the bytes waiting there into events.
        self._lines_written = 0
        self._bytes_written = 0
        self._reported: Metrics | None = None  # the running worker's latest report
        self._earlier = _EMPTY  # the last figures of workers that died (counters go on)
        self._worker_ready = False
        # The worker's own judgement that all it had taken when it reported is stored (its
        # queue and spool figures alone miss a batch the writer holds between the two).
        self._worker_idle = False
        self._reader: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._read_fd = -1
        self._write_fd = -1
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # the process handle, between supervisor and close

    # --- the request path ------------------------------------------------------------------

    def emit(self, event: Mapping[str, Any]) -> None:
        """Enqueue one event: no I/O, no lock, no thread woken (see :mod:`audit._sink`)."""
        reported = self._reported
        if (
            self._accepting
            and (reported is None or not reported.spool_full)
            and len(self._queue) < self._max_queue
        ):
            context = structlog.contextvars.get_contextvars()
            self._queue.append((time.time_ns(), context, dict(event)))
            self._emitted += 1
            return
        self._refuse(event.get("event.action"))

    def emit_personal_data(self, fields: PersonalDataAccess) -> None:
        """:meth:`emit` of ``personal_data_access_event(fields)``, the event built by the
        worker process from the compact form (:mod:`audit._access`): the same time stamp
        (taken here), context variables, refusal and line as :meth:`emit`. The flusher writes
        ``fields`` later: the caller does not change them (nor the exposed mapping)."""
        reported = self._reported
        if (
            self._accepting
            and (reported is None or not reported.spool_full)
            and len(self._queue) < self._max_queue
        ):
            if type(fields[9]) is not dict:  # orjson writes dicts only: a copy, as emit makes
                fields = (*fields[:9], dict(fields[9]))
            context = structlog.contextvars.get_contextvars()
            self._queue.append((time.time_ns(), context, fields))
            self._emitted += 1
            return
        self._refuse(PERSONAL_DATA_ACTION)

    def _refuse(self, action: Any) -> None:
        """The category of the refused event's action decides (looked up only here)."""
        spec = action_spec(action)
        category = Category.BACKBONE if spec is None else spec.category
        if category in self._blocking:
            self._refused[category.value] += 1
            raise AuditUnavailable(f"audit log cannot record a {category.value} event now")
        self._drops[category.value] += 1

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker process, the flusher and the supervisor; returns once the worker
        has opened its pipeline (raises if it could not)."""
        await asyncio.to_thread(self.open)

    async def aclose(self) -> None:
        """Flush, let the worker spool and ship what it has, and stop it."""
        await asyncio.to_thread(self.close)

    async def ready(self) -> bool:
        """True when the worker runs and reports its pipeline ready (store reachable)."""
        process = self._process
        return process is not None and process.poll() is None and self._worker_ready

    def open(self) -> None:
        if self._threads or self._stopping.is_set():
            raise RuntimeError("a worker starts once: it is running or was closed")
        self._read_fd, self._write_fd = os.pipe()
        with contextlib.suppress(OSError):  # F_SETPIPE_SZ is Linux-only; a smaller pipe works
            fcntl.fcntl(self._write_fd, 1031, PIPE_BYTES)  # F_SETPIPE_SZ
        os.set_inheritable(self._read_fd, False)
        os.set_inheritable(self._write_fd, False)
        os.set_blocking(self._write_fd, False)  # the flusher waits itself (see _write)
        self._spawn()
        self._wait_started()
        self._threads = [
            threading.Thread(target=self._flusher, name="audit-flusher", daemon=True),
            threading.Thread(target=self._supervisor, name="audit-supervisor", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _wait_started(self) -> None:
        """Until the first report (the pipeline is open): a worker that cannot start (bad
        settings, a spool in use) stops the gateway's start, as the in-process pipeline's
        ``open`` would."""
        deadline = time.monotonic() + self._start_timeout
        process = self._process
        while self._reported is None:
            if process is None or process.poll() is not None or time.monotonic() > deadline:
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
                os.close(self._write_fd)
                os.close(self._read_fd)
                self._write_fd = self._read_fd = -1
                self._stopping.set()
                self._accepting = False
                raise RuntimeError("the audit worker did not start (see its log above)")
            time.sleep(0.01)

    def close(self) -> None:
        self._accepting = False
        if not self._threads:
            self._stopping.set()
            return
        self._stopping.set()
        flusher, supervisor = self._threads
        flusher.join()  # writes what is queued, then closes the pipe: the worker sees EOF
        supervisor.join()
        self._threads = []
        with self._lock:
            process = self._process
        if process is not None:
            try:
                process.wait(timeout=self._close_timeout)
            except subprocess.TimeoutExpired:
                logger.error("audit worker did not stop in time; killing it (its spool stays)")
                process.kill()
                process.wait()
            self._drain_reports(process)
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything emitted so far is stored (or timeout); True when idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reported = self._reported
            taken = self._earlier.events_emitted + (reported.events_emitted if reported else 0)
            # Read after the figures: an idle flag at least as new as them (see _take_report).
            if (
                not self._queue
                and reported is not None
                and taken >= self._emitted
                and self._worker_idle
            ):
                return True
            time.sleep(0.01)
        return False

    def metrics(self) -> Metrics:
        """The workers' figures (restarts included), with this process's queue and refusals.

        ``events_emitted`` counts what this process accepted; the worker's own count of what
        it took is behind by what is still in the pipe.
        """
        now = _add(self._earlier, self._reported or _EMPTY)
        drops = Counter(now.drops)
        drops.update(self._drops)
        refused = Counter(now.refused)
        refused.update(self._refused)
        return replace(
            now,
            queue_depth=now.queue_depth + len(self._queue) + self.in_pipe(),
            events_emitted=self._emitted,
            drops=dict(drops),
            refused=dict(refused),
        )

    @property
    def restarts(self) -> int:
        """How many times the worker was restarted after it died."""
        return self._restarts

    @property
    def last_restart_delay(self) -> float | None:
        """Seconds waited before the latest restart (None before any)."""
        return self._last_restart_delay

    def in_pipe(self) -> int:
        """Events written to the pipe that no worker has read yet: the bytes waiting there
        (``FIONREAD``) over the mean line written. An estimate within a line or two; what a
        worker has read into its own buffer (8 KiB at most) is not counted."""
        fd = self._read_fd
        if fd < 0 or not self._lines_written:
            return 0
        try:
            waiting: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
        except OSError:  # closed meanwhile (shutdown)
            return 0
        return round(waiting * self._lines_written / self._bytes_written)

    # --- the worker process ----------------------------------------------------------------

    def _spawn(self) -> None:
        spec_read, spec_write = os.pipe()
        try:
            process = subprocess.Popen(
                [self._python, "-c", _WORKER_COMMAND],
                stdin=self._read_fd,
                stdout=subprocess.PIPE,
                pass_fds=(spec_read,),
                env={**os.environ, "AUDIT_WORKER_SPEC_FD": str(spec_read)},
                start_new_session=True,  # Ctrl-C stops the gateway, which drains the worker
            )
        finally:
            os.close(spec_read)
        with contextlib.suppress(BrokenPipeError), os.fdopen(spec_write, "wb") as handle:
            handle.write(self._spec)  # a worker that died at once: the supervisor sees it
        if self._reader is not None:  # the previous worker's last report is read by now
            self._reader.join(timeout=2)
        if self._reported is not None:
            self._earlier = _add(self._earlier, self._reported)
            self._worker_idle = False
            self._reported = None
        with self._lock:
            self._process = process
            self._spawned_at = time.monotonic()
        self._reader = threading.Thread(
            target=self._read_reports, args=(process,), name="audit-reports", daemon=True
        )
        self._reader.start()

    def _read_reports(self, process: subprocess.Popen[bytes]) -> None:
        stdout = process.stdout
        if stdout is None:
            return
        with stdout:
            for line in stdout:
                self._take_report(line)

    def _drain_reports(self, _process: subprocess.Popen[bytes]) -> None:
        """After the worker exited: its last report (the final figures) is read to the end."""
        if self._reader is not None:
            self._reader.join(timeout=2)

    def _take_report(self, line: bytes) -> None:
        try:
            report = orjson.loads(line)
            self._worker_ready = bool(report.pop("ready"))
            self._worker_idle = bool(report.pop("idle", False))  # set before the figures
            self._reported = Metrics(**report)
        except (ValueError, TypeError, KeyError):
            logger.warning("audit worker sent an unreadable report")

    def _supervisor(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            if process is not None and process.poll() is not None and not self._stopping.is_set():
                if time.monotonic() - self._spawned_at >= self._stable_after:
                    self._quick_deaths = 0
                delay = restart_backoff(
                    self._quick_deaths, base=self._restart_delay, cap=self._max_restart_delay
                )
                self._quick_deaths += 1
                logger.error(
                    "audit worker exited with %s; restarting it in %.1f s (events in the pipe "
                    "wait)",
                    process.returncode,
                    delay,
                )
                self._worker_ready = False
                self._restarts += 1
                self._last_restart_delay = delay
                self._stopping.wait(delay)
                if self._stopping.is_set():
                    break
                self._spawn()
            self._stopping.wait(0.1)
        # Closing: a worker that died just now must still take what the flusher wrote.
        with self._lock:
            process = self._process
        if process is not None and process.poll() is not None and process.returncode != 0:
            self._restarts += 1
            self._spawn()

    # --- the flusher -----------------------------------------------------------------------

    def _flusher(self) -> None:
        """Every ``write_interval``: what is queued, written to the pipe. It sleeps rather than
        waits on ``_stopping`` (measured: about half the CPU per tick, which the gateway pays
        50 times a second); ``close`` waits for at most one more interval."""
        queue = self._queue
        try:
            while True:
                stopping = self._stopping.is_set()
                if queue:
                    items = [queue.popleft() for _ in range(len(queue))]
                    data = self._lines(items)
                    self._write(data)
                    self._lines_written += len(items)  # one line each (counting b"\n" cost
                    self._bytes_written += len(data)  # a third of a µs per event)
                if stopping and not queue:
                    return
                time.sleep(self._write_interval)
        finally:
            os.close(self._write_fd)  # EOF for the worker: spool, ship, exit
            self._write_fd = -1

    def _lines(self, items: Iterable[_Item]) -> bytes:
        """One JSON line per item."""
        lines: list[bytes] = []
        dumps = orjson.dumps
        for item in items:
            try:
                # Most events hold only what orjson writes itself: without ``default`` and
                # OPT_NON_STR_KEYS it writes them faster, and byte for byte as it would with
                # them (they change only what orjson would otherwise refuse, with TypeError).
                lines.append(dumps(item, option=_LINE_FAST))
                continue
            except TypeError:
                pass
            emitted_ns, _, event = item
            action = event.get("event.action") if isinstance(event, dict) else PERSONAL_DATA_ACTION
            try:
                line = orjson.dumps(item, default=_jsonable, option=_JSON_OPTIONS)
            except TypeError:  # a value orjson cannot write even as text: keep the event
                self._serialise_failures += 1
                logger.exception("audit event could not be serialised; sending its action")
                line = orjson.dumps(
                    [
                        emitted_ns,
                        {},
                        {
                            "event.action": str(action),
                            "labels": {"serialise_error": "true"},
                        },
                    ],
                    option=orjson.OPT_APPEND_NEWLINE,
                )
            lines.append(line)
        return b"".join(lines)

    def _write(self, data: bytes) -> None:
        """Write all of ``data`` to the pipe; waits while the worker is not reading (the pipe
        is full), except when closing: then for ``close_timeout`` at most."""
        view = memoryview(data)
        deadline: float | None = None
        while view:
            try:
                written = os.write(self._write_fd, view)
            except BlockingIOError:
                if self._stopping.is_set():
                    deadline = deadline or time.monotonic() + self._close_timeout
                    if time.monotonic() > deadline:
                        lost = bytes(view).count(b"\n")
                        logger.error("audit worker takes no events; %d lost at shutdown", lost)
                        return
                time.sleep(0.005)
                continue
            view = view[written:]


# --- the worker's side ---------------------------------------------------------------------


def _build(spec: WorkerSpec) -> AuditPipeline:
    module, _, name = spec.factory.partition(":")
    factory = getattr(importlib.import_module(module), name)
    pipeline = factory(*spec.args)
    if not isinstance(pipeline, AuditPipeline):
        raise TypeError(f"{spec.factory} did not return an AuditPipeline")
    return pipeline


def _report(pipeline: AuditPipeline, ready: bool) -> None:
    figures = asdict(pipeline.metrics())
    # Judged after the figures: idle means every event counted in them is stored.
    line = orjson.dumps({**figures, "ready": ready, "idle": pipeline.is_idle()})
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.buffer.flush()


def _reporter(pipeline: AuditPipeline, stop: threading.Event) -> None:
    ready, checked = False, 0.0
    while not stop.is_set():
        now = time.monotonic()
        if now - checked >= READY_INTERVAL:
            ready, checked = pipeline.is_ready(), now
        with contextlib.suppress(OSError, ValueError):  # the gateway went away
            _report(pipeline, ready)
        stop.wait(REPORT_INTERVAL)


def _take(pipeline: AuditPipeline, line: bytes) -> None:
    try:
        emitted_ns, context, event = orjson.loads(line)
        if isinstance(event, list):  # a compact personal-data access
            event = personal_data_access_event(event)
        if not isinstance(emitted_ns, int) or not isinstance(event, dict):
            raise ValueError("not [ns, context, event]")
    except (ValueError, TypeError):  # a line cut by a worker that died mid-read: say so, go on
        logger.error("audit worker skipped an unreadable line of %d bytes", len(line))
        return
    while True:
        try:
            pipeline.emit_at(event, emitted_ns=emitted_ns, context=context)
            return
        except AuditUnavailable:  # spool full for a blocking category: wait for space
            time.sleep(0.01)


def main() -> int:
    """The worker process's entry point: started by :class:`AuditWorker`, not by hand."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Stopping is the gateway's to decide: it closes the pipe once it has flushed, and the
    # worker then spools and ships what it got. A SIGTERM or Ctrl-C meant for the whole
    # service must not cut that short (a gateway that is gone closes the pipe too).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(os.environ.get("AUDIT_WORKER_SPEC_FD", SPEC_FD))
    with os.fdopen(fd, "rb") as handle:
        spec = pickle.loads(handle.read())  # noqa: S301 - from our parent, over a private pipe
    pipeline = _build(spec)
    pipeline.open()
    gc.collect()
    gc.freeze()  # what start-up built (imports, store client) is never garbage: skip it in GC
    stop = threading.Event()
    reporter = threading.Thread(target=_reporter, args=(pipeline, stop), daemon=True)
    reporter.start()
    stdin = sys.stdin.buffer
    for line in stdin:
        if line.strip():
            _take(pipeline, line)
    stop.set()
    reporter.join()
    pipeline.close()
    with contextlib.suppress(OSError, ValueError):
        _report(pipeline, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
