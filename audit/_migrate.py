"""Bring daily indices made under an older index template up to the current mappings.

An index template only shapes indices created after it; daily indices made before the current
free-text field existed (``audit.search_text``, lowercase-normalised, filled through ``copy_to``
from the text fields) have no such field: free-text search finds none of their events. That
covers indices from before any free-text field and those with the first, case-sensitive one
(``audit.free_text``; a normalizer cannot be added to an existing field, so it is a new field).
:func:`migrate_indices` upgrades them in place, per daily index:

1. put the current template (so the days to come are right), then put the template's mappings
   on the index (new fields and ``copy_to`` are added by a mapping merge; a conflicting field
   type stops the migration of that index with the error), with ``_meta.audit_migration`` set
   to ``in_progress``;
2. read every document (``search_after`` by time and id, no scroll context) and write it back
   unchanged with a ``_bulk`` ``index`` action on its own ``_id`` in its own index, only if
   unchanged since read (``if_seq_no``/``if_primary_term``). Indexing the same source again
   under the new mappings fills the copied field. The test node has no reindex module, and a
   reindex into a new index would need the daily index name freed meanwhile: this way no
   document leaves its index, so none can be lost or doubled. A 409 means the document changed
   (minimised by retention) after the mapping was put, so it was already indexed under the new
   mappings; a 404 means it was deleted meanwhile. Both count as done;
3. set ``_meta.audit_migration`` to ``done``.

An index that already has the free-text field and is not marked ``in_progress`` is skipped, so
running it again is cheap, and a run interrupted mid-index picks that index up again. Events
keep their ids, sources and index; tamper-evidence digests over them stay valid.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from opensearchpy import OpenSearch

from audit._opensearch import translated_errors
from audit.errors import StoreError
from audit.events import FREE_TEXT_FIELD, INDEX_BASE, index_pattern, index_template

__all__ = ["IndexMigration", "MigrationReport", "migrate_indices", "needs_migration"]

PAGE_SIZE: Final = 1000
META_KEY: Final = "audit_migration"
_SORT: Final = [{"@timestamp": "asc"}, {"event.id": "asc"}]  # unique: event ids are


@dataclass(frozen=True, slots=True)
class IndexMigration:
    """What happened to one daily index."""

    index: str
    status: str  # "current" (nothing to do), "migrated", or "failed"
    documents: int = 0  # documents read and written back (or found changed meanwhile)
    changed_meanwhile: int = 0  # 409/404 answers: written or deleted by someone else meanwhile
    error: str = ""


@dataclass(slots=True)
class MigrationReport:
    """Every daily index and what the migration did to it."""

    indices: list[IndexMigration] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(i.status != "failed" for i in self.indices)

    def summary(self) -> dict[str, int]:
        counts = {"current": 0, "migrated": 0, "failed": 0}
        for item in self.indices:
            counts[item.status] += 1
        counts["documents"] = sum(i.documents for i in self.indices)
        return counts


def _has_free_text(mapping: Mapping[str, Any]) -> bool:
    """Whether the mapping has ``audit.free_text`` (OpenSearch nests dotted names)."""
    node: Any = mapping
    for part in FREE_TEXT_FIELD.split("."):
        node = ((node.get("properties") or {}) if isinstance(node, Mapping) else {}).get(part)
    return isinstance(node, Mapping) and bool(node)


def needs_migration(mapping: Mapping[str, Any]) -> bool:
    """Whether an index with this mapping lacks the current fields or was left mid-way."""
    in_progress = (mapping.get("_meta") or {}).get(META_KEY) == "in_progress"
    return in_progress or not _has_free_text(mapping)


def migrate_indices(
    client: OpenSearch, *, prefix: str = "", shards: int = 1, replicas: int = 1
) -> MigrationReport:
    """Upgrade every daily index under ``prefix`` to the current mappings (see the module)."""
    template = index_template(prefix, shards=shards, replicas=replicas)
    with translated_errors():
        client.indices.put_index_template(name=f"{prefix}{INDEX_BASE}", body=template)
        found = client.indices.get_mapping(
            index=index_pattern(prefix), ignore_unavailable=True, allow_no_indices=True
        )
    report = MigrationReport()
    properties = template["template"]["mappings"]["properties"]
    for index in sorted(found):
        mapping = found[index].get("mappings") or {}
        if not needs_migration(mapping):
            report.indices.append(IndexMigration(index, "current"))
            continue
        try:
            report.indices.append(_migrate_one(client, index, properties))
        except StoreError as exc:
            report.indices.append(IndexMigration(index, "failed", error=str(exc)))
    return report


def _set_meta(client: OpenSearch, index: str, state: str, properties: Any = None) -> None:
    body: dict[str, Any] = {"_meta": {META_KEY: state}}
    if properties is not None:
        body["properties"] = properties
    with translated_errors():
        client.indices.put_mapping(index=index, body=body)


def _migrate_one(client: OpenSearch, index: str, properties: Any) -> IndexMigration:
    _set_meta(client, index, "in_progress", properties)
    with translated_errors():
        client.indices.refresh(index=index)
    documents = changed = 0
    lines: list[bytes] = []
    for hit in _every_hit(client, index):
        head = {
            "index": {
                "_index": index,
                "_id": hit["_id"],
                "if_seq_no": hit["_seq_no"],
                "if_primary_term": hit["_primary_term"],
            }
        }
        lines += [orjson.dumps(head), orjson.dumps(hit["_source"])]
        if len(lines) >= 2 * PAGE_SIZE:
            written, gone = _write_back(client, lines)
            documents, changed, lines = documents + written, changed + gone, []
    written, gone = _write_back(client, lines)
    documents, changed = documents + written, changed + gone
    with translated_errors():
        client.indices.refresh(index=index)
    _set_meta(client, index, "done")
    return IndexMigration(index, "migrated", documents=documents, changed_meanwhile=changed)


def _every_hit(client: OpenSearch, index: str) -> Iterator[dict[str, Any]]:
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "query": {"match_all": {}},
            "sort": _SORT,
            "size": PAGE_SIZE,
            "seq_no_primary_term": True,
        }
        if after is not None:
            body["search_after"] = after
        with translated_errors():
            hits = client.search(index=index, body=body)["hits"]["hits"]
        yield from hits
        if len(hits) < PAGE_SIZE:
            return
        after = hits[-1]["sort"]


def _write_back(client: OpenSearch, lines: list[bytes]) -> tuple[int, int]:
    """Send the index actions; (documents done, of which changed or deleted meanwhile)."""
    if not lines:
        return 0, 0
    with translated_errors():
        response = client.bulk(
            body=b"\n".join(lines) + b"\n",
            filter_path="items.*.status,items.*.error.type,items.*.error.reason",
        )
    done = changed = 0
    for item in response.get("items") or []:
        answer = next(iter(item.values()))
        status = int(answer.get("status", 0))
        if 200 <= status < 300:
            done += 1
        elif status in (404, 409):
            done += 1
            changed += 1
        else:
            raise StoreError(f"writing back a document failed: {status} {answer.get('error')}")
    return done, changed
