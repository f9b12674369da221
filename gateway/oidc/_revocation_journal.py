"""The local journal of revocations the audit cluster has not yet taken (crash safety).

:class:`~gateway.oidc._revocation_opensearch.OpenSearchRevocations` keeps a revocation that
the cluster refused in memory and retries it at every poll; without this journal a crash, an
OOM kill or a deploy before the cluster came back lost it, and every other instance kept
accepting a session its user had logged out of. With it, each revocation is appended here and
fsync'd before the revoking request is answered, dropped once the cluster has it
(compaction), and replayed at start: into the instance's copy at once (the restarted instance
refuses the session even before the cluster is reachable) and into the cluster at its next
poll.

Layout, beside the audit spool of the same process (``audit.spool_dir/revocations``; a worker
of ``server.workers`` has its own spool directory and so its own journal)::

    revocations/            0700
        lock                0600: flock'd by the one process that owns this journal
        journal             0600: ``<crc32 hex> <json>\\n`` per revocation
        journal.tmp         0600: a compaction in progress (renamed over ``journal``)

- One process per journal: the directory lock is taken without waiting, and a second process
  on the same directory is refused at start (``RevocationJournalLocked``), as the audit spool
  is; two processes sharing one journal would compact away each other's entries. With
  ``server.workers`` lowered, the journals of the workers that no longer run are taken over at
  start by the first worker (:func:`adopt_orphans`), so their entries are replayed too.
- What is stored: the record's id and document as the cluster gets them; session and user ids
  only as their SHA-256 hashes (never a raw id on disk).
- A line that is cut off (a crash mid-write) or fails its checksum is skipped with a warning;
  the rest is replayed. A torn tail is cut off at open so later appends start on a line of
  their own.
- A write that fails (full disk, I/O error, an unwritable file) raises
  ``RevocationJournalError`` after cutting off what it half wrote; the caller decides (see
  ``OpenSearchRevocations._record``).
- Replay is idempotent: the cluster's record ids are deterministic and every merge takes the
  maximum, so replaying an entry twice (a crash during replay) changes nothing.

The cost (``bench/revocation_journal.py``): one ``write`` and one ``fdatasync`` per
revocation, on the logout path, in the worker thread the revocation already runs in.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import orjson

from gateway.oidc.errors import RevocationJournalError, RevocationJournalLocked

__all__ = ["JOURNAL_DIRECTORY", "RevocationJournal", "adopt_orphans"]

logger = logging.getLogger(__name__)

#: The journal's directory under the process's audit spool directory.
JOURNAL_DIRECTORY: Final = "revocations"
JOURNAL_FILE: Final = "journal"
TEMP_FILE: Final = "journal.tmp"
LOCK_FILE: Final = "lock"
DIRECTORY_MODE: Final = 0o700
FILE_MODE: Final = 0o600

Entry = tuple[str, dict[str, Any]]


def encode(record: str, doc: dict[str, Any]) -> bytes:
    """One journal line: the CRC-32 of the JSON, a space, the JSON, a newline."""
    body = orjson.dumps({"id": record, "doc": doc})
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode(line: bytes) -> Entry | None:
    """The entry of one complete line, or None when it is damaged."""
    crc, _, body = line.partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        value = orjson.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    record, doc = value.get("id"), value.get("doc")
    if not isinstance(record, str) or not isinstance(doc, dict):
        return None
    if not {"kind", "key", "before", "until"} <= doc.keys():
        return None
    return record, doc


class RevocationJournal:
    """An fsync'd append-only file of revocations not yet in the cluster, owned by one process.

    :attr:`entries` holds what was found at open (for replay). Thread-safe.
    """

    def __init__(self, *, directory: Path, fsync: bool = True) -> None:
        """Open (and lock) the journal and read what it holds; RevocationJournalError when
        the directory cannot be created, locked or written (the gateway does not start:
        revocations it could not keep would be lost at the next crash)."""
        self.directory = directory
        self._fsync = fsync
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
            self._lock_fd = _lock_directory(directory)
        except OSError as exc:
            raise RevocationJournalError(f"revocation journal {directory}: {exc}") from exc
        try:
            self.entries, self.damaged = self._recover()
            self._fd = _open_append(directory / JOURNAL_FILE)
            if fsync:
                _fsync_dir(directory)  # the new file's (or lock's) directory entry
        except OSError as exc:
            os.close(self._lock_fd)
            raise RevocationJournalError(f"revocation journal {directory}: {exc}") from exc
        #: The record ids in the file now (what a compaction may drop once the cluster has them).
        self.records = {record for record, _ in self.entries}

    @property
    def path(self) -> Path:
        return self.directory / JOURNAL_FILE

    def _recover(self) -> tuple[list[Entry], int]:
        """Read the journal; cut off a torn tail (on disk too). (entries, damaged lines)."""
        (self.directory / TEMP_FILE).unlink(missing_ok=True)  # a compaction cut short
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], 0
        keep = data.rfind(b"\n") + 1
        damaged = 0
        if keep != len(data):
            damaged += 1
            logger.warning(
                "revocation journal %s: an incomplete last line (%d bytes) ignored",
                self.path,
                len(data) - keep,
            )
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, keep)
                os.fsync(fd)
            finally:
                os.close(fd)
        entries: list[Entry] = []
        for number, line in enumerate(data[:keep].splitlines(), start=1):
            entry = _decode(line)
            if entry is None:
                damaged += 1
                logger.warning(
                    "revocation journal %s: line %d is damaged, ignored", self.path, number
                )
                continue
            entries.append(entry)
        return entries, damaged

    def append(self, record: str, doc: dict[str, Any]) -> None:
        """Append one entry and make it durable before returning; RevocationJournalError if not
        (nothing of it is left in the file then)."""
        line = encode(record, doc)
        with self._lock:
            start = -1
            try:
                start = os.lseek(self._fd, 0, os.SEEK_END)
                written = os.write(self._fd, line)
                if written != len(line):  # a short write: the disk filled up mid-line
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                if self._fsync:
                    os.fdatasync(self._fd)
            except OSError as exc:
                if start >= 0:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, start)
                raise RevocationJournalError(f"revocation journal {self.path}: {exc}") from exc
            self.records.add(record)

    def rewrite(self, entries: Iterable[Entry]) -> None:
        """Compaction: the journal holds exactly ``entries`` afterwards (the ones the cluster
        has not taken yet). Nothing left: the file is cut to zero; otherwise the remaining
        entries go to a new file renamed over the old one. Raises RevocationJournalError (the
        old journal is then untouched: replaying it again is harmless)."""
        kept = list(entries)
        lines = [encode(record, doc) for record, doc in kept]
        with self._lock:
            try:
                if not lines:
                    os.ftruncate(self._fd, 0)
                    if self._fsync:
                        os.fsync(self._fd)
                else:
                    self._replace(b"".join(lines))
            except OSError as exc:
                raise RevocationJournalError(f"compacting {self.path}: {exc}") from exc
            self.records = {record for record, _ in kept}

    def _replace(self, data: bytes) -> None:
        temp = self.directory / TEMP_FILE
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        except OSError:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temp, self.path)
        if self._fsync:
            _fsync_dir(self.directory)
        old, self._fd = self._fd, _open_append(self.path)
        os.close(old)

    def adopt(self, directory: Path) -> int:
        """Take over another process's journal (an orphan): its entries are appended here
        and made durable, then cut from it, and join :attr:`entries` for replay. Raises
        RevocationJournalLocked when a process still owns it. The number taken over."""
        other = RevocationJournal(directory=directory, fsync=self._fsync)
        try:
            for record, doc in other.entries:
                self.append(record, doc)
                self.entries.append((record, doc))
            other.rewrite([])
        finally:
            other.close()
        return len(other.entries)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                os.close(self._lock_fd)  # releases the directory lock
                self._fd = -1


def adopt_orphans(journal: RevocationJournal, *, spool_dir: Path, workers: int) -> int:
    """Journals of workers beyond ``server.workers`` (their number was lowered since) are
    taken over by ``journal`` (the first worker's, whose spool directory holds the others'),
    so the revocations they hold are replayed, not forgotten. One still owned by a running
    process is left to it (a warning). The number of entries taken over."""
    taken = 0
    for path in sorted(spool_dir.glob(f"worker-*/{JOURNAL_DIRECTORY}")):
        index = path.parent.name.removeprefix("worker-")
        if not index.isdigit() or int(index) < workers:
            continue
        try:
            count = journal.adopt(path)
        except RevocationJournalError as exc:
            logger.warning("orphaned revocation journal not taken over: %s", exc)
            continue
        if count:
            logger.warning("revocation journal %s: %d entries taken over", path, count)
        taken += count
    return taken


def _open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise RevocationJournalLocked(
            f"the revocation journal {directory} is in use by another gateway process "
            "(each process needs its own audit.spool_dir)"
        ) from exc
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
