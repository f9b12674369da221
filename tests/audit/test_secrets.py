"""No secret from the corpus reaches the index, whatever field it was put in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from opensearchpy import OpenSearch

from audit import OpenSearchStore
from tests.audit.conftest import fast_pipeline
from tools.opensearch_node import free_port

pytestmark = pytest.mark.opensearch

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiIxMjM0IiwiaXNzIjoiaHR0cHM6Ly9pZHAuZXhhbXBsZSJ9"
    ".R2VoZWltZS1oYW5kdGVrZW5pbmctdmFuLWRlLWlkcA"
)
#: (the secret, how it is presented: a key name it goes under, and a text shape around it)
CORPUS: list[tuple[str, str, str]] = [
    (JWT, "id_token", "token {s}"),
    ("ya29.a0AfH6SMBopaqueAccessTok3n", "access_token", "Authorization: Bearer {s}"),
    ("1//0gRefreshTokenOpaqueValue42", "refresh_token", "refresh_token={s}"),
    ("dXNlcjpzM2NyM3QtcGFzc3dvcmQ=", "authorization", "Authorization: Basic {s}"),
    ("Fe26.2**gatewaySessionCookieValue", "cookie", "Cookie: gw_session={s}; lang=nl"),
    ("hunter2-Wachtwoord!", "password", "login failed password={s} for user"),
    ("SplxlOBeZQQYbYS6WxSbIA", "code", "/_gateway/callback?state=abc&code={s}"),
    ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "code_verifier", "code_verifier={s}"),
    ("s3cr3t-client-secret-value", "client_secret", '{{"client_secret": "{s}"}}'),
    ("AKIAIOSFODNN7EXAMPLEKEY", "api_key", "/v1/data?api_key={s}&page=2"),
]
TEXT_FIELDS = ["url.path", "error.message", "user_agent.original", "event.reason", "rule.name"]


def _events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for secret, key, shape in CORPUS:
        text = shape.format(s=secret)
        # Under its own name, at the top level and in labels.
        events.append({"event.action": "login_failure", key: secret})
        events.append({"event.action": "login_failure", "labels": {key: secret}})
        events.append({"event.action": "login_failure", f"labels.{key}": secret})
        # Inside free text of every text field, and of a label, and as a list item.
        for name in TEXT_FIELDS:
            events.append({"event.action": "bearer_token_rejected", name: text})
        events.append({"event.action": "gateway_error", "labels": {"detail": text}})
        events.append({"event.action": "gateway_error", "user.roles": ["teacher", text]})
        # With a log-injection attempt around it.
        events.append({"event.action": "gateway_error", "error.message": f"x\r\n{text}\n"})
    return events


class TestSecretsCorpus:
    def test_no_secret_in_index(
        self, os_store: OpenSearchStore, opensearch: OpenSearch, tmp_path: Path
    ) -> None:
        """Every event is stored, and not one stored byte contains a secret of the corpus."""
        events = _events()
        pipeline = fast_pipeline(os_store, tmp_path)
        pipeline.open()
        for event in events:
            pipeline.emit(event)
        assert pipeline.wait_idle(30)
        pipeline.close()
        assert pipeline.metrics().dead_letters == 0
        os_store.refresh()
        hits = opensearch.search(
            index=f"{os_store.index_prefix}*", body={"query": {"match_all": {}}, "size": 10_000}
        )["hits"]["hits"]
        assert len(hits) == len(events)
        stored = b"\n".join(orjson.dumps(hit["_source"]) for hit in hits)
        leaked = [secret for secret, _, _ in CORPUS if secret.encode() in stored]
        assert leaked == []
        assert b"[REDACTED]" in stored
        for secret, _, _ in CORPUS:  # nor any term the index made of it
            found = opensearch.count(
                index=f"{os_store.index_prefix}*",
                body={"query": {"query_string": {"query": f'"{secret}"', "lenient": True}}},
            )["count"]
            assert found == 0, secret

    def test_no_secret_on_disk_while_store_away(self, tmp_path: Path) -> None:
        """Redaction happens before the spool: during an outage no secret is written to disk."""
        away = OpenSearchStore(url=f"http://127.0.0.1:{free_port()}", timeout=1)
        pipeline = fast_pipeline(away, tmp_path, close_timeout=0.2)
        pipeline.open()
        for event in _events():
            pipeline.emit(event)
        pipeline.close()
        assert pipeline.metrics().spool_bytes > 0
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert [s for s, _, _ in CORPUS if s.encode() in on_disk] == []
