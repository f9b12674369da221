"""audit/events.py: one definition of the fields, actions, ids and the stores' schema."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import RequestError

from audit.events import (
    ACTIONS,
    FIELDS,
    FREE_TEXT_FIELD,
    FREE_TEXT_SOURCES,
    SQLITE_COLUMNS,
    Action,
    Category,
    category_of,
    index_name,
    index_template,
    new_event_id,
)


class TestTaxonomy:
    def test_every_action_has_a_spec(self) -> None:
        """Each action constant is in the taxonomy with at least one ECS category and type."""
        assert {a.value for a in Action} == set(ACTIONS)
        for spec in ACTIONS.values():
            assert spec.ecs_category and spec.ecs_type

    @pytest.mark.parametrize(
        ("action", "category"),
        [
            (Action.LOGIN_FAILURE, Category.AUTHENTICATION),
            (Action.BEARER_TOKEN_REJECTED, Category.AUTHENTICATION),
            (Action.ACCESS_DENIED, Category.ACCESS_DENIED),
            (Action.PERSONAL_DATA_ACCESS, Category.PERSONAL_DATA),
            (Action.UPSTREAM_TIMEOUT, Category.ERRORS),
            (Action.HOLD_PLACED, Category.BACKBONE),
            (Action.POLICY_RELOAD_FAILED, Category.BACKBONE),
            (Action.ROLE_GRANTED, Category.BACKBONE),
        ],
    )
    def test_retention_category(self, action: Action, category: Category) -> None:
        """Actions fall in the retention categories of DESIGN.md §4."""
        assert category_of({"event.action": action.value}) is category

    def test_unknown_action_is_backbone(self) -> None:
        """An action outside the taxonomy gets the longest-kept category, never none."""
        assert category_of({"event.action": "made_up"}) is Category.BACKBONE
        assert category_of({}) is Category.BACKBONE


class TestEventId:
    def test_ids_are_uuid7_and_unique(self) -> None:
        """Ids are version-7 UUIDs and never repeat."""
        ids = [new_event_id() for _ in range(10_000)]
        assert len(set(ids)) == len(ids)
        assert all(uuid.UUID(i).version == 7 for i in ids[:100])

    def test_ids_sort_by_time_then_order(self) -> None:
        """Ids made later sort later, also within one millisecond and for an earlier clock."""
        base = 1_790_000_000_000_000_000
        ids = [new_event_id(base) for _ in range(50)]
        ids += [new_event_id(base - 5_000_000)]  # a clock step back keeps the order
        ids += [new_event_id(base + 10_000_000)]
        assert ids == sorted(ids)

    def test_id_carries_its_millisecond(self) -> None:
        """The first 48 bits are the Unix time in milliseconds."""
        ns = 4_102_444_800_000_000_000  # 2100-01-01
        assert int(new_event_id(ns).replace("-", "")[:12], 16) == ns // 1_000_000


class TestIndexName:
    def test_daily_index_by_own_timestamp(self) -> None:
        """The index is the event's UTC day under the prefix."""
        assert index_name("p-", "2026-11-28T23:59:59.5Z") == "p-audit-events-2026.11.28"

    def test_offset_moves_the_day(self) -> None:
        """A timestamp with an offset is filed under its UTC day."""
        assert index_name("", "2026-11-29T00:30:00+01:00") == "audit-events-2026.11.28"

    def test_naive_timestamp_refused(self) -> None:
        """A timestamp without a zone is ambiguous and refused."""
        with pytest.raises(ValueError, match="zone"):
            index_name("", "2026-11-29T00:30:00")


class TestSqliteColumns:
    def test_one_column_per_field(self) -> None:
        """Every field has a distinct column name usable without quoting."""
        columns = list(SQLITE_COLUMNS.values())
        assert len(columns) == len(FIELDS) == len(set(columns))
        assert all(c.replace("_", "").isalnum() for c in columns)


def _doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@timestamp": "2026-11-28T10:00:00.000000Z",
        "event.id": new_event_id(),
        "event.action": "access_denied",
        "event.category": ["web"],
        "source.ip": "192.0.2.10",
        "http.response.status_code": 403,
        "audit.schema_version": 1,
        "audit.category": "access_denied",
        "labels": {"anything": "goes"},
    }
    doc.update(extra)
    return doc


@pytest.mark.opensearch
class TestIndexTemplate:
    def test_node_accepts_template_and_valid_event(
        self, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """The generated template installs, and an event of the schema is stored."""
        opensearch.indices.put_index_template(
            name=f"{index_prefix}audit-events", body=index_template(index_prefix, replicas=0)
        )
        index = index_name(index_prefix, "2026-11-28T10:00:00Z")
        opensearch.index(index=index, body=_doc(), refresh=True)
        mapping = opensearch.indices.get_mapping(index=index)[index]["mappings"]
        assert mapping["dynamic"] == "strict"
        assert mapping["properties"]["source"]["properties"]["ip"]["type"] == "ip"

    def test_free_text_sources_copy_into_one_wildcard_field(
        self, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """Each free-text source is copied into one wildcard field with doc values (without
        them a copied value is never verified and nothing is found) and a lowercase normalizer
        (a plain wildcard query is case-insensitive)."""
        opensearch.indices.put_index_template(
            name=f"{index_prefix}audit-events", body=index_template(index_prefix, replicas=0)
        )
        index = index_name(index_prefix, "2026-11-28T10:00:00Z")
        opensearch.index(index=index, body=_doc(**{"url.path": "/a/Students/7"}), refresh=True)
        props = opensearch.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert props["audit"]["properties"][FREE_TEXT_FIELD.split(".")[1]] == {
            "type": "wildcard",
            "doc_values": True,
            "normalizer": "lowercase",
        }
        for name in FREE_TEXT_SOURCES:
            node = props
            *parents, leaf = name.split(".")
            for part in parents:
                node = node[part]["properties"]
            assert node[leaf]["copy_to"] == [FREE_TEXT_FIELD], name
        query = {"wildcard": {FREE_TEXT_FIELD: {"value": "*sTUDENTS/7*"}}}
        found = opensearch.search(index=index, body={"query": query})
        assert found["hits"]["total"]["value"] == 1
        assert FREE_TEXT_FIELD not in found["hits"]["hits"][0]["_source"]

    def test_unknown_field_rejected(self, opensearch: OpenSearch, index_prefix: str) -> None:
        """Strict mappings refuse a field the schema does not define."""
        opensearch.indices.put_index_template(
            name=f"{index_prefix}audit-events", body=index_template(index_prefix, replicas=0)
        )
        index = index_name(index_prefix, "2026-11-28T10:00:00Z")
        with pytest.raises(RequestError, match="strict_dynamic_mapping_exception"):
            opensearch.index(index=index, body=_doc(**{"user.password": "x"}))
