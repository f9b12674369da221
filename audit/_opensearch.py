"""The production store: OpenSearch, daily indices behind a strict index template.

Writes are one ``_bulk`` request per batch with ``create`` actions whose ``_id`` is the event
id, each routed to the daily index of the event's own ``@timestamp``: a retried batch never
duplicates (409 means already stored). The client's own retries are off (``max_retries=0``);
the pipeline runs the retry loop (PITFALLS.md: the bulk helpers retry too little).

Deletion selects ids with ``search`` (``search_after`` paging) and then sends ``_bulk``
``delete`` actions (PITFALLS.md notes ``delete_by_query`` only marks documents and costs
merges). Dropping whole daily indices is the cheap path: ``delete`` drops an index whole when
the scope selects every event in it (after blocking writes to it and counting again).

Minimisation runs on the node when it has the ``lang-painless`` and ``reindex`` modules (every
full distribution; ``tools/opensearch_node.py`` adds them to the test node): the selected ids
are listed (no document read), then ``_update_by_query`` with the painless script of
``audit/_minimise.py`` minimises them ``batch`` at a time, so no document travels to the
client and back. Without those modules (or with ``minimise_on_node=False``) each selected
document is read and put back whole, minimised, with ``_bulk`` ``index`` actions
(``if_seq_no``/``if_primary_term``: only if unchanged since read). Both leave the same
documents (``tests/audit/test_minimise.py`` compares them field by field).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import NotFoundError, TransportError

from audit._minimise import MINIMISE_SCRIPT, MODULES
from audit._store import (
    COUNT_KEYS,
    PLATFORM_ID_CATEGORY,
    TOTAL_LIMIT,
    Guard,
    ItemResult,
    Page,
    Record,
    Scope,
    Total,
    platform_id_groups,
    require_until,
    truncate_ip,
)
from audit.errors import PointInTimeGone, StoreError, StoreUnavailable
from audit.events import (
    DEADLETTER_INDEX,
    FREE_TEXT_FIELD,
    INDEX_BASE,
    deadletter_index_template,
    index_name,
    index_pattern,
    index_template,
    parse_timestamp,
)

__all__ = ["OpenSearchStore"]

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_POOL_SIZE: Final = 4
PAGE_SIZE: Final = 1000
#: ``ids`` reads this many ids per request (no documents: the default ``max_result_window``).
IDS_PAGE: Final = 10_000
#: Retention's maintenance (delete, minimise, copy) reads and writes this many events at a time.
MAINTENANCE_BATCH: Final = 5000
#: Bulk requests of a minimisation in flight at once (the node indexes them in parallel).
MAINTENANCE_WORKERS: Final = 2
#: How long one ``_update_by_query`` of a minimisation (one ``batch`` of events) may run before
#: it is cancelled and the minimisation fails (StoreUnavailable; the next run resumes).
MINIMISE_TASK_TIMEOUT: Final = 600.0
#: How often a minimisation re-runs a batch whose events changed while it ran (version
#: conflicts: a concurrent writer) before it fails with a StoreError naming them.
MINIMISE_CONFLICT_RERUNS: Final = 3
#: The first and the longest pause between two looks at a running minimisation task.
_TASK_POLL: Final = (0.05, 1.0)
#: A daily index whose selected events outnumber the rest this many to one is dropped whole
#: after the rest is copied to ``{index}-kept``: copying one event costs about what deleting
#: two by id does (bench/retention.py).
MOVE_RATIO: Final = 2
#: Where a dropped daily index's spared events go (held, or not yet due): inside the pattern.
KEPT_SUFFIX: Final = "-kept"
REFRESH_OFF: Final = "-1"
#: How long a point in time of audit search stays open after each page read from it.
PIT_KEEP_ALIVE: Final = "5m"
_FILTER_PATH: Final = "errors,items.*.status,items.*.error.type,items.*.error.reason"
#: Per-item statuses that mean "the document itself is wrong": dead letter, never retry.
_REJECT_STATUSES: Final = frozenset({400})


class _OrjsonSerializer:
    """opensearch-py serializer on orjson: parsing big bulk responses is the shipper's hot path."""

    mimetype = "application/json"

    def loads(self, s: str | bytes) -> Any:
        return orjson.loads(s)

    def dumps(self, data: Any) -> str:
        if isinstance(data, str | bytes):
            return data if isinstance(data, str) else data.decode()
        return orjson.dumps(data, default=str).decode()


