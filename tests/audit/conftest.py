"""Fixtures for the audit tests: stores on the real node under the test's own prefix."""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit import AuditPipeline, OpenSearchStore, Scope
from tools.opensearch_node import Node


@pytest.fixture
def os_store(opensearch_node: Node, index_prefix: str) -> Iterator[OpenSearchStore]:
    store = OpenSearchStore(url=opensearch_node.url, index_prefix=index_prefix, replicas=0)
    yield store
    store.close()


def fast_pipeline(store: Any, spool_dir: Path, **options: Any) -> AuditPipeline:
    """A pipeline with short waits, for tests."""
    settings: dict[str, Any] = {
        "batch_size": 200,
        "flush_interval": 0.05,
        "backoff_base": 0.01,
        "backoff_max": 0.2,
        "close_timeout": 5.0,
        "fsync": "never",
    }
    settings.update(options)
    return AuditPipeline(store=store, spool_dir=spool_dir, **settings)


def seqs_in(store: OpenSearchStore) -> Counter[int]:
    """How many times each ``labels.seq`` is stored (a duplicate shows as a count of 2)."""
    store.refresh()
    hits = store.search(Scope(), size=10_000)
    return Counter(int(hit["labels"]["seq"]) for hit in hits if "seq" in hit.get("labels", {}))


def event(seq: int, action: str = "access_denied", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event.action": action,
        "event.outcome": "failure",
        "url.path": f"/api/schools/school-a/students/{seq}",
        "source.ip": "192.0.2.10",
        "labels": {"seq": seq},
    }
    base.update(extra)
    return base


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (we run as root here): a disk that really fills up."""
    mount = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
