"""tools/opensearch_node.py: reuse a live node, start one, and fail clearly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import opensearch_node
from tools.opensearch_node import Node, NodeError


@pytest.fixture
def node(opensearch_node: Node) -> Node:
    return opensearch_node


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestProbe:
    def test_live_node_reports_its_version(self, node: Node) -> None:
        """A node that answers is recognised and reports its version."""
        assert opensearch_node.probe(node.url) == node.version

    def test_nothing_listening_is_none(self) -> None:
        """A closed port is not a node."""
        assert opensearch_node.probe(f"http://127.0.0.1:{_closed_port()}", timeout=1) is None


class TestRun:
    def test_reuses_given_node_and_passes_exit_code(
        self, node: Node, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a live OPENSEARCH_URL, run starts nothing and returns the command's code."""
        monkeypatch.setenv("OPENSEARCH_URL", node.url)
        monkeypatch.setattr(opensearch_node, "started_node", _must_not_start)
        code = opensearch_node.run(
            [
                sys.executable,
                "-c",
                "import os, sys; "
                f"sys.exit(3 if os.environ['OPENSEARCH_URL'] == {node.url!r} else 1)",
            ]
        )
        assert code == 3

    def test_empty_command_is_an_error(self) -> None:
        """run without a command refuses instead of starting a node for nothing."""
        with pytest.raises(NodeError, match="needs a command"):
            opensearch_node.run([])


def _must_not_start(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a node was started although OPENSEARCH_URL answered")


class TestStartFailure:
    def test_broken_java_fails_with_the_log_tail(
        self, node: Node, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A node that cannot start raises NodeError carrying the console output."""
        del node  # the distribution is in the cache once a node has run
        monkeypatch.setenv("JAVA_HOME", "/nonexistent-java")
        with (
            pytest.raises(NodeError, match="exited with code") as info,
            opensearch_node.started_node(
                version=opensearch_node.DEFAULT_VERSION,
                cache_dir=opensearch_node.default_cache_dir(),
                heap="256m",
                timeout=60,
            ),
        ):
            pass
        assert "nonexistent-java" in str(info.value)


class TestJvmOptions:
    def test_relative_log_paths_point_into_workdir(self, tmp_path: Path) -> None:
        """GC log, error file and heap dumps go to the per-run directory."""
        options = tmp_path / "jvm.options"
        options.write_text(
            "-XX:HeapDumpPath=data\n-XX:ErrorFile=logs/hs_err_pid%p.log\n"
            "9-:-Xlog:gc*:file=logs/gc.log:utctime\n"
        )
        opensearch_node._localise_jvm_options(options, tmp_path)
        text = options.read_text()
        assert f"-XX:HeapDumpPath={tmp_path}/data" in text
        assert f"-XX:ErrorFile={tmp_path}/logs/hs_err_pid%p.log" in text
        assert f"file={tmp_path}/logs/gc.log" in text


class TestCacheDir:
    def test_override(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """OPENSEARCH_CACHE_DIR decides where the distribution is kept."""
        monkeypatch.setenv("OPENSEARCH_CACHE_DIR", str(tmp_path))
        assert opensearch_node.default_cache_dir() == tmp_path

    def test_cached_distribution_is_not_fetched_again(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An unpacked distribution in the cache is used without calling Maven."""
        home = tmp_path / "opensearch-9.9.9"
        home.mkdir()
        (home / ".unpacked").touch()
        monkeypatch.setattr("subprocess.run", _must_not_start)
        assert opensearch_node.fetch("9.9.9", tmp_path) == home

    def test_distribution_with_modules_is_not_built_again(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """The copy with the added modules, once built, is used without calling Maven."""
        built = tmp_path / "opensearch-9.9.9-modules"
        built.mkdir()
        (built / opensearch_node.MODULES_MARKER).touch()
        monkeypatch.setattr("subprocess.run", _must_not_start)
        assert (
            opensearch_node.with_modules(tmp_path / "opensearch-9.9.9", "9.9.9", tmp_path) == built
        )


class TestLifecycle:
    """A node started by ``run`` never outlives it (these start a second, small node)."""

    def _start_runner(self, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
        marker = tmp_path / "url"
        env = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
        env["OPENSEARCH_HEAP"] = "256m"
        script = (
            "import os, pathlib, time; "
            f"pathlib.Path({str(marker)!r}).write_text(os.environ['OPENSEARCH_URL']); "
            "time.sleep(120)"
        )
        runner = subprocess.Popen(
            [sys.executable, "tools/opensearch_node.py", "run", "--", sys.executable, "-c", script],
            env=env,
        )
        deadline = time.monotonic() + 120
        while not marker.exists() or not marker.read_text():
            assert runner.poll() is None, "the runner ended before the command started"
            assert time.monotonic() < deadline, "the node did not come up in 120 s"
            time.sleep(0.2)
        url = marker.read_text()
        assert opensearch_node.probe(url) is not None
        return runner, url

    def test_sigterm_stops_command_and_node(self, tmp_path: Path) -> None:
        """SIGTERM to the runner ends the command, stops the node and exits 128+15."""
        runner, url = self._start_runner(tmp_path)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 128 + signal.SIGTERM
        assert opensearch_node.probe(url, timeout=1) is None

    def test_node_dies_with_a_killed_runner(self, tmp_path: Path) -> None:
        """Even SIGKILL to the runner takes the node down (parent-death signal)."""
        runner, url = self._start_runner(tmp_path)
        runner.kill()
        runner.wait()
        deadline = time.monotonic() + 30
        while opensearch_node.probe(url, timeout=1) is not None:
            assert time.monotonic() < deadline, "the node outlived its killed runner"
            time.sleep(0.5)