def connect(
    url: str | Sequence[str],
    *,
    username: str | None = None,
    password: str | None = None,
    ca_certs: str | None = None,
    verify_certs: bool = True,
    client_cert: str | None = None,
    client_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_retries: int = 0,
) -> OpenSearch:
    """A client for one cluster (shared by the event and hold stores), after checking that
    the URLs agree on a scheme and that basic auth never goes over plain http."""
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("an OpenSearch store needs at least one node URL")
    schemes = {urlsplit(u).scheme for u in urls}
    if not schemes <= {"http", "https"} or len(schemes) != 1:
        raise ValueError("node URLs must all be http:// or all https://")
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    if username is not None and schemes != {"https"}:
        raise ValueError("basic auth over plain http would expose the password; use https")
    return OpenSearch(
        hosts=urls,
        http_auth=(username, password) if username is not None else None,
        use_ssl=schemes == {"https"},
        verify_certs=verify_certs,
        ca_certs=ca_certs,
        client_cert=client_cert,
        client_key=client_key,
        timeout=timeout,
        max_retries=max_retries,
        retry_on_timeout=False,
        # The sync client's urllib3 connection takes ``pool_maxsize`` (``maxsize`` is the
        # async client's name and is silently ignored here: a pool of 1, "Connection pool
        # is full" warnings and a new connection per concurrent request).
        pool_maxsize=pool_size,
        serializer=_OrjsonSerializer(),
    )


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Map opensearch-py errors to ours: unavailable (retry) or a plain store error."""
    try:
        yield
    except OSConnectionError as exc:
        raise StoreUnavailable(f"OpenSearch unreachable: {type(exc).__name__}") from exc
    except TransportError as exc:
        status = exc.status_code if isinstance(exc.status_code, int) else 0
        if status == 429 or status >= 500 or status in (401, 403):
            raise StoreUnavailable(f"OpenSearch answered {status}: {exc.error}") from exc
        raise StoreError(f"OpenSearch answered {status}: {exc.error}") from exc


class OpenSearchStore:
    """Audit events in OpenSearch. ``url`` may list several nodes of one cluster.

    Basic auth is only sent over https (refused over plain http); ``ca_certs`` pins the CA of
    a private cluster. ``shards``/``replicas`` go into the index template.
    """

    def __init__(
        self,
        *,
        url: str | Sequence[str],
        index_prefix: str = "",
        username: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
        verify_certs: bool = True,
        client_cert: str | None = None,
        client_key: str | None = None,
        shards: int = 1,
        replicas: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        batch: int = MAINTENANCE_BATCH,
        workers: int = MAINTENANCE_WORKERS,
        minimise_on_node: bool | None = None,
        minimise_task_timeout: float = MINIMISE_TASK_TIMEOUT,
    ) -> None:
        if shards < 1 or replicas < 0:
            raise ValueError("shards must be >= 1 and replicas >= 0")
        if batch < 1 or workers < 1:
            raise ValueError("batch and workers must be >= 1")
        if minimise_task_timeout <= 0:
            raise ValueError("minimise_task_timeout must be > 0")
        self._batch, self._workers = batch, workers
        #: None: on the node when every node has the modules (asked once, at the first use).
        self._on_node = minimise_on_node
        self._task_timeout = minimise_task_timeout
        if index_prefix and not index_prefix.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"index prefix may hold letters, digits, - and _: {index_prefix!r}")
        self.index_prefix = index_prefix.lower()
        self._shards, self._replicas = shards, replicas
        self._pattern = index_pattern(self.index_prefix)
        self._deadletter = f"{self.index_prefix}{DEADLETTER_INDEX}"
        self._client = connect(
            url,
            username=username,
            password=password,
            ca_certs=ca_certs,
            verify_certs=verify_certs,
            client_cert=client_cert,
            client_key=client_key,
            timeout=timeout,
            pool_size=pool_size,
            max_retries=0,  # our own loop retries, with backoff and jitter
        )

    # --- lifecycle -------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        with translated_errors():
            self._client.indices.put_index_template(
                name=f"{self.index_prefix}{INDEX_BASE}",
                body=index_template(
                    self.index_prefix, shards=self._shards, replicas=self._replicas
                ),
            )
            self._client.indices.put_index_template(
                name=self._deadletter,
                body=deadletter_index_template(
                    self.index_prefix, shards=self._shards, replicas=self._replicas
                ),
            )

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except Exception:  # a health check answers, it does not raise
            return False

    def refresh(self) -> None:
        """Make everything written so far visible to search and count."""
        with translated_errors():
            self._client.indices.refresh(
                index=f"{self._pattern},{self._deadletter}",
                ignore_unavailable=True,
                allow_no_indices=True,
            )

    def close(self) -> None:
        self._client.close()

    # --- shipping --------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(records)
        lines: list[bytes] = []
        sent: list[int] = []
        heads: dict[str, bytes] = {}  # the action line's start, per UTC day (by timestamp)
        for position, record in enumerate(records):
            day = record.timestamp[:10] if record.timestamp.endswith("Z") else record.timestamp
            head = heads.get(day)
            if head is None:
                try:
                    index = index_name(self.index_prefix, record.timestamp)
                except ValueError as exc:
                    reason = f"bad @timestamp: {exc}"
                    results[position] = ItemResult("rejected", reason, "timestamp")
                    continue
                head = heads[day] = b'{"create":{"_index":' + orjson.dumps(index) + b',"_id":'
            lines.append(head + orjson.dumps(record.event_id) + b"}}")
            lines.append(record.document)
            sent.append(position)
        if sent:
            with translated_errors():
                response = self._client.bulk(
                    body=b"\n".join(lines) + b"\n", filter_path=_FILTER_PATH
                )
            items = response.get("items") or []
            if len(items) != len(sent):
                raise StoreUnavailable(f"bulk answered {len(items)} items for {len(sent)}")
            for position, item in zip(sent, items, strict=True):
                results[position] = _item_result(item)
        return [r if r is not None else ItemResult("retry", "no answer") for r in results]

    def write_deadletters(self, items: Sequence[tuple[Record, ItemResult]]) -> None:
        lines: list[bytes] = []
        now = datetime.now(UTC).isoformat()
        for record, result in items:
            lines.append(
                orjson.dumps({"create": {"_index": self._deadletter, "_id": record.event_id}})
            )
            lines.append(
                orjson.dumps(
                    {
                        "@timestamp": now,
                        "event_id": record.event_id,
                        "index": self._safe_index(record.timestamp),
                        "reason": result.reason,
                        "error_type": result.error_type,
                        "document": record.document.decode(errors="replace"),
                    }
                )
            )
        if not lines:
            return
        with translated_errors():
            response = self._client.bulk(body=b"\n".join(lines) + b"\n", filter_path=_FILTER_PATH)
        for item in response.get("items") or []:
            if _item_result(item).status not in ("stored", "duplicate"):
                raise StoreUnavailable(f"dead letter not stored: {item}")

    def _safe_index(self, timestamp: str) -> str:
        try:
            return index_name(self.index_prefix, timestamp)
        except ValueError:
            return ""

    def deadletters(self) -> list[dict[str, Any]]:
        """Every dead letter (for operators and tests), oldest first."""
        with translated_errors():
            response = self._client.search(
                index=self._deadletter,
                body={"query": {"match_all": {}}, "size": 10_000, "sort": [{"@timestamp": "asc"}]},
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        return [hit["_source"] for hit in response["hits"]["hits"]]

    # --- reading and maintenance -----------------------------------------------------------

    def search(
        self,
        scope: Scope,
        *,
        exclude: Sequence[Scope] = (),
        size: int = 100,
        newest_first: bool = False,
        after: Page | None = None,
    ) -> list[dict[str, Any]]:
        body = self._search_body(
            scope, exclude=exclude, size=size, newest_first=newest_first, after=after
        )
        with translated_errors():
            response = self._client.search(
                index=self._pattern, body=body, ignore_unavailable=True, allow_no_indices=True
            )
        return [hit["_source"] for hit in response["hits"]["hits"]]

    @staticmethod
    def _search_body(
        scope: Scope,
        *,
        exclude: Sequence[Scope] = (),
        size: int,
        newest_first: bool,
        after: Page | None,
    ) -> dict[str, Any]:
        order = "desc" if newest_first else "asc"
        body: dict[str, Any] = {
            "query": _query(scope, exclude),
            "sort": [{"@timestamp": order}, {"event.id": order}],
            "size": size,
        }
        if after is not None:  # dates sort as epoch milliseconds, as the index keeps them
            millis = int(parse_timestamp(after.timestamp).timestamp() * 1000)
            body["search_after"] = [millis, after.event_id]
        return body

    # --- paging from a point in time (deep pagination for audit search) --------------------

    def open_pit(self, scope: Scope, *, keep_alive: str = PIT_KEEP_ALIVE) -> str | None:
        """Open a point in time over the daily indices the scope's time window touches (all
        of them without one): later pages read the same snapshot. None when no index does.

        A point in time id grows with its indices (about 180 bytes each, 47 compressed)."""
        indices = self._indices_within(scope.since, scope.until)
        if not indices:
            return None
        with translated_errors():
            response = self._client.create_pit(
                index=",".join(indices), params={"keep_alive": keep_alive}
            )
        return str(response["pit_id"])

    def _indices_within(self, since: datetime | None, until: datetime | None) -> list[str]:
        first = since.astimezone(UTC).strftime("%Y.%m.%d") if since is not None else ""
        last = until.astimezone(UTC).strftime("%Y.%m.%d") if until is not None else "~"
        base = f"{self.index_prefix}{INDEX_BASE}-"
        # a day's ``-kept`` index (retention's) sorts after the day: compare the day alone
        return [i for i in self._indices() if first <= i.removeprefix(base)[:10] <= last]

    def close_pit(self, pit: str) -> None:
        """Free the point in time now (it would expire after its keep-alive anyway)."""
        with translated_errors():
            self._client.delete_pit(body={"pit_id": [pit]})

    def search_page(
        self,
        scope: Scope,
        *,
        size: int = 100,
        newest_first: bool = False,
        after: Page | None = None,
        pit: str | None = None,
        limit: int = TOTAL_LIMIT,
        keep_alive: str = PIT_KEEP_ALIVE,
    ) -> tuple[list[dict[str, Any]], Total]:
        """One page and the total (exact up to ``limit``) in one request, from the point in
        time ``pit`` when given (each call keeps it alive).

        Raises :class:`PointInTimeGone` when the point in time expired or was closed."""
        body = self._search_body(scope, size=size, newest_first=newest_first, after=after)
        body["track_total_hits"] = limit
        if pit:
            body["pit"] = {"id": pit, "keep_alive": keep_alive}
            with translated_errors(), _pit_errors():
                response = self._client.search(body=body)
        else:
            with translated_errors():
                response = self._client.search(
                    index=self._pattern, body=body, ignore_unavailable=True, allow_no_indices=True
                )
        return [hit["_source"] for hit in response["hits"]["hits"]], _total(response, limit)

    def ids(self, scope: Scope, *, exclude: Sequence[Scope] = ()) -> Iterator[tuple[str, str]]:
        """Ids and timestamps from the sort values alone (``_source: false``: no document is
        read), ``IDS_PAGE`` at a time with ``search_after``."""
        query = _query(scope, exclude)
        for hit in self._hits(query, source=False, size=IDS_PAGE):
            millis = int(hit["sort"][0])
            moment = datetime.fromtimestamp(millis / 1000, tz=UTC)
            yield str(hit["_id"]), moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"

    def days(self, scope: Scope, *, exclude: Sequence[Scope] = ()) -> list[datetime]:
        """The UTC days (midnight) holding matching events, oldest first: one aggregation,
        no hit read (retention's recorder goes through a deletion a day at a time)."""
        histogram = {"field": "@timestamp", "calendar_interval": "day", "time_zone": "UTC"}
        found: list[datetime] = []
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {
                "sources": [{"day": {"date_histogram": histogram}}],
                "size": PAGE_SIZE,
            }
            if after is not None:
                composite["after"] = after
            body = {
                "query": _query(scope, exclude),
                "size": 0,
                "aggs": {"d": {"composite": composite}},
            }
            with translated_errors():
                response = self._client.search(
                    index=self._pattern, body=body, ignore_unavailable=True, allow_no_indices=True
                )
            agg = (response.get("aggregations") or {}).get("d") or {}
            buckets = agg.get("buckets") or []
            found += [datetime.fromtimestamp(b["key"]["day"] / 1000, tz=UTC) for b in buckets]
            after = agg.get("after_key")
            if len(buckets) < PAGE_SIZE or after is None:
                return found

    def count(self, scope: Scope, *, exclude: Sequence[Scope] = ()) -> int:
        with translated_errors():
            response = self._client.count(
                index=self._pattern,
                body={"query": _query(scope, exclude)},
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        return int(response["count"])

    def total(self, scope: Scope, *, limit: int = TOTAL_LIMIT) -> Total:
        body = {"query": _query(scope, ()), "size": 0, "track_total_hits": limit}
        with translated_errors():
            response = self._client.search(
                index=self._pattern, body=body, ignore_unavailable=True, allow_no_indices=True
            )
        return _total(response, limit)

    def counts(self, scope: Scope, *, by: Sequence[str]) -> dict[tuple[str, ...], int]:
        """A composite aggregation over the keys, paged with its ``after_key``."""
        if not by:
            raise ValueError("counts needs at least one key to group by")
        sources = [{f"k{i}": _count_source(key)} for i, key in enumerate(by)]
        found: dict[tuple[str, ...], int] = {}
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"sources": sources, "size": PAGE_SIZE}
            if after is not None:
                composite["after"] = after
            body = {"query": _query(scope, ()), "size": 0, "aggs": {"c": {"composite": composite}}}
            with translated_errors():
                response = self._client.search(
                    index=self._pattern, body=body, ignore_unavailable=True, allow_no_indices=True
                )
            agg = (response.get("aggregations") or {}).get("c") or {}
            buckets = agg.get("buckets") or []
            for bucket in buckets:
                key = tuple(
                    "" if bucket["key"][f"k{i}"] is None else str(bucket["key"][f"k{i}"])
                    for i in range(len(by))
                )
                found[key] = int(bucket["doc_count"])
            after = agg.get("after_key")
            if len(buckets) < PAGE_SIZE or after is None:
                return found

    def _hits(
        self,
        query: Mapping[str, Any],
        source: list[str] | bool,
        index: str | None = None,
        *,
        versions: bool = False,
        size: int = PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Every matching hit, paged with search_after (no scroll context to leak); with
        ``versions``, each hit carries its ``_seq_no`` and ``_primary_term``."""
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "query": query,
                "sort": _SORT,
                "size": size,
                "_source": source,
                "seq_no_primary_term": versions,
            }
            if after is not None:
                body["search_after"] = after
            with translated_errors():
                response = self._client.search(
                    index=index or self._pattern,
                    body=body,
                    ignore_unavailable=True,
                    allow_no_indices=True,
                )
            hits = response["hits"]["hits"]
            yield from hits
            if len(hits) < size:
                return
            after = hits[-1]["sort"]

    def _bulk_actions(self, lines: list[bytes]) -> int:
        if not lines:
            return 0
        with translated_errors():
            response = self._client.bulk(body=b"\n".join(lines) + b"\n", filter_path=_FILTER_PATH)
        done = 0
        for item in response.get("items") or []:
            status = next(iter(item.values())).get("status", 0)
            if 200 <= status < 300:
                done += 1
            elif status not in (404, 409):  # gone, or changed since read (minimised by another)
                raise StoreError(f"bulk maintenance item failed: {item}")
        return done

    def delete(
        self, scope: Scope, *, exclude: Sequence[Scope] = (), guard: Guard | None = None
    ) -> int:
        """Delete per index of the scope's days. An index whose events the scope selects
        all is dropped whole (cheap: no tombstones, no merges); so is a daily index whose
        selected events outnumber the rest ``MOVE_RATIO`` to one, after the rest is copied
        to its ``-kept`` index (same ids; the index pattern covers it). Otherwise the selected
        events are deleted by id, ``batch`` at a time."""
        require_until(scope)
        self.refresh()
        query = _query(scope, exclude)
        done = 0
        for index in self._indices_within(scope.since, scope.until):
            selected = self._count_in(index, query)
            if selected == 0:
                continue
            rest = self._count_in(index, {"match_all": {}}) - selected
            if _drops_whole(index, selected, rest):
                dropped = self._drop_whole(index, query, guard)
                if dropped is not None:
                    done += dropped
                    continue
            by_id, stopped = self._delete_by_id(index, query, guard)
            done += by_id
            if stopped:
                break
        self.refresh()
        return done

    def _delete_by_id(
        self, index: str, query: Mapping[str, Any], guard: Guard | None
    ) -> tuple[int, bool]:
        """The selected events of ``index`` deleted by id; (how many, stopped by the guard)."""
        done, lines = 0, []
        for hit in list(self._hits(query, source=False, index=index, size=self._batch)):
            lines.append(orjson.dumps({"delete": {"_index": index, "_id": hit["_id"]}}))
            if len(lines) >= self._batch:
                if guard is not None and not guard():
                    return done, True
                done += self._bulk_actions(lines)
                lines = []
        if lines and guard is not None and not guard():
            return done, True
        return done + self._bulk_actions(lines), False

    def has_index(self, index: str) -> bool:
        """Whether ``index`` exists (a daily index, or retention's ``-kept`` one)."""
        with translated_errors():
            return bool(self._client.indices.exists(index=index))

    def drops_whole(self, index: str, scope: Scope, exclude: Sequence[Scope] = ()) -> bool:
        """Whether :meth:`delete` of ``scope`` would drop ``index`` whole as it stands now
        (moving what it spares to the ``-kept`` index): retention's recorder asks this under
        a write block, so the answer holds until the deletion."""
        with translated_errors():
            self._client.indices.refresh(index=index)
        selected = self._count_in(index, _query(scope, exclude))
        rest = self._count_in(index, {"match_all": {}}) - selected
        return selected > 0 and _drops_whole(index, selected, rest)

    def _indices(self) -> list[str]:
        with translated_errors():
            found = self._client.indices.get(
                index=self._pattern, ignore_unavailable=True, allow_no_indices=True
            )
        return sorted(found)

    def _count_in(self, index: str, query: Mapping[str, Any]) -> int:
        with translated_errors():
            return int(self._client.count(index=index, body={"query": query})["count"])

    def _drop_whole(self, index: str, query: Mapping[str, Any], guard: Guard | None) -> int | None:
        """Block writes, count again, copy what the scope spares (if anything) to the
        ``-kept`` index, ask the guard, delete the index; returns how many selected events
        went, ``0`` when the guard said stop, ``None`` when the index no longer suits (the
        caller deletes by id). A late event for that day (a replay) meanwhile gets a 403
        block, which the shipper retries: after the deletion it lands in a new index, so
        nothing is lost. A run killed here leaves the block and perhaps copies in ``-kept``
        (each spared event stored twice): the next run undoes that first
        (:meth:`undo_interrupted_moves`)."""
        with translated_errors():
            self._client.indices.put_settings(index=index, body={"index.blocks.write": True})
        copied: list[str] = []
        target = index + KEPT_SUFFIX
        try:
            with translated_errors():
                self._client.indices.refresh(index=index)
            selected = self._count_in(index, query)
            rest = self._count_in(index, {"match_all": {}}) - selected
            if not _drops_whole(index, selected, rest):
                self._unblock(index)
                return None
            if rest:
                copied = self._copy(index, {"bool": {"must_not": [query]}}, target)
                if len(copied) != rest:
                    raise StoreError(f"copied {len(copied)} of {rest} kept events of {index}")
            if guard is not None and not guard():
                self._uncopy(target, copied)
                self._unblock(index)
                return 0
            with translated_errors():
                self._client.indices.delete(index=index)
            return selected
        except BaseException:
            with contextlib.suppress(StoreError):
                self._uncopy(target, copied)
            self._unblock(index)
            raise

    def undo_interrupted_moves(self) -> list[str]:
        """Undo each move to a ``-kept`` index that a killed run left between the copy and the
        drop (the sign: a daily index still write-blocked, with a ``-kept`` sibling): its
        copies are removed from ``-kept`` and its write block lifted, so each event is stored
        once again, in the day's index, which was the authority until the drop. Undone rather
        than finished: finishing would delete without asking the holds placed since, and the
        next plan moves the day again if it is still due. Only retention, holding the run
        lock, may call this (only retention blocks writes). Returns the days set right."""
        with translated_errors():
            found = self._client.indices.get_settings(
                index=self._pattern,
                name="index.blocks.write",
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        undone = []
        for index, data in sorted(found.items()):
            blocks = data.get("settings", {}).get("index", {}).get("blocks", {})
            target = index + KEPT_SUFFIX
            if index.endswith(KEPT_SUFFIX) or str(blocks.get("write")) != "true":
                continue
            if self.has_index(target):
                self._uncopy(target, self._copies(index, target))
                with translated_errors():
                    self._client.indices.refresh(index=target)
            self._unblock(index)
            undone.append(index)
        return undone

    def _copies(self, index: str, target: str) -> list[str]:
        """The ids in ``target`` that ``index`` holds too."""
        with translated_errors():
            self._client.indices.refresh(index=target)
        kept = [hit["_id"] for hit in self._hits({"match_all": {}}, False, target, size=IDS_PAGE)]
        both: list[str] = []
        for at in range(0, len(kept), self._batch):
            chunk = kept[at : at + self._batch]
            body = {"query": {"ids": {"values": chunk}}, "_source": False, "size": len(chunk)}
            with translated_errors():
                response = self._client.search(index=index, body=body)
            both += [hit["_id"] for hit in response["hits"]["hits"]]
        return both

    def _copy(self, index: str, query: Mapping[str, Any], target: str) -> list[str]:
        """Index the matching events of ``index`` into ``target`` whole, under their ids
        (overwriting earlier copies: ``index`` is the authority until it is dropped)."""
        copied: list[str] = []
        lines: list[bytes] = []
        for hit in self._hits(query, source=True, index=index, size=self._batch):
            lines.append(orjson.dumps({"index": {"_index": target, "_id": hit["_id"]}}))
            lines.append(orjson.dumps(hit["_source"]))
            copied.append(hit["_id"])
            if len(lines) >= 2 * self._batch:
                self._bulk_all(lines)
                lines = []
        self._bulk_all(lines)
        with translated_errors():
            self._client.indices.refresh(index=target, ignore_unavailable=True)
        return copied

    def _uncopy(self, target: str, ids: Sequence[str]) -> None:
        """Remove copies made for a move that did not happen (the source still has them)."""
        for at in range(0, len(ids), self._batch):
            self._bulk_actions(
                [
                    orjson.dumps({"delete": {"_index": target, "_id": event_id}})
                    for event_id in ids[at : at + self._batch]
                ]
            )

    def _bulk_all(self, lines: list[bytes]) -> None:
        """A bulk request whose every item must succeed."""
        if not lines:
            return
        with translated_errors():
            response = self._client.bulk(body=b"\n".join(lines) + b"\n", filter_path=_FILTER_PATH)
        if response.get("errors"):
            bad = [i for i in response.get("items") or [] if next(iter(i.values())).get("error")]
            raise StoreError(f"bulk copy item failed: {bad[:1]}")

    def _unblock(self, index: str) -> None:
        with translated_errors():
            self._client.indices.put_settings(index=index, body={"index.blocks.write": None})

    def minimise(
        self, scope: Scope, *, exclude: Sequence[Scope] = (), guard: Guard | None = None
    ) -> int:
        """Per index of the scope's days, minimise the selected events not yet minimised
        (see the module docstring: on the node by ``_update_by_query``, else put back whole
        from the client). Refresh is off on the index while it runs (one unchanging view to
        list or page through; fewer, larger segments); ``guard`` is asked before each request
        that changes events (at most ``batch`` of them). A document is always either as it
        was or minimised whole: a run that fails or is stopped leaves the rest for the next.

        Raises StoreError when the node refuses a change (e.g. a write-blocked index; the
        events changed before it stay minimised) or events kept changing under it;
        StoreUnavailable when a batch outlives ``minimise_task_timeout`` (it is cancelled)."""
        require_until(scope)
        self.refresh()
        query = _query(_replace_minimised(scope), exclude)
        step = self._minimise_on_node if self.minimises_on_node() else self._minimise_in
        done = 0
        for index in self._indices_within(scope.since, scope.until):
            if self._count_in(index, query) == 0:
                continue
            changed, stopped = step(index, query, guard)
            done += changed
            if stopped:
                break
        self.refresh()
        return done

    def minimises_on_node(self) -> bool:
        """Whether :meth:`minimise` runs on the node: as configured, else whether every node
        has the ``lang-painless`` and ``reindex`` modules (asked once)."""
        if self._on_node is None:
            with translated_errors():
                found = self._client.nodes.info(
                    metric="plugins", filter_path="nodes.*.modules.name"
                )
            nodes = (found.get("nodes") or {}).values()
            self._on_node = bool(nodes) and all(
                {m.get("name") for m in node.get("modules") or []} >= MODULES for node in nodes
            )
        return self._on_node

    @contextlib.contextmanager
    def _refresh_paused(self, index: str) -> Iterator[None]:
        """Refreshing ``index`` off while a minimisation rewrites it, then back to the index's
        default and one refresh, whatever happened meanwhile."""
        with translated_errors():
            self._client.indices.put_settings(
                index=index, body={"index.refresh_interval": REFRESH_OFF}
            )
        try:
            yield
        finally:
            with translated_errors():
                self._client.indices.put_settings(
                    index=index, body={"index.refresh_interval": None}
                )
                self._client.indices.refresh(index=index)

    def _minimise_on_node(
        self, index: str, query: Mapping[str, Any], guard: Guard | None
    ) -> tuple[int, bool]:
        """List the selected ids (no document read), then per ``batch`` of them ask the
        guard and run the script on the node, ``workers`` batches at once (one shard's
        ``_update_by_query`` reads and writes in turn on one thread); (how many changed,
        stopped by the guard)."""
        pending: list[Future[int]] = []
        stopped = False
        with self._refresh_paused(index):
            ids = [hit["_id"] for hit in self._hits(query, False, index, size=IDS_PAGE)]
            with ThreadPoolExecutor(self._workers, thread_name_prefix="minimise") as pool:
                for at in range(0, len(ids), self._batch):
                    pending = _bounded(pending, self._workers)
                    if guard is not None and not guard():
                        stopped = True
                        break
                    chunk = ids[at : at + self._batch]
                    pending.append(pool.submit(self._minimise_ids, index, query, chunk))
                done = sum(f.result() for f in pending)
        return done, stopped

    def _minimise_ids(self, index: str, query: Mapping[str, Any], ids: Sequence[str]) -> int:
        """One ``_update_by_query`` over these ids (still selected by ``query``: a held or
        already minimised event is left alone). Events that changed between the node's
        search and its write (version conflicts) are skipped by it; the index is refreshed
        and the batch run again for them, at most ``MINIMISE_CONFLICT_RERUNS`` times."""
        body = {
            "query": {"bool": {"filter": [query, {"ids": {"values": list(ids)}}]}},
            "script": MINIMISE_SCRIPT,
        }
        done = 0
        for _ in range(1 + MINIMISE_CONFLICT_RERUNS):
            answer = self._update_task(index, body)
            done += int(answer.get("updated", 0))
            failures = answer.get("failures") or []
            if failures:
                raise StoreError(f"minimisation of {index} refused: {_failure_text(failures[0])}")
            conflicts = int(answer.get("version_conflicts", 0))
            if conflicts == 0:
                return done
            with translated_errors():
                self._client.indices.refresh(index=index)
        raise StoreError(
            f"minimisation of {index}: {conflicts} events kept changing during the run"
            f" ({1 + MINIMISE_CONFLICT_RERUNS} attempts); they stay as they are"
        )

    def _update_task(self, index: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Start ``_update_by_query`` as a task and wait for its answer, at most
        ``minimise_task_timeout`` seconds (then it is cancelled: what it changed stays
        minimised, the rest as it was)."""
        with translated_errors():
            started = self._client.update_by_query(
                index=index,
                body=body,
                params={
                    "conflicts": "proceed",
                    "slices": "auto",
                    "scroll_size": str(self._batch),
                    "wait_for_completion": "false",
                },
            )
        task = str(started["task"])
        deadline = time.monotonic() + self._task_timeout
        pause = _TASK_POLL[0]
        while True:
            with translated_errors():
                state = self._client.tasks.get(task_id=task)
            if state.get("completed"):
                if state.get("error"):
                    raise StoreError(f"minimisation of {index} failed: {state['error']}")
                return dict(state.get("response") or {})
            if time.monotonic() >= deadline:
                with translated_errors(), contextlib.suppress(NotFoundError):
                    self._client.tasks.cancel(task_id=task)
                raise StoreUnavailable(
                    f"minimisation of {index} did not finish within {self._task_timeout:g} s;"
                    " cancelled (the next run resumes it)"
                )
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _TASK_POLL[1])

    def _minimise_in(
        self, index: str, query: Mapping[str, Any], guard: Guard | None
    ) -> tuple[int, bool]:
        pending: list[Future[int]] = []
        stopped = False
        with (
            self._refresh_paused(index),
            ThreadPoolExecutor(self._workers, thread_name_prefix="minimise") as pool,
        ):
            lines: list[bytes] = []
            for hit in self._hits(query, source=True, index=index, versions=True, size=self._batch):
                lines.append(
                    orjson.dumps(
                        {
                            "index": {
                                "_index": index,
                                "_id": hit["_id"],
                                "if_seq_no": hit["_seq_no"],
                                "if_primary_term": hit["_primary_term"],
                            }
                        }
                    )
                )
                lines.append(orjson.dumps(_minimised(hit.get("_source") or {})))
                if len(lines) >= 2 * self._batch:
                    if guard is not None and not guard():
                        stopped = True
                        break
                    pending = _bounded(pending, self._workers)
                    pending.append(pool.submit(self._bulk_actions, lines))
                    lines = []
            if lines and not stopped:
                if guard is not None and not guard():
                    stopped = True
                else:
                    pending.append(pool.submit(self._bulk_actions, lines))
            done = sum(f.result() for f in pending)
        return done, stopped


def _drops_whole(index: str, selected: int, rest: int) -> bool:
    """An index is dropped whole when nothing else is in it, or when what stays is few
    enough (``MOVE_RATIO``) to copy to the ``-kept`` index first; a ``-kept`` index is never
    itself moved."""
    return rest == 0 or (rest * MOVE_RATIO <= selected and not index.endswith(KEPT_SUFFIX))


def _bounded(pending: list[Future[int]], workers: int) -> list[Future[int]]:
    """Wait until fewer than ``workers`` of ``pending`` run; the unfinished ones stay listed
    (their results are summed at the end, their errors raised there)."""
    while sum(1 for f in pending if not f.done()) >= workers:
        wait([f for f in pending if not f.done()], return_when=FIRST_COMPLETED)
    return pending


_SORT: Final = [{"@timestamp": "asc"}, {"event.id": "asc"}]


def _total(response: Mapping[str, Any], limit: int) -> Total:
    hits = response["hits"]["total"]
    value = int(hits["value"])
    return Total(min(value, limit), exact=hits["relation"] == "eq" and value <= limit)


@contextlib.contextmanager
def _pit_errors() -> Iterator[None]:
    """A point in time that expired or was closed answers 404: the cursor is stale."""
    try:
        yield
    except NotFoundError as exc:
        raise PointInTimeGone("the point in time of this cursor expired") from exc


def _item_result(item: Mapping[str, Any]) -> ItemResult:
    answer = next(iter(item.values()))
    status = int(answer.get("status", 0))
    if 200 <= status < 300:
        return ItemResult("stored")
    if status == 409:
        return ItemResult("duplicate")
    error = answer.get("error") or {}
    reason = f"{status} {error.get('type', '')}: {error.get('reason', '')}"
    if status in _REJECT_STATUSES:
        return ItemResult("rejected", reason, str(error.get("type", "")))
    return ItemResult("retry", reason, str(error.get("type", "")))


def _failure_text(failure: Mapping[str, Any]) -> str:
    """One failure of ``_update_by_query`` in words: status, error type and reason."""
    cause = failure.get("cause") or {}
    if isinstance(cause, Mapping):
        return f"{failure.get('status', '')} {cause.get('type', '')}: {cause.get('reason', '')}"
    return str(failure)[:500]


def _replace_minimised(scope: Scope) -> Scope:
    return replace(scope, minimised=False)


def _minimised(source: Mapping[str, Any]) -> dict[str, Any]:
    """The stored document minimised as SQLite does it: the user agent absent (not null),
    the source address truncated, ``audit.minimised`` set. Documents are flat (dotted keys)."""
    doc = {k: v for k, v in source.items() if k != "user_agent.original"}
    ip = doc.get("source.ip")
    if isinstance(ip, str):
        doc["source.ip"] = truncate_ip(ip)
    doc["audit.minimised"] = True
    return doc


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _filters(scope: Scope) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = []
    for name, values in (
        ("user.id", scope.user_ids),
        ("organization.id", scope.organization_ids),
        ("audit.category", scope.categories),
        ("event.action", scope.actions),
        ("event.id", scope.event_ids),
        ("user.target.id", scope.target_ids),
        ("event.outcome", scope.outcomes),
        ("http.response.status_code", scope.status_codes),
        ("trace.id", scope.trace_ids),
        ("rule.name", scope.rule_names),
    ):
        if values:
            filters.append({"terms": {name: list(values)}})
    if scope.subjects or scope.platform_ids:
        filters.append(_person(scope))
    if scope.tenants:
        filters.append(
            _any_of(
                [
                    {"terms": {name: list(scope.tenants)}}
                    for name in ("organization.id", "labels.data_tenant")
                ]
            )
        )
    if scope.text is not None:  # the n-gram-indexed wildcard field, never a terms scan;
        # case-insensitive by the field's lowercase normalizer (applied to the pattern too)
        pattern = "*" + _escape_wildcard(scope.text) + "*"
        filters.append({"wildcard": {FREE_TEXT_FIELD: {"value": pattern}}})
    if scope.source_ips:
        filters.append(
            {
                "bool": {
                    "should": [{"term": {"source.ip": ip}} for ip in scope.source_ips],
                    "minimum_should_match": 1,
                }
            }
        )
    if scope.since is not None or scope.until is not None:
        bounds: dict[str, str] = {}
        if scope.since is not None:
            bounds["gte"] = _iso(scope.since)
        if scope.until is not None:
            bounds["lt"] = _iso(scope.until)
        filters.append({"range": {"@timestamp": bounds}})
    if scope.minimised is True:
        filters.append({"term": {"audit.minimised": True}})
    elif scope.minimised is False:
        filters.append({"bool": {"must_not": [{"term": {"audit.minimised": True}}]}})
    for key, value in scope.labels.items():
        filters.append({"term": {f"labels.{key}": value}})
    return filters


def _person(scope: Scope) -> dict[str, Any]:
    """The person either way (user.id, user.target.id), or their platform ids as targets of
    personal-data events (under the id's tenant)."""
    clauses: list[dict[str, Any]] = []
    if scope.subjects:
        clauses += [
            {"terms": {name: list(scope.subjects)}} for name in ("user.id", "user.target.id")
        ]
    for tenant, ids in platform_id_groups(scope).items():
        clause: list[dict[str, Any]] = [
            {"term": {"audit.category": PLATFORM_ID_CATEGORY}},
            {"terms": {"user.target.id": ids}},
        ]
        if tenant:
            clause.append({"term": {"labels.data_tenant": tenant}})
        clauses.append({"bool": {"filter": clause}})
    return _any_of(clauses)


def _any_of(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"bool": {"should": clauses, "minimum_should_match": 1}}


def _escape_wildcard(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def _count_source(key: str) -> dict[str, Any]:
    if key not in COUNT_KEYS:
        raise ValueError(f"cannot count by {key!r}; choose from {', '.join(COUNT_KEYS)}")
    if key == "week":
        return {
            "date_histogram": {
                "field": "@timestamp",
                "calendar_interval": "week",
                "format": "yyyy-MM-dd",
                "time_zone": "UTC",
            }
        }
    return {"terms": {"field": key, "missing_bucket": True}}


def _query(scope: Scope, exclude: Sequence[Scope]) -> dict[str, Any]:
    return {
        "bool": {
            "filter": _filters(scope),
            "must_not": [{"bool": {"filter": _filters(held)}} for held in exclude],
        }
    }
