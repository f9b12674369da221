"""The revocation record in the audit cluster, for gateway instances on several machines.

Every instance keeps a copy of the whole record in memory and brings it up to date from
``{prefix}gateway-revocations`` every ``poll_interval`` in a thread of its own, so the check
that every request with a session cookie makes stays a dictionary lookup (no network call on
the request path; ``bench/oidc_authn.py`` measures it against the SQLite store).

- A write (logout, a replaced session, back-channel logout, an incident responder's "revoke
  all sessions") goes into the local copy first, so this instance refuses the session at once,
  then into the local journal (fsync'd, :mod:`gateway.oidc._revocation_journal`), then into
  the index with ``refresh=true``: when the write returns, every other instance's next poll
  finds it. A write the cluster refuses stays queued in this process and in the journal and is
  retried at every poll until it lands; the caller is told (:class:`RevocationsUnavailable`).
  The journal is compacted at the poll after the cluster took its entries, and replayed at
  start (before the instance serves requests): into the copy at once, into the cluster at the
  first poll. A process that died before the cluster came back loses no revocation.
- The journal cannot be written (disk full, I/O error): the revocation is still in the copy
  and queued, logged as an error and counted (``gateway_revocation_journal_failures_total``).
  If the cluster takes the write at once it is durable there and the caller sees success;
  if not, the revocation lives in this process's memory only and the caller is told so
  (:class:`~gateway.oidc.errors.RevocationNotDurable`): the revoke API and back-channel
  logout answer 503 with a failure event (fail closed: the caller retries), logout clears the
  cookie anyway and labels its event ``revocation: not_durable``.
- A poll asks for the documents whose ``_seq_no`` is above what this instance has seen (one
  shard, so ``_seq_no`` orders every write), re-reading ``SEQ_OVERLAP`` seconds' worth in
  case a write with a lower number became visible after one with a higher number; every
  ``resync_interval`` it reads the whole record again (a recreated index, a failover).
- Staleness: a revocation written on instance A is refused by instance B from B's first poll
  that starts after A's write returned: within ``poll_interval`` plus one poll's duration.
- Fail closed: the copy counts as current for ``max_staleness`` after the start of the last
  poll that succeeded. A session the copy knows revoked is always refused; one it does not
  know is accepted only while the copy is current, and after that :meth:`is_revoked` raises
  :class:`RevocationsUnavailable` (the session stage answers 503) until a poll succeeds again.
- Records (session ids and user ids, both only as SHA-256 hashes) are kept until the longest
  session they could concern has expired; expired ones leave the copy and the index (pruned
  in batches by :func:`~gateway.oidc._shared.delete_expired`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Final

from opensearchpy.exceptions import OpenSearchException

from audit._opensearch import connect, translated_errors
from audit.errors import StoreError
from gateway.oidc._revocation_journal import RevocationJournal
from gateway.oidc._session import Clock
from gateway.oidc._shared import PRUNE_INTERVAL, delete_expired
from gateway.oidc.errors import RevocationJournalError, RevocationNotDurable, RevocationsUnavailable

__all__ = ["REVOCATION_INDEX", "OpenSearchRevocations"]

logger = logging.getLogger(__name__)

REVOCATION_INDEX: Final = "gateway-revocations"
DEFAULT_POLL_INTERVAL: Final = 0.5
DEFAULT_MAX_STALENESS: Final = 5.0
DEFAULT_RESYNC_INTERVAL: Final = 60.0
DEFAULT_TIMEOUT: Final = 2.0
SETUP_TIMEOUT: Final = 30.0
#: A poll re-reads the writes of this many seconds before its last one (see the docstring).
SEQ_OVERLAP: Final = 2.0
PAGE_SIZE: Final = 1000
#: Expired entries leave the in-memory copy this often.
LOCAL_PRUNE_INTERVAL: Final = 10.0
#: A poll spends at most this long deleting expired records (the next poll goes on).
PRUNE_SLICE: Final = 0.2
STOP_TIMEOUT: Final = 5.0

_MAPPINGS: Final = {
    "dynamic": "strict",
    "properties": {
        "kind": {"type": "keyword"},
        "key": {"type": "keyword"},
        "before": {"type": "double"},
        "until": {"type": "double"},
    },
}


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


#: Session ids and user ids whose hash the request path remembers (a few MB at most).
LOOKUP_HASH_CACHE = 8192


@functools.lru_cache(maxsize=LOOKUP_HASH_CACHE)
def _lookup_hash(value: str) -> str:
    """:func:`_hash` for :meth:`OpenSearchRevocations.is_revoked`, remembered: a session
    sends the same ids with every request, and two SHA-256 digests were about 0.9 µs of
    each request (0.1 µs remembered). The hash is a pure function of the value, so a
    remembered one is never stale; the revocation record itself is read at every request."""
    return _hash(value)


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        with translated_errors():
            yield
    except (StoreError, OpenSearchException, OSError) as exc:
        raise RevocationsUnavailable(f"revocation store (OpenSearch): {exc}") from exc


class OpenSearchRevocations:
    """The revocation record in ``{prefix}gateway-revocations``, with a local copy per instance.

    ``journal`` makes revocations not yet in the cluster survive a crash (replayed here, at
    construction). ``start=False`` runs no thread: the owner calls :meth:`sync` itself (tests).
    """

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
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        resync_interval: float = DEFAULT_RESYNC_INTERVAL,
        journal: RevocationJournal | None = None,
        start: bool = True,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.index = f"{index_prefix.lower()}{REVOCATION_INDEX}"
        self._client = connect(
            url,
            username=username,
            password=password,
            ca_certs=ca_certs,
            timeout=timeout,
            max_retries=0,
        )
        self._replicas = replicas
        self._poll_interval = poll_interval
        self._max_staleness = max_staleness
        self._resync_interval = resync_interval
        self._clock = clock
        self._monotonic = monotonic
        # The copy: session hash -> until; user hash -> (before, until). Only ever grown or
        # pruned by ``until`` under ``_lock``; read without it (single dict lookups).
        self._sessions: dict[str, float] = {}
        self._subjects: dict[str, tuple[float, float]] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._ready = False
        self._synced_at = -float("inf")
        self._resynced_at = -float("inf")
        self._local_pruned = -float("inf")
        self._pruned = 0.0
        self._base = -1
        self._marks: deque[tuple[float, int]] = deque()
        self._healthy = True
        self._journal = journal
        # Held across "append to the journal, add to the queue" and across a compaction's
        # "read the queue, rewrite the journal": an entry is never compacted away unqueued.
        self._journal_lock = threading.Lock()
        self._journal_failures = 0
        #: Revocations found in the journal at start and queued again (see :meth:`_replay`).
        self.replayed = self._replay(journal) if journal is not None else 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="revocations-sync", daemon=True)
            self._thread.start()

    # --- the request path ---------------------------------------------------------------

    def is_revoked(self, *, session_id: str, user_id: str, issued_at: float) -> bool:
        """True when the session is revoked; raises RevocationsUnavailable when the copy is
        too old to say it is not."""
        if _lookup_hash(session_id) in self._sessions:
            return True
        found = self._subjects.get(_lookup_hash(user_id))
        if found is not None and issued_at <= found[0]:
            return True
        age = self._monotonic() - self._synced_at
        if age > self._max_staleness:
            raise RevocationsUnavailable(f"revocation record not synchronised for {age:.1f} s")
        return False

    # --- writes ---------------------------------------------------------------------------

    def revoke_session(self, session_id: str, *, until: float) -> None:
        key = _hash(session_id)
        doc = {"kind": "session", "key": key, "before": 0.0, "until": until}
        self._record(f"session-{key}", doc)

    def revoke_subject(self, user_id: str, *, before: float, until: float) -> None:
        key = _hash(user_id)
        doc = {"kind": "subject", "key": key, "before": before, "until": until}
        # One document per revocation (never overwritten): two instances revoking the same
        # subject at once cannot lower each other's "before".
        self._record(f"subject-{key}-{int(before * 1000)}", doc)

    def _record(self, record: str, doc: dict[str, Any]) -> None:
        """Into the local copy at once, the journal, then the index (queued for retry on
        failure). Raises RevocationsUnavailable when the index did not take it (then
        RevocationNotDurable when the journal did not either)."""
        with self._lock:
            self._apply(doc)
        failed: RevocationJournalError | None = None
        with self._journal_lock:
            if self._journal is not None:
                try:
                    self._journal.append(record, doc)
                except RevocationJournalError as exc:
                    failed = exc
                    self._journal_failures += 1
                    logger.error("%s: the revocation is queued in memory only", exc)
            with self._lock:
                self._pending[record] = doc
        try:
            self._flush()
        except RevocationsUnavailable as exc:
            if failed is not None:
                raise RevocationNotDurable(f"{failed}; {exc}") from exc
            raise

    def _replay(self, journal: RevocationJournal) -> int:
        """Queue what the journal holds and merge it into the copy (expired entries dropped):
        the copy refuses those sessions before any poll; the first poll writes them."""
        now = self._clock()
        live = [(r, doc) for r, doc in journal.entries if float(doc["until"]) > now]
        with self._lock:
            for record, doc in live:
                self._apply(doc)
                self._pending[record] = doc
        if live:
            logger.warning(
                "revocation journal: %d revocation(s) not yet in the cluster replayed", len(live)
            )
        return len(live)

    def _compact(self) -> None:
        """Drop from the journal what the cluster has taken (at most one rewrite per poll)."""
        journal = self._journal
        if journal is None:
            return
        with self._journal_lock:
            with self._lock:
                remaining = list(self._pending.items())
            if not journal.records - {record for record, _ in remaining}:
                return
            try:
                journal.rewrite(remaining)
            except RevocationJournalError as exc:
                self._journal_failures += 1
                logger.error("%s (the journal is replayed whole at the next start)", exc)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """For the metrics listener: journal failures and the revocations still queued."""
        return [
            ("gateway_revocation_journal_failures_total", {}, float(self._journal_failures)),
            ("gateway_revocations_pending", {}, float(len(self._pending))),
        ]

    def _flush(self) -> None:
        with self._lock:
            queued = list(self._pending.items())
        if not queued:
            return
        self._ensure_index()
        for record, doc in queued:
            with _unavailable():
                self._client.index(index=self.index, id=record, body=doc, refresh="true")
            with self._lock:
                if self._pending.get(record) is doc:
                    del self._pending[record]

    @property
    def pending(self) -> int:
        """Revocations recorded here and not yet in the index."""
        return len(self._pending)

    def _apply(self, doc: dict[str, Any]) -> None:
        """Merge one record into the copy (caller holds ``_lock``)."""
        key, until = str(doc["key"]), float(doc["until"])
        if doc["kind"] == "session":
            self._sessions[key] = max(until, self._sessions.get(key, until))
        else:
            before = float(doc["before"])
            old = self._subjects.get(key, (before, until))
            self._subjects[key] = (max(before, old[0]), max(until, old[1]))

    # --- synchronising ----------------------------------------------------------------------

    def _ensure_index(self) -> None:
        if self._ready:
            return
        with _unavailable():
            if not self._client.indices.exists(index=self.index, request_timeout=SETUP_TIMEOUT):
                try:
                    self._client.indices.create(
                        index=self.index,
                        body={
                            "settings": {
                                "number_of_shards": 1,
                                "number_of_replicas": self._replicas,
                            },
                            "mappings": _MAPPINGS,
                        },
                        request_timeout=SETUP_TIMEOUT,
                    )
                except OpenSearchException as exc:
                    if "resource_already_exists" not in str(exc):
                        raise
            self._client.cluster.health(
                index=self.index, wait_for_status="yellow", request_timeout=SETUP_TIMEOUT
            )
        self._ready = True

    def sync(self) -> None:
        """One poll: flush queued writes, read what is new, prune. Raises
        RevocationsUnavailable (the copy's age then keeps growing)."""
        with self._sync_lock:
            started = self._monotonic()
            self._ensure_index()
            self._flush()
            self._compact()
            if started - self._resynced_at >= self._resync_interval:
                self._read(floor=None)
                self._resynced_at = started
            else:
                self._read(floor=self._floor(started))
            self._synced_at = started
            self._prune(started)

    def _floor(self, now: float) -> int:
        """The highest ``_seq_no`` seen by a poll at least ``SEQ_OVERLAP`` seconds ago."""
        floor = self._base
        while self._marks and self._marks[0][0] <= now - SEQ_OVERLAP:
            floor = max(floor, self._marks.popleft()[1])
        self._base = floor
        return floor

    def _read(self, *, floor: int | None) -> None:
        """Merge the records above ``floor`` (None: every live record) into the copy."""
        query: dict[str, Any] = (
            {"range": {"until": {"gt": self._clock()}}}
            if floor is None
            else {"range": {"_seq_no": {"gt": floor}}}
        )
        top = -1
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "query": query,
                "size": PAGE_SIZE,
                "sort": [{"_seq_no": "asc"}],
                "seq_no_primary_term": True,
            }
            if after is not None:
                body["search_after"] = after
            with _unavailable():
                response = self._client.search(index=self.index, body=body)
            hits = response["hits"]["hits"]
            with self._lock:
                for hit in hits:
                    self._apply(hit["_source"])
            if hits:
                top = max(top, int(hits[-1]["_seq_no"]))
                after = hits[-1]["sort"]
            if len(hits) < PAGE_SIZE:
                break
        mark = self._monotonic()
        if floor is None:
            # The whole record was read: start counting from here (also after a recreated
            # index, whose numbers start again from 0).
            self._marks.clear()
            self._base = top
        else:
            self._marks.append((mark, max(top, floor)))

    def _prune(self, now: float) -> None:
        wall = self._clock()
        if now - self._local_pruned >= LOCAL_PRUNE_INTERVAL:
            self._local_pruned = now
            with self._lock:
                self._sessions = {k: v for k, v in self._sessions.items() if v > wall}
                self._subjects = {k: v for k, v in self._subjects.items() if v[1] > wall}
        if wall - self._pruned >= PRUNE_INTERVAL:
            try:
                with _unavailable():
                    result = delete_expired(
                        self._client,
                        self.index,
                        field="until",
                        now=wall,
                        budget=PRUNE_SLICE,
                        monotonic=self._monotonic,
                    )
            except RevocationsUnavailable as exc:
                logger.warning("pruning the revocation record failed: %s", exc)
                return
            self._pruned = wall if result.done else 0.0

    def _run(self) -> None:
        while True:
            try:
                self.sync()
                if not self._healthy:
                    logger.warning("revocation store reachable again")
                self._healthy = True
            except RevocationsUnavailable as exc:
                if self._healthy:
                    logger.error("revocation store unreachable: %s", exc)
                self._healthy = False
            if self._stop.wait(self._poll_interval):
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        if self._journal is not None:
            self._compact()
            self._journal.close()
            self._journal = None
        self._client.close()
