"""audit/_migrate.py on the real node: older daily indices get the free-text field in place."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from opensearchpy import OpenSearch

from audit import OpenSearchStore, Scope
from audit.__main__ import main
from audit._migrate import META_KEY, migrate_indices, needs_migration
from audit.events import FREE_TEXT_FIELD, INDEX_BASE, LEGACY_FREE_TEXT_FIELD, index_template
from tests.audit.test_store_contract import record, write
from tools.opensearch_node import Node

ADMIN = ["--user", "iss|ops", "--role", "platform_admin"]


def old_template(prefix: str, era: str = "before") -> dict[str, Any]:
    """The index template as it was before the free-text field (``before``: no copy_to, no
    field), or with the first free-text field (``legacy``: no normalizer, case-sensitive)."""
    template = copy.deepcopy(index_template(prefix, replicas=0))
    legacy = LEGACY_FREE_TEXT_FIELD

    def change(node: dict[str, Any]) -> None:
        if "copy_to" in node:
            if era == "legacy":
                node["copy_to"] = legacy
            else:
                del node["copy_to"]
        for child in (node.get("properties") or {}).values():
            change(child)

    properties = template["template"]["mappings"]["properties"]
    del properties["audit"]["properties"][FREE_TEXT_FIELD.split(".")[1]]
    if era == "legacy":
        properties["audit"]["properties"][legacy.split(".")[1]] = {
            "type": "wildcard",
            "doc_values": True,
        }
    for child in properties.values():
        change(child)
    return template


@pytest.fixture(params=["before", "legacy"])
def old_store(
    request: pytest.FixtureRequest,
    opensearch: OpenSearch,
    opensearch_node: Node,
    index_prefix: str,
) -> Iterator[OpenSearchStore]:
    """A store whose daily indices were made by an old template (before any free-text field,
    or with the case-sensitive first one), holding events on two days."""
    opensearch.indices.put_index_template(
        name=f"{index_prefix}{INDEX_BASE}", body=old_template(index_prefix, request.param)
    )
    store = OpenSearchStore(url=opensearch_node.url, index_prefix=index_prefix, replicas=0)
    yield store
    store.close()


def seed(store: OpenSearchStore, count: int = 30) -> set[str]:
    records = [
        record(step * 40, **{"url.path": f"/api/schools/school-a/students/stu-{step}"})
        for step in range(count)  # from 12:00, 40 minutes apart: 18 on one day, 12 on the next
    ]
    write(store, *records)
    return {r.event_id for r in records}


def ids(store: OpenSearchStore) -> list[str]:
    store.refresh()
    return [str(e["event.id"]) for e in store.search(Scope(), size=10_000)]


class TestMigrate:
    def test_old_indices_have_no_free_text(
        self, old_store: OpenSearchStore, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """Before migrating, free text finds none of the old events (the problem)."""
        seed(old_store)
        assert old_store.search(Scope(text="stu-1")) == []
        mappings = opensearch.indices.get_mapping(index=f"{index_prefix}{INDEX_BASE}-*")
        assert len(mappings) == 2
        assert all(needs_migration(m["mappings"]) for m in mappings.values())

    def test_migrated_events_are_found_by_free_text(
        self, old_store: OpenSearchStore, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """After migrating, free text finds the old events; every event is still there once."""
        before = seed(old_store)
        report = migrate_indices(opensearch, prefix=index_prefix, replicas=0)
        assert report.ok
        assert report.summary()["migrated"] == 2
        assert report.summary()["documents"] == 30
        after = ids(old_store)
        assert sorted(after) == sorted(before)  # none lost, none doubled
        found = old_store.search(Scope(text="STUDENTS/STU-2"), size=100)
        assert sorted(str(e["url.path"]) for e in found) == [
            "/api/schools/school-a/students/stu-2",
            *(f"/api/schools/school-a/students/stu-{n}" for n in range(20, 30)),
        ]

    def test_second_run_finds_nothing_to_do(
        self, old_store: OpenSearchStore, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """A migrated index (and one made by the current template) is left alone."""
        seed(old_store)
        migrate_indices(opensearch, prefix=index_prefix, replicas=0)
        again = migrate_indices(opensearch, prefix=index_prefix, replicas=0)
        assert again.summary() == {"current": 2, "migrated": 0, "failed": 0, "documents": 0}

    def test_interrupted_index_is_migrated_again(
        self, old_store: OpenSearchStore, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """An index left marked in progress (a run that stopped) is migrated on the next run."""
        seed(old_store)
        migrate_indices(opensearch, prefix=index_prefix, replicas=0)
        [first, _] = sorted(opensearch.indices.get(index=f"{index_prefix}{INDEX_BASE}-*"))
        opensearch.indices.put_mapping(index=first, body={"_meta": {META_KEY: "in_progress"}})
        again = migrate_indices(opensearch, prefix=index_prefix, replicas=0)
        assert [i.index for i in again.indices if i.status == "migrated"] == [first]
        assert len(ids(old_store)) == 30

    def test_new_days_get_the_current_template(
        self, old_store: OpenSearchStore, opensearch: OpenSearch, index_prefix: str
    ) -> None:
        """Migrating puts the current template: a later day's index has the free-text field."""
        migrate_indices(opensearch, prefix=index_prefix, replicas=0)
        write(old_store, record(5 * 24 * 60, **{"url.path": "/later/day"}))
        assert len(old_store.search(Scope(text="later/d"))) == 1
        mapping = opensearch.indices.get_mapping(index=f"{index_prefix}{INDEX_BASE}-*")
        assert all(FREE_TEXT_FIELD.split(".")[1] in str(m) for m in mapping.values())


class TestMigrateCommand:
    def test_platform_admin_migrates_and_it_is_audited(
        self,
        old_store: OpenSearchStore,
        opensearch_node: Node,
        index_prefix: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """python -m audit migrate upgrades the indices and records an audit_migration event."""
        seed(old_store)
        args = ["--opensearch", opensearch_node.url, "--index-prefix", index_prefix, *ADMIN]
        assert main([*args, "migrate"]) == 0
        out = capsys.readouterr().out
        assert ": migrated, 18 documents" in out
        assert ": migrated, 12 documents" in out
        old_store.refresh()
        [event] = old_store.search(Scope(actions=["audit_migration"]))
        assert event["event.outcome"] == "success"
        assert event["labels"]["migrated"] == "2"

    def test_other_roles_are_refused(self, opensearch_node: Node, index_prefix: str) -> None:
        """Only platform admins migrate; anyone else exits with status 3."""
        args = ["--opensearch", opensearch_node.url, "--index-prefix", index_prefix]
        assert main([*args, "--user", "iss|sec", "--role", "security_officer", "migrate"]) == 3
