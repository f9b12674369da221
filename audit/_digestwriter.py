"""The digest writer: fed by whatever ships events, it signs one digest per interval.

::

    shipper ──(records it stored)──▶ DigestWriter ──▶ open interval (journal on disk)
                                          │ interval over (default 5 min; also when empty)
                                          ▼
                                    signed digest ──▶ digest spool ──▶ digest store

The shipper calls the writer with each batch the store accepted (before it moves its spool
cursor) and with an empty batch when idle, so an interval closes on time even when nothing
happened. A digest names its instance, its sequence number, the interval, the number of
events, the SHA-256 over their hashes ordered by event id, each event's id, hash and
``@timestamp`` (so ``verify`` can say which event is missing or altered), the previous
digest's hash, the configured interval, whether it is the last before a shutdown
(``chain.closed``), the key id and an Ed25519 signature.

State lives in ``directory`` (inside the shipper's spool directory): ``state.json`` (instance,
next sequence number, previous hash, the open interval, the last digest), written atomically
at each close, and ``open.jsonl``, the open interval's journal, appended per batch. A restart
continues the chain; a batch shipped again after a crash is counted once (by event id). An
interval that grows past ``max_events`` closes early, so a digest stays a bounded document.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from audit._chain import Keyring, event_hash, events_hash, record_hash, sign_record
from audit._digests import DigestStore
from audit._spool import Spool, encode
from audit._store import Record
from audit.errors import StoreError

__all__ = ["DEFAULT_DIGEST_INTERVAL", "DEFAULT_MAX_EVENTS", "DigestWriter", "digest_record_id"]

log = structlog.get_logger("audit.digests")

DEFAULT_DIGEST_INTERVAL: Final = 300.0
DEFAULT_MAX_EVENTS: Final = 5000
DIGEST_SPOOL_BYTES: Final = 64 * 1024 * 1024
STATE_FILE: Final = "state.json"
JOURNAL_FILE: Final = "open.jsonl"
SHIP_BATCH: Final = 50
RETRY_MAX: Final = 60.0


def digest_record_id(instance: str, seq: int) -> str:
    return f"{instance}:{seq:012d}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class DigestWriter:
    """A callable for the shipper: ``writer(records)`` after each stored batch, ``writer(())``
    when idle. ``close()`` after the shipper stopped: closes the open interval and ships."""

    def __init__(
        self,
        *,
        directory: str | Path,
        keyring: Keyring,
        store: DigestStore,
        instance: str | None = None,
        interval: float = DEFAULT_DIGEST_INTERVAL,
        max_events: int = DEFAULT_MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0 or max_events < 1:
            raise ValueError("the digest interval and max_events must be positive")
        if not keyring.can_sign:
            raise ValueError("the digest writer needs a private signing key")
        if instance is not None and (not instance or any(c in instance for c in ":\n\t ")):
            raise ValueError(f"instance id may not be empty nor hold ':' or spaces: {instance!r}")
        self._directory = Path(directory)
        self._keyring = keyring
        self._store = store
        self._wanted_instance = instance
        self._interval = interval
        self._max_events = max_events
        self._clock = clock
        self._lock = threading.Lock()
        self._spool: Spool | None = None
        self._journal: Any = None
        self._hashes: dict[str, tuple[str, str]] = {}  # event id -> (hash, @timestamp)
        self._schema_ready = False
        self._retry_at = 0.0
        self._failures = 0
        self.instance = ""
        self._seq = 0
        self._previous = ""
        self._start = self._end = 0.0
        self.digests_written = 0

    # --- state -----------------------------------------------------------------------------

    def _aligned(self, now: float) -> tuple[float, float]:
        start = (now // self._interval) * self._interval
        return start, start + self._interval

    def _open(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        state_path = self._directory / STATE_FILE
        state: dict[str, Any] = orjson.loads(state_path.read_bytes()) if state_path.exists() else {}
        instance = state.get("instance")
        if self._wanted_instance is not None and instance not in (None, self._wanted_instance):
            raise ValueError(
                f"the chain in {self._directory} belongs to instance {instance!r}, "
                f"not {self._wanted_instance!r}"
            )
        self.instance = str(
            instance or self._wanted_instance or f"{socket.gethostname()}-{secrets.token_hex(4)}"
        )
        self._seq = int(state.get("seq", 0))
        self._previous = str(state.get("previous", ""))
        if "start" in state:
            self._start, self._end = float(state["start"]), float(state["end"])
        else:
            self._start, self._end = self._aligned(self._clock())
        self._spool = Spool(
            directory=self._directory / "spool", max_bytes=DIGEST_SPOOL_BYTES, fsync="always"
        )
        last = state.get("last")
        if last is not None:  # may not have reached the spool before a crash: append again
            self._spool.append([encode(self._as_record(last))])
        journal = self._directory / JOURNAL_FILE
        if journal.exists():
            for line in journal.read_bytes().splitlines():
                try:
                    seq, event_id, digest, ts = line.decode().split("\t")
                except ValueError:
                    continue  # a torn last line
                if int(seq) == self._seq:
                    self._hashes[event_id] = (digest, ts)
        self._save_state(last)
        self._journal = journal.open("ab")

    def _save_state(self, last: dict[str, Any] | None) -> None:
        state = {
            "instance": self.instance,
            "seq": self._seq,
            "previous": self._previous,
            "start": self._start,
            "end": self._end,
            "last": last,
        }
        _write_atomic(self._directory / STATE_FILE, orjson.dumps(state))

    @staticmethod
    def _as_record(signed: dict[str, Any]) -> Record:
        return Record(str(signed["record.id"]), str(signed["@timestamp"]), orjson.dumps(signed))

    # --- the hook --------------------------------------------------------------------------

    def __call__(self, records: Sequence[Record]) -> None:
        with self._lock:
            if self._spool is None:
                self._open()
            now = self._clock()
            if now >= self._end:
                self._close_interval(self._end, now)
            if records:
                lines = []
                for record in records:
                    digest = event_hash(record.document)
                    self._hashes[record.event_id] = (digest, record.timestamp)
                    lines.append(f"{self._seq}\t{record.event_id}\t{digest}\t{record.timestamp}\n")
                self._journal.write("".join(lines).encode())
                self._journal.flush()
                if len(self._hashes) >= self._max_events:
                    self._close_interval(max(now, self._start), now)
            if now >= self._retry_at:
                self._ship()

    def _close_interval(self, end: float, now: float, *, closing: bool = False) -> None:
        hashes = {event_id: h for event_id, (h, _ts) in self._hashes.items()}
        record: dict[str, Any] = {
            "@timestamp": _iso(end),
            "record.id": digest_record_id(self.instance, self._seq),
            "record.kind": "digest",
            "record.instance": self.instance,
            "record.seq": self._seq,
            "interval.start": _iso(self._start),
            "interval.end": _iso(end),
            "events.count": len(hashes),
            "events.hash": events_hash(hashes),
            "events.entries": [
                [event_id, *self._hashes[event_id]] for event_id in sorted(self._hashes)
            ],
            "chain.previous": self._previous,
            "chain.interval_seconds": self._interval,
            "chain.closed": closing,  # the last digest before a shutdown
        }
        signed = sign_record(record, self._keyring)
        self._seq += 1
        self._previous = record_hash(signed)
        next_start, next_end = self._aligned(now)
        self._start, self._end = max(end, next_start), next_end
        self._save_state(signed)  # first: a crash from here on re-appends the same record
        assert self._spool is not None  # noqa: S101 - opened before
        self._spool.append([encode(self._as_record(signed))])
        self._hashes = {}
        self._journal.truncate(0)
        self.digests_written += 1

    def _ship(self) -> None:
        spool = self._spool
        assert spool is not None  # noqa: S101 - opened before
        try:
            if not self._schema_ready:
                self._store.ensure_schema()
                self._schema_ready = True
            while True:
                batch = spool.read(max_records=SHIP_BATCH, max_bytes=DIGEST_SPOOL_BYTES)
                if not batch.records:
                    break
                results = self._store.write(batch.records)
                retry = [r for r in results if r.status == "retry"]
                if retry:
                    raise StoreError(f"digest write: {retry[0].reason}")
                rejected = [
                    (rec, res)
                    for rec, res in zip(batch.records, results, strict=True)
                    if res.status == "rejected"
                ]
                if rejected:
                    log.error("audit_digest_rejected", reason=rejected[0][1].reason)
                    spool.deadletter(rejected)
                spool.commit(batch.end)
            self._failures = 0
        except StoreError as exc:
            spool.rewind()
            self._failures += 1
            delay = min(RETRY_MAX, 2.0**self._failures)
            self._retry_at = self._clock() + delay
            log.warning("audit_digest_store_unavailable", error=str(exc), retry_in=delay)

    def close(self) -> None:
        """Close the open interval now (its digest ends early), ship what is pending, stop."""
        with self._lock:
            if self._spool is None:
                return
            now = self._clock()
            self._close_interval(max(now, self._start), now, closing=True)
            self._ship()
            self._journal.close()
            self._spool.close()
            self._spool = None

    def pending(self) -> bool:
        """True while digests wait in the spool for the store."""
        return self._spool is not None and not self._spool.is_empty()
