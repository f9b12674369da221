"""The durable local spool: append-only segment files and a cursor that only moves forward.

Layout of the spool directory::

    00000000000000000001.seg     records, one per line: ``<event id>\\t<@timestamp>\\t<json>\\n``
    00000000000000000002.seg     (a new segment starts when the current one is full)
    cursor                       ``<segment> <offset> <crc32>``: everything before it is stored
                                 (or dead-lettered); a fixed-size record overwritten in place
    deadletter.jsonl             rejected records, whole, with the reason

The writer appends; the reader (the shipper) reads from its own position and calls
:meth:`Spool.commit` only once every record up to a position is stored, so a crash replays
at most the batch in flight, and the store's ``create``-by-id makes the replay harmless.
A segment wholly behind the cursor is deleted. The byte bound counts every live segment byte,
so the spool never takes more disk than ``max_bytes`` (plus one record).

``fsync``: ``always`` (every append and cursor move reaches the disk before returning;
survives power loss), ``interval`` (at most ``fsync_interval`` seconds of records at risk on
power loss), ``never`` (the OS decides). A process crash (``kill -9``) loses nothing written
under any policy: the page cache outlives the process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import orjson

from audit._store import ItemResult, Record
from audit.errors import SpoolFull, SpoolLocked

__all__ = ["Batch", "FsyncPolicy", "Spool"]

FsyncPolicy = Literal["always", "interval", "never"]

DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES: Final = 8 * 1024 * 1024
DEFAULT_FSYNC_INTERVAL: Final = 1.0
READ_CHUNK: Final = 256 * 1024
SEGMENT_SUFFIX: Final = ".seg"
CURSOR_FILE: Final = "cursor"
CURSOR_SIZE: Final = 51  # "<20 digits> <20 digits> <8 hex>\n"
LOCK_FILE: Final = "lock"
DEADLETTER_FILE: Final = "deadletter.jsonl"


@dataclass(frozen=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Records read from the spool, and the position just after the last of them."""

    records: list[Record]
    end: Position
    corrupt: list[tuple[bytes, str]]  # lines that could not be parsed, with why


def encode(record: Record) -> bytes:
    """One spool line for ``record``."""
    return f"{record.event_id}\t{record.timestamp}\t".encode() + record.document + b"\n"


def _decode(line: bytes) -> Record:
    event_id, timestamp, document = line.rstrip(b"\n").split(b"\t", 2)
    return Record(event_id.decode(), timestamp.decode(), document)


