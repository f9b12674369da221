"""Two whole gateway instances sharing the audit cluster (a real OpenSearch node), as two
machines behind one load balancer: a logout at one makes the old cookie refused at the other.

With ``session.revocation_store = "audit"`` each instance polls ``{prefix}gateway-revocations``
(every ``session.revocation_poll_interval``, 500 ms by default); with the default ``memory``
store the other instance keeps accepting the cookie, which the control test shows, so the
first test cannot pass by accident.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opensearchpy import OpenSearch

from tests._opensearch import delete_prefixed, new_prefix
from tests.security._harness import Deployment, deployed, person
from tools.opensearch_node import Node

SESSION = "__Host-gw_session"
#: What instances behind one load balancer share: keys, the IdP client secret, the certificate.
SHARED_FILES = ("session.key", "devidp-client-secret", "assertion-key.pem", "tls")
#: How long the other instance may take (a liveness bound, far above the poll interval).
PROPAGATION_WAIT = 10.0


@pytest.fixture(scope="module")
def prefix(opensearch: OpenSearch) -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_prefixed(opensearch, name)


@contextlib.contextmanager
def _pair(
    factory: pytest.TempPathFactory, environ: dict[str, str]
) -> Iterator[tuple[Deployment, Deployment]]:
    first, second = factory.mktemp("instance-1"), factory.mktemp("instance-2")
    with deployed(first, environ) as one:
        for name in SHARED_FILES:
            source = Path(first) / name
            if source.is_dir():
                shutil.copytree(source, Path(second) / name)
            else:
                shutil.copy2(source, Path(second) / name)
        with deployed(second, environ) as two:
            yield one, two


def _environ(node: Node, prefix: str, revocations: str) -> dict[str, str]:
    return {
        "GATEWAY_AUDIT__STORE": "opensearch",
        "GATEWAY_AUDIT__OPENSEARCH_URLS": node.url,
        "GATEWAY_AUDIT__INDEX_PREFIX": prefix,
        "GATEWAY_AUDIT__REPLICAS": "0",
        "GATEWAY_SESSION__REVOCATION_STORE": revocations,
    }


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, opensearch_node: Node, prefix: str
) -> Iterator[tuple[Deployment, Deployment]]:
    with _pair(tmp_path_factory, _environ(opensearch_node, prefix, "audit")) as both:
        yield both


def _me(deployment: Deployment, cookie_value: str) -> int:
    with deployment.client() as other:
        response = other.get("/api/me", headers={"Cookie": f"{SESSION}={cookie_value}"})
        return response.status_code


def _log_in(deployment: Deployment) -> tuple[httpx.Client, str]:
    browser = deployment.client()
    deployment.log_in(browser, person("student"))
    value = next(c.value for c in browser.cookies.jar if c.name == SESSION)
    assert value
    return browser, value


def _until(deployment: Deployment, cookie_value: str, wanted: int) -> tuple[int, float]:
    """Ask until the answer is ``wanted`` or PROPAGATION_WAIT passed: (last answer, seconds)."""
    started = time.monotonic()
    while True:
        status = _me(deployment, cookie_value)
        waited = time.monotonic() - started
        if status == wanted or waited > PROPAGATION_WAIT:
            return status, waited
        time.sleep(0.05)


class TestLogoutSeenByEveryInstance:
    def test_old_cookie_refused_at_the_other_instance(
        self, shared: tuple[Deployment, Deployment]
    ) -> None:
        """Log in at A, the cookie works at B; log out at A: A refuses the old cookie at once
        and B within its poll interval (401 everywhere)."""
        one, two = shared
        browser, value = _log_in(one)
        assert _until(two, value, 200)[0] == 200
        try:
            assert browser.post("/_gateway/logout").status_code == 303
        finally:
            browser.close()
        assert _me(one, value) == 401
        status, waited = _until(two, value, 401)
        assert status == 401, f"still {status} at the other instance after {waited:.1f} s"

    def test_index_holds_only_hashes(
        self, shared: tuple[Deployment, Deployment], opensearch: OpenSearch, prefix: str
    ) -> None:
        """The revocation documents in the audit cluster carry no session or user id."""
        one, _ = shared
        browser, _value = _log_in(one)
        try:
            assert browser.post("/_gateway/logout").status_code == 303
        finally:
            browser.close()
        index = f"{prefix}gateway-revocations"
        opensearch.indices.refresh(index=index)
        hits = opensearch.search(index=index, body={"size": 100})["hits"]["hits"]
        assert hits
        assert all(set(hit["_source"]) == {"kind", "key", "before", "until"} for hit in hits)
        assert person("student").subject not in repr(hits)


class TestControl:
    def test_memory_record_is_per_instance(
        self, tmp_path_factory: pytest.TempPathFactory, opensearch_node: Node, prefix: str
    ) -> None:
        """Control: with the per-process ``memory`` record, B still accepts A's logged-out
        cookie (what the shared record exists to prevent)."""
        environ = _environ(opensearch_node, f"{prefix}control-", "memory")
        with _pair(tmp_path_factory, environ) as (one, two):
            browser, value = _log_in(one)
            try:
                assert browser.post("/_gateway/logout").status_code == 303
            finally:
                browser.close()
            assert _me(one, value) == 401
            assert _me(two, value) == 200
