"""bench/gateway.py: its app factories forward, and its wrk parsing reads wrk's output."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench import gateway as bench
from gateway.oidc import new_key
from tests.gateway._apps import upstream_app
from tests.gateway._servers import serve_thread

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8080/activities
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    2.01ms  40.00ms   90.00%
    Req/Sec     6.50k   500.00     7.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    5.50ms
     90%    7.00ms
     99%    1.20s
  32500 requests in 5.00s, 14.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   6500.12
Transfer/sec:      2.80MB
"""


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_thread(upstream_app()) as url:
        yield url


class TestFactories:
    @pytest.mark.parametrize("factory", [bench.forward_app, bench.mutate_app])
    def test_factory_forwards(
        self, factory: Any, upstream_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each contender's app forwards to the upstream named in the environment."""
        monkeypatch.setenv(bench.UPSTREAM_ENV, upstream_url)
        with serve_thread(factory(), lifespan="on") as url:
            response = httpx.get(url + "/echo")
        assert response.status_code == 200
        names = [name for name, _ in response.json()["headers"]]
        assert ("x-gateway-assertion" in names) == (factory is bench.mutate_app)


class TestStageCost:
    def test_full_pipeline_answers_every_request(
        self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The in-process measurement runs the real pipeline (a teacher's session, the
        shipped policy, the audit worker) to a 200 for every request, and reports it."""
        monkeypatch.setenv(bench.UPSTREAM_ENV, "http://127.0.0.1:9")  # never contacted
        monkeypatch.setenv(bench.SESSION_KEY_ENV, key := new_key())
        monkeypatch.setenv(bench.STATE_ENV, str(tmp_path / "state"))
        monkeypatch.setenv(bench.PORT_ENV, "8443")
        line = bench.stage_cost(key, requests=20, rounds=2)
        assert line.startswith("stage cost in-process")
        assert "not 200" not in line

    def test_stages_only_prints_the_line_without_wrk_or_nginx(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--stages-only`` runs the in-process measurement alone and prints its line."""
        real = bench.stage_cost
        monkeypatch.setattr(bench, "stage_cost", lambda key: real(key, requests=20, rounds=2))
        monkeypatch.setattr("shutil.which", lambda _tool: None)  # no wrk, no nginx
        for name in (bench.SESSION_KEY_ENV, bench.STATE_ENV, bench.UPSTREAM_ENV, bench.PORT_ENV):
            monkeypatch.setenv(name, "restored after the test")
        assert bench.main(["--stages-only"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("stage cost in-process (full pipeline, stub upstream, 2 x 20")
        assert "not 200" not in out


class TestWrkParsing:
    def test_parse(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Requests/s, p50, p99 (units converted to ms) and errors are read from wrk's output."""

        def fake_run(*_args: Any, **_kwargs: Any) -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess([], 0, stdout=WRK_OUTPUT)

        monkeypatch.setattr(subprocess, "run", fake_run)
        run = bench.wrk("http://127.0.0.1:1", 32, 5)
        assert run.rps == pytest.approx(6500.12)
        assert run.p50_ms == pytest.approx(0.85)
        assert run.p99_ms == pytest.approx(1200.0)
        assert run.errors == 7


class TestGoalCheck:
    def test_ratio_and_throughput_judged_per_load(self) -> None:
        """Each load gets full/forward and full req/s, judged against 80% and 2,000 req/s."""
        forward = bench.Contender("forward-aiohttp", "f")
        full = bench.Contender("full-pipeline", "g")
        forward.runs = {1: [bench.Run(2000.0, 1, 2, 0, 100.0)], 32: [bench.Run(5000.0, 1, 2, 0)]}
        full.runs = {1: [bench.Run(1700.0, 1, 2, 0, 250.0)], 32: [bench.Run(2500.0, 1, 2, 0)]}
        text = bench.goal_check([forward, full], [1, 32])
        assert "1 conns: full/forward  0.85 (met), full    1700 req/s (missed), cpu 0.40" in text
        assert "32 conns: full/forward  0.50 (missed), full    2500 req/s (met)\n" in text
        assert "ratio goal met at 1/2 loads; req/s goal met at 1/2 loads" in text

    def test_needs_both_contenders(self) -> None:
        """Without the forward-only contender there is no ratio to judge."""
        full = bench.Contender("full-pipeline", "g")
        assert "needs" in bench.goal_check([full], [1])


class TestHelperCpu:
    def test_children_found_and_their_cpu_read(self) -> None:
        """A child process of the gateway (the audit worker) is found and its CPU counted."""
        child = subprocess.Popen(["sleep", "5"])
        try:
            assert child.pid in bench._children(os.getpid())
            assert bench._children_cpu([child.pid]) >= 0.0
        finally:
            child.kill()
            child.wait()