class Spool:
    """Append-only segments with a committed cursor. Thread-safe: one writer, one reader."""

    def __init__(
        self,
        *,
        directory: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int | None = None,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL,
    ) -> None:
        if max_bytes < 4096:
            raise ValueError("the spool needs at least 4096 bytes")
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = _lock_directory(self.directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(DEFAULT_SEGMENT_BYTES, max(max_bytes // 8, 1024))
        self._fsync = fsync
        self._fsync_interval = fsync_interval
        self._last_sync = time.monotonic()
        self._dirty = False
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # live segment number -> bytes
        self._cursor = self._recover()
        self._read = self._cursor
        self._active = max(self._sizes) if self._sizes else self._cursor.segment
        self._fd = self._open_active()
        self._cursor_fd = os.open(self.directory / CURSOR_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._cursor_fd).st_size != CURSOR_SIZE:  # new: allocate its block now
            os.pwrite(self._cursor_fd, _cursor_record(self._cursor), 0)
            os.ftruncate(self._cursor_fd, CURSOR_SIZE)

    # --- recovery --------------------------------------------------------------------------

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{SEGMENT_SUFFIX}"

    def _recover(self) -> Position:
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            with contextlib.suppress(ValueError):
                self._sizes[int(path.stem)] = path.stat().st_size
        cursor = Position(min(self._sizes) if self._sizes else 1, 0)
        stored = _read_cursor(self.directory / CURSOR_FILE)
        if stored is not None:
            cursor = stored
        for number in [n for n in self._sizes if n < cursor.segment]:  # behind the cursor
            self._segment_path(number).unlink(missing_ok=True)
            del self._sizes[number]
        if self._sizes:  # a torn last line (power loss mid-write): cut it off
            last = max(self._sizes)
            path = self._segment_path(last)
            data = path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                with path.open("r+b") as handle:
                    handle.truncate(keep)
                self._sizes[last] = keep
        return cursor

    def _open_active(self) -> int:
        path = self._segment_path(self._active)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._sizes.setdefault(self._active, os.fstat(fd).st_size)
        return fd

    # --- writing ---------------------------------------------------------------------------

    @property
    def live_bytes(self) -> int:
        """Bytes on disk in live segments (what the byte bound limits)."""
        return sum(self._sizes.values())

    @property
    def unshipped_bytes(self) -> int:
        """Bytes of records after the committed cursor."""
        with self._lock:
            return sum(self._sizes.values()) - self._cursor.offset

    def append(self, lines: list[bytes]) -> None:
        """Append encoded records, all or none. Raises SpoolFull when they do not fit."""
        data = b"".join(lines)
        with self._lock:
            if sum(self._sizes.values()) + len(data) > self.max_bytes:
                raise SpoolFull("spool byte bound reached")
            if self._sizes[self._active] > 0 and (
                self._sizes[self._active] + len(data) > self.segment_bytes
            ):
                self._rotate()
            before = self._sizes[self._active]
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                os.ftruncate(self._fd, before)  # all or none
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise SpoolFull("the spool's disk is full") from exc
                raise
            self._sizes[self._active] = before + len(data)
            self._maybe_sync(self._fd)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._active += 1
        self._fd = self._open_active()
        if self._fsync != "never":
            _fsync_dir(self.directory)

    def _maybe_sync(self, fd: int) -> None:
        self._dirty = True
        if self._fsync == "always":
            os.fsync(fd)
            self._dirty = False
        elif self._fsync == "interval":
            now = time.monotonic()
            if now - self._last_sync >= self._fsync_interval:
                os.fsync(fd)
                self._last_sync, self._dirty = now, False

    def sync_if_due(self) -> None:
        """Under ``interval``: flush records appended since the last sync once the interval
        has passed, also when no further append comes (the writer calls this when idle)."""
        with self._lock:
            if self._fsync == "interval" and self._dirty and self._fd >= 0:
                now = time.monotonic()
                if now - self._last_sync >= self._fsync_interval:
                    os.fsync(self._fd)
                    self._last_sync, self._dirty = now, False

    # --- reading ---------------------------------------------------------------------------

    def read(self, *, max_records: int, max_bytes: int) -> Batch:
        """The next records after the reader's position (not yet committed)."""
        records: list[Record] = []
        corrupt: list[tuple[bytes, str]] = []
        with self._lock:
            position = self._read
            sizes = dict(self._sizes)
        taken = 0
        while len(records) < max_records and taken < max_bytes:
            size = sizes.get(position.segment)
            if size is None or position.offset >= size:
                later = [n for n in sizes if n > position.segment]
                if not later:
                    break
                position = Position(min(later), 0)
                continue
            with self._segment_path(position.segment).open("rb") as handle:
                handle.seek(position.offset)
                chunk = handle.read(
                    min(size - position.offset, max(max_bytes - taken, 1), READ_CHUNK)
                )
            end = chunk.rfind(b"\n") + 1
            if end == 0:  # one record longer than what is left of max_bytes: take it whole
                with self._segment_path(position.segment).open("rb") as handle:
                    handle.seek(position.offset)
                    chunk = handle.readline()
                end = len(chunk)
            offset = position.offset
            for line in chunk[:end].splitlines(keepends=True):
                if len(records) >= max_records:
                    break
                offset += len(line)
                taken += len(line)
                try:
                    records.append(_decode(line))
                except ValueError as exc:
                    corrupt.append((line, f"corrupt spool record: {exc}"))
            position = Position(position.segment, offset)
        with self._lock:
            self._read = position
        return Batch(records, position, corrupt)

    def head_timestamp(self) -> str | None:
        """The ``@timestamp`` of the oldest record not yet committed, or None when empty."""
        with self._lock:
            position = self._cursor
            sizes = dict(self._sizes)
        for number in sorted(n for n in sizes if n >= position.segment):
            offset = position.offset if number == position.segment else 0
            if offset >= sizes[number]:
                continue
            try:
                with self._segment_path(number).open("rb") as handle:
                    handle.seek(offset)
                    line = handle.readline()
                return _decode(line).timestamp
            except (OSError, ValueError):
                return None
        return None

    def rewind(self) -> None:
        """Read again from the committed cursor (after a failed batch)."""
        with self._lock:
            self._read = self._cursor

    def commit(self, position: Position) -> None:
        """Everything before ``position`` is stored: move the cursor, free whole segments."""
        with self._lock:
            self._cursor = position
            for number in [n for n in self._sizes if n < position.segment]:
                self._segment_path(number).unlink(missing_ok=True)
                del self._sizes[number]
            if (
                position.segment == self._active
                and position.offset == self._sizes[self._active]
                and position.offset > 0
            ):  # all shipped: start an empty segment, drop this one
                self._rotate()
                self._segment_path(position.segment).unlink(missing_ok=True)
                del self._sizes[position.segment]
                position = Position(self._active, 0)
                self._cursor = self._read = position
            self._write_cursor(position)

    def _write_cursor(self, position: Position) -> None:
        """Overwrite the fixed-size cursor record in place: no new disk block is needed, so
        the cursor still moves when the disk is full (which is when it must)."""
        os.pwrite(self._cursor_fd, _cursor_record(position), 0)
        if self._fsync == "always":
            os.fsync(self._cursor_fd)

    def is_empty(self) -> bool:
        """True when every record written has been committed."""
        with self._lock:
            return sum(self._sizes.values()) - self._cursor.offset == 0

    # --- dead letters ----------------------------------------------------------------------

    def deadletter(self, items: list[tuple[Record, ItemResult]]) -> None:
        """Keep rejected records in ``deadletter.jsonl`` with the reason (always fsynced)."""
        lines = [
            orjson.dumps(
                {
                    "event_id": record.event_id,
                    "timestamp": record.timestamp,
                    "reason": result.reason,
                    "error_type": result.error_type,
                    "document": record.document.decode(errors="replace"),
                }
            )
            + b"\n"
            for record, result in items
        ]
        fd = os.open(
            self.directory / DEADLETTER_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        try:
            os.write(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)

    def deadletters(self) -> Iterator[dict[str, str]]:
        path = self.directory / DEADLETTER_FILE
        if path.exists():
            for line in path.read_bytes().splitlines():
                yield orjson.loads(line)

    def sync(self) -> None:
        """Flush the active segment to disk now (used on close)."""
        with self._lock:
            if self._fsync != "never":
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            if self._fsync != "never":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.close(self._cursor_fd)
            os.close(self._lock_fd)  # releases the directory lock


def _cursor_record(position: Position) -> bytes:
    body = f"{position.segment:020d} {position.offset:020d}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()


def _read_cursor(path: Path) -> Position | None:
    """The stored cursor, or None when missing or damaged (then replay from the oldest
    segment: duplicates are harmless, the store answers 409)."""
    try:
        body, crc = path.read_text().rstrip("\n").rsplit(" ", 1)
        if int(crc, 16) != zlib.crc32(body.encode()):
            return None
        segment, offset = body.split()
        return Position(int(segment), int(offset))
    except (OSError, ValueError):
        return None


def _lock_directory(directory: Path) -> int:
    """One spool per directory: a second process (or pipeline) would interleave segments."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise SpoolLocked(f"the spool {directory} is in use by another pipeline") from exc
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
