"""Two whole gateway instances sharing the audit cluster (a real OpenSearch node), as two
machines behind one load balancer: a logout at one makes the old cookie refused at the other.

With ``session.revocation_store = "audit"`` each instance polls ``{prefix}gateway-revocations``
(every ``session.revocation_poll_interval``, 500 ms by default); with the default ``memory``
store the other instance keeps accepting the cookie, which the control test shows, so the
first test cannot pass by accident.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from opensearchpy import OpenSearch

from gateway._wiring import demo_settings
from tests._opensearch import delete_prefixed, new_prefix
from tests.security._harness import Deployment, deployed, person
from tools.opensearch_node import Node

SESSION = "__Host-gw_session"
#: What instances behind one load balancer share: keys, the IdP client secret, the certificate.
SHARED_FILES = ("session.key", "devidp-client-secret", "assertion-key.pem", "tls")
#: How long the other instance may take (a liveness bound, far above the poll interval).
PROPAGATION_WAIT = 10.0
#: How long a killed instance's audit worker may keep its spool (its close timeout is 10 s).
SPOOL_RELEASE_WAIT = 30.0


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


class SwitchableProxy:
    """A TCP relay to the audit cluster that the test can take away (listener and every
    connection closed: connections are refused) and bring back on the same port, as a
    network partition between one instance and the cluster would."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Instance:
    """A gateway deployment in a process of its own (``tests/e2e/_instance.py``)."""

    process: subprocess.Popen[bytes]
    deployment: Deployment

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no final poll, no flush."""
        self.process.kill()
        self.process.wait(timeout=PROPAGATION_WAIT)


@contextlib.contextmanager
def _instance(state: Path, environ: dict[str, str]) -> Iterator[Instance]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e._instance", str(state), json.dumps(environ)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, "the instance did not start"
        ready = json.loads(line)
        settings = demo_settings(None, environ={"GATEWAY_DEMO__STATE_DIR": str(state)})
        context = ssl.create_default_context(cafile=str(settings.server.tls_cert_file))
        deployment = Deployment(settings, ready["https_port"], 0, ready["idp_url"], context, {})
        yield Instance(process, deployment)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=PROPAGATION_WAIT)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def _wait_for_spool(spool: Path) -> None:
    """Until the killed instance's audit worker (a process of its own, which drains and
    ships for up to its close timeout after its gateway died) has released the spool: the
    restarted instance's worker needs it."""
    deadline = time.monotonic() + SPOOL_RELEASE_WAIT
    fd = os.open(spool / "lock", os.O_RDWR)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                assert time.monotonic() < deadline, "the old audit worker kept the spool"
                time.sleep(0.1)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
    finally:
        os.close(fd)


class TestCrashAfterLogout:
    def test_revocation_survives_kill_while_cluster_away(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        opensearch_node: Node,
        prefix: str,
        opensearch: OpenSearch,
    ) -> None:
        """Log out at A while A cannot reach the cluster, SIGKILL A: restarted on the same
        state with the cluster still away, A refuses the old cookie (401, not 503) from its
        journal; B accepts it until the cluster is back, then the restarted A writes the
        revocation there and B refuses it too; A's journal is then empty."""
        node = urlsplit(opensearch_node.url)
        proxy = SwitchableProxy((node.hostname or "127.0.0.1", node.port or 9200))
        proxy.up()
        crashed = f"{prefix}crash-"
        first, second = tmp_path_factory.mktemp("crash-a"), tmp_path_factory.mktemp("crash-b")
        via_proxy = {
            **_environ(opensearch_node, crashed, "audit"),
            "GATEWAY_AUDIT__OPENSEARCH_URLS": proxy.url,
            # A must still vouch for the session it logs out of while the cluster is away.
            "GATEWAY_SESSION__REVOCATION_MAX_STALENESS": "120s",
        }
        journal = first / "audit" / "spool" / "revocations" / "journal"
        try:
            with _instance(first, via_proxy) as one:
                for name in SHARED_FILES:
                    source = first / name
                    if source.is_dir():
                        shutil.copytree(source, second / name)
                    else:
                        shutil.copy2(source, second / name)
                with deployed(second, _environ(opensearch_node, crashed, "audit")) as two:
                    browser, value = _log_in(one.deployment)
                    assert _until(two, value, 200)[0] == 200
                    proxy.down()
                    try:
                        assert browser.post("/_gateway/logout").status_code == 303
                    finally:
                        browser.close()
                    assert _me(one.deployment, value) == 401
                    one.kill()
                    assert journal.stat().st_size > 0
                    _wait_for_spool(first / "audit" / "spool")
                    with _instance(first, via_proxy) as again:
                        assert _me(again.deployment, value) == 401
                        assert _me(two, value) == 200
                        proxy.up()
                        status, waited = _until(two, value, 401)
                        assert status == 401, f"still {status} at B after {waited:.1f} s"
                        deadline = time.monotonic() + PROPAGATION_WAIT
                        while journal.stat().st_size > 0:
                            assert time.monotonic() < deadline, "the journal was not compacted"
                            time.sleep(0.05)
        finally:
            proxy.down()
            delete_prefixed(opensearch, crashed)
