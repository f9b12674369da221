"""Helpers for tests that use the OpenSearch node."""

from __future__ import annotations

import uuid

from opensearchpy import OpenSearch


def new_prefix() -> str:
    """An index prefix that no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}-"


def delete_prefixed(client: OpenSearch, prefix: str) -> None:
    """Remove every index and index template whose name starts with ``prefix``."""
    client.indices.delete(index=f"{prefix}*", expand_wildcards="all", ignore_unavailable=True)
    templates = client.indices.get_index_template(name=f"{prefix}*", ignore=404)
    for template in templates.get("index_templates", []):
        client.indices.delete_index_template(name=template["name"])
