"""Two gateway instances behind a load balancer, sharing the audit store (a real OpenSearch
node): a login state used at one instance is refused at the other, and a brute-forcer has one
budget, not one per instance.

Guards CWE-294 (authentication bypass by capture-replay: a used ``state`` replayed where the
record of its use is not seen) and CWE-307 (improper restriction of excessive authentication
attempts: per-instance counters multiply the limit by the number of instances).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from opensearchpy import OpenSearch, TransportError

from tests._opensearch import delete_prefixed, new_prefix
from tests.security._harness import Deployment, deployed, person
from tools.opensearch_node import Node

FORGED = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZW1vLXBsYXRmb3JtLWFkbWluIn0."
MAX_FAILURES = 6
#: What instances behind one load balancer share: keys, the IdP client secret, the certificate.
SHARED_FILES = ("session.key", "devidp-client-secret", "assertion-key.pem", "tls")
EVENT_WAIT = 30.0


@pytest.fixture(scope="module")
def prefix(opensearch: OpenSearch) -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_prefixed(opensearch, name)


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, opensearch_node: Node, prefix: str
) -> Iterator[tuple[Deployment, Deployment]]:
    environ = {
        "GATEWAY_AUDIT__STORE": "opensearch",
        "GATEWAY_AUDIT__OPENSEARCH_URLS": opensearch_node.url,
        "GATEWAY_AUDIT__INDEX_PREFIX": prefix,
        "GATEWAY_AUDIT__REPLICAS": "0",
        "GATEWAY_THROTTLE__MAX_FAILURES": str(MAX_FAILURES),
        # Exact sharing: no reuse of "not blocked" answers (the default reuses them for 1 s,
        # tests/gateway/oidc/test_throttle.py TestCheckInterval).
        "GATEWAY_THROTTLE__CHECK_INTERVAL": "0s",
    }
    first, second = tmp_path_factory.mktemp("instance-1"), tmp_path_factory.mktemp("instance-2")
    with deployed(first, environ) as one:
        for name in SHARED_FILES:
            source = Path(first) / name
            if source.is_dir():
                shutil.copytree(source, Path(second) / name)
            else:
                shutil.copy2(source, Path(second) / name)
        with deployed(second, environ) as two:
            yield one, two


def _events(opensearch: OpenSearch, prefix: str, reason: str) -> list[dict[str, object]]:
    """Login failures with ``reason`` in the audit store, waited for (shipping is async)."""
    deadline = time.monotonic() + EVENT_WAIT
    while True:
        try:
            opensearch.indices.refresh(index=f"{prefix}audit-events-*", ignore_unavailable=True)
            found = opensearch.search(
                index=f"{prefix}audit-events-*",
                body={
                    "query": {
                        "bool": {
                            "filter": [
                                {"term": {"event.action": "login_failure"}},
                                {"term": {"event.reason": reason}},
                            ]
                        }
                    }
                },
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        except TransportError as error:
            # A day's index created a moment ago answers 503 until its shard has started
            # (seen under load); that is "not yet", not a failure.
            if error.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        hits = [hit["_source"] for hit in found["hits"]["hits"]]
        if hits or time.monotonic() > deadline:
            return hits
        time.sleep(0.5)


class TestStateSingleUseAcrossInstances:
    def test_used_state_replayed_at_the_other_instance(
        self, pair: tuple[Deployment, Deployment], opensearch: OpenSearch, prefix: str
    ) -> None:
        """CWE-294: the callback (state, code and the login cookie) replayed at the second
        instance after the first accepted it is a 400 ``state_mismatch``; the second
        instance never even asks the IdP for tokens. The refusal is in the audit store."""
        one, two = pair
        with one.client() as browser:
            to_idp = browser.get("/_gateway/login", params={"next": "/"})
            assert to_idp.status_code == 303, to_idp.text
            login_cookie = browser.cookies.get("__Host-gw_login")
            assert login_cookie
            chosen = httpx.post(
                to_idp.headers["location"], data={"person": person("student").subject}
            )
            assert chosen.status_code == 302, chosen.text
            back = urlsplit(chosen.headers["location"])
            callback = f"{back.path}?{back.query}"
            assert browser.get(callback).status_code == 303
        token_calls = two.idp_hits.get("/token", 0)
        with two.client() as replay:
            replay.cookies.set("__Host-gw_login", login_cookie)
            response = replay.get(callback)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "bad_request"
        assert "set-cookie" not in response.headers or "__Host-gw_session=v1" not in str(
            response.headers.get_list("set-cookie")
        )
        assert two.idp_hits.get("/token", 0) == token_calls
        assert _events(opensearch, prefix, "state_mismatch")


class TestOneBudgetForAllInstances:
    def test_failures_at_both_instances_add_up(self, pair: tuple[Deployment, Deployment]) -> None:
        """CWE-307: rejected tokens sent alternately to the two instances block the client
        after at most ``max_failures`` in total (per-instance counters would allow twice as
        many), and then both instances answer 429."""
        one, two = pair
        statuses = []
        with one.client() as first, two.client() as second:
            for number in range(MAX_FAILURES + 1):
                client = first if number % 2 else second
                response = client.get("/api/me", headers={"Authorization": f"Bearer {FORGED}"})
                statuses.append(response.status_code)
            assert statuses[0] == 401
            assert statuses[-1] == 429, statuses
            assert set(statuses) == {401, 429}
            for client in (first, second):
                response = client.get("/api/me", headers={"Authorization": f"Bearer {FORGED}"})
                assert response.status_code == 429, response.text
                assert int(response.headers["retry-after"]) > 0
