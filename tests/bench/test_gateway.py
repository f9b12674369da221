"""bench/gateway.py: its contenders forward as they claim (the forward-only gateway is the real
one without authentication, authorization and audit), and its wrk parsing reads wrk's output."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import gateway as bench
from gateway._heap import HeapRefreezer
from gateway._wiring import build
from gateway.app import Dispatch, ErrorStage, GatewayApp
from gateway.authn import AuthenticateStage
from gateway.authz import AuthorizeStage
from gateway.headers import MutateHeaders
from gateway.hosts import HostStage
from gateway.https import HTTPSStage
from gateway.metrics import MetricsStage
from gateway.oidc import new_key
from gateway.paths import PathStage
from gateway.proxy import Forward
from gateway.types import Message, Receive, Scope, Send
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

#: The port the benchmark's settings name; requests say it in their Host header.
BENCH_PORT = "8443"
BENCH_HOST = f"127.0.0.1:{BENCH_PORT}"


async def echo_any(scope: Scope, receive: Receive, send: Send) -> None:
    """An upstream answering every path with the path and the headers it received."""
    body = json.dumps(
        {
            "path": scope["path"],
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json")],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_thread(upstream_app()) as url:
        yield url


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with serve_thread(echo_any) as url:
        yield url


@pytest.fixture
def bench_env(echo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment the benchmark gives its gateways; returns the session key."""
    key = new_key()
    monkeypatch.setenv(bench.UPSTREAM_ENV, echo_url)
    monkeypatch.setenv(bench.SESSION_KEY_ENV, key)
    monkeypatch.setenv(bench.STATE_ENV, str(tmp_path / "state"))
    monkeypatch.setenv(bench.PORT_ENV, BENCH_PORT)
    monkeypatch.delenv(bench.OPENSEARCH_ENV, raising=False)
    monkeypatch.delenv(bench.CLIENT_ENV, raising=False)
    return key


def _bench_request(url: str, key: str, **headers: str) -> httpx.Response:
    """The request wrk sends to forward-only and the full pipeline (path, session cookie)."""
    return httpx.get(
        url + bench.FULL_PATH,
        headers={"host": BENCH_HOST, "cookie": bench.session_cookie(key), **headers},
    )


def _forwarded(response: httpx.Response) -> dict[str, list[str]]:
    """The headers the echo upstream received, by lower-cased name."""
    found: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        found.setdefault(name.lower(), []).append(value)
    return found


class TestForwardBare:
    def test_factory_forwards(self, upstream_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """The bare forwarder forwards to the upstream named in the environment, and adds no
        identity assertion."""
        monkeypatch.setenv(bench.UPSTREAM_ENV, upstream_url)
        with serve_thread(bench.forward_app(), lifespan="on") as url:
            response = httpx.get(url + "/echo")
        assert response.status_code == 200
        names = [name for name, _ in response.json()["headers"]]
        assert "x-gateway-assertion" not in names


class TestForwardOnly:
    def test_answers_the_bench_request_with_200(self, bench_env: str) -> None:
        """The forward-only gateway forwards the benchmark's request (a teacher's pupils
        path with a session cookie) to the upstream and answers 200: nothing denies it."""
        with serve_thread(bench.forward_only_app(), lifespan="on") as url:
            response = _bench_request(url, bench_env)
        assert response.status_code == 200
        assert response.json()["path"] == bench.FULL_PATH

    def test_forwards_without_identity_headers_or_assertion(self, bench_env: str) -> None:
        """Nobody is authenticated, so the upstream sees no X-Gateway-* header (no identity,
        no assertion) and not the gateway's session cookie."""
        with serve_thread(bench.forward_only_app(), lifespan="on") as url:
            forwarded = _forwarded(_bench_request(url, bench_env))
        assert [name for name in forwarded if name.startswith("x-gateway-")] == []
        assert "cookie" not in forwarded

    def test_adds_forwarding_headers_and_request_id(self, bench_env: str) -> None:
        """The mutate stage's hygiene is kept: X-Forwarded-For/Proto/Host and X-Request-ID
        are the gateway's, and hop-by-hop headers are dropped."""
        with serve_thread(bench.forward_only_app(), lifespan="on") as url:
            forwarded = _forwarded(
                _bench_request(url, bench_env, **{"x-request-id": "bad id!", "te": "trailers"})
            )
        assert forwarded["x-forwarded-for"] == ["127.0.0.1"]
        assert forwarded["x-forwarded-proto"] == ["http"]
        assert forwarded["x-forwarded-host"] == [BENCH_HOST]
        assert len(forwarded["x-request-id"]) == 1
        assert forwarded["x-request-id"] != ["bad id!"]
        assert "te" not in forwarded

    def test_strips_client_supplied_identity_headers(self, bench_env: str) -> None:
        """Identity headers a client sends (any spelling) never reach the upstream."""
        sent = {
            "X-Gateway-Subject": "admin",
            "X_Auth_User": "admin",
            "x-auth-user": "admin",
            "Remote-User": "admin",
            "X-Forwarded-User": "admin",
            "Forwarded": "for=admin",
        }
        with serve_thread(bench.forward_only_app(), lifespan="on") as url:
            forwarded = _forwarded(_bench_request(url, bench_env, **sent))
        assert [v for values in forwarded.values() for v in values if "admin" in v] == []
        assert "forwarded" not in forwarded

    def test_host_allow_list_and_path_canonicalisation_still_apply(self, bench_env: str) -> None:
        """The host and path stages run: an unknown host and an encoded slash are 400s."""
        with serve_thread(bench.forward_only_app(), lifespan="on") as url:
            unknown = httpx.get(url + "/activities", headers={"host": "evil.example"})
            encoded = httpx.get(url + "/api%2Fschools", headers={"host": BENCH_HOST})
        assert unknown.status_code == 400
        assert encoded.status_code == 400

    def test_own_endpoints_are_dispatched(self, bench_env: str) -> None:
        """The gateway's own endpoints answer (dispatch is kept), not the upstream."""
        with serve_thread(bench.forward_only_app(), lifespan="on") as url:
            response = httpx.get(url + "/_gateway/health", headers={"host": BENCH_HOST})
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


def _classes(app: GatewayApp) -> list[type]:
    return [type(stage) for stage in bench.stage_chain(app)]


class TestForwardOnlyStages:
    def test_stage_list_is_the_gateways_minus_authentication_and_authorization(
        self, bench_env: str
    ) -> None:
        """The forward-only chain is the full gateway's (gateway._wiring.build) with exactly
        the OIDC, authenticate and authorize stages left out; a stage added to the gateway
        shows up here and must be placed on one side or the other."""
        full = build(bench.full_settings()).app
        forward_only, _ = bench.forward_only_gateway(bench.full_settings())
        expected = [cls for cls in _classes(full) if cls not in bench.LEFT_OUT]
        assert [c for c in _classes(forward_only) if c is not bench.ForwardOnlyMutate] == [
            c for c in expected if c is not MutateHeaders
        ]
        assert len(_classes(forward_only)) == len(expected)

    def test_stage_list_is_pinned(self, bench_env: str) -> None:
        """The stage classes in order: when create_app's list changes, this fails and the
        benchmark's idea of "forwarding only" is revisited."""
        full = build(bench.full_settings()).app
        forward_only, _ = bench.forward_only_gateway(bench.full_settings())
        assert _classes(full) == [
            MetricsStage,
            ErrorStage,
            HTTPSStage,
            HostStage,
            PathStage,
            *bench.LEFT_OUT,
            Dispatch,
            MutateHeaders,
            Forward,
        ]
        assert _classes(forward_only) == [
            MetricsStage,
            ErrorStage,
            HTTPSStage,
            HostStage,
            PathStage,
            Dispatch,
            bench.ForwardOnlyMutate,
            Forward,
        ]

    def test_heap_is_frozen_at_start_up_as_in_the_gateway(self, bench_env: str) -> None:
        """Like the gateway, the forward-only one freezes its heap as the last start-up step."""
        forward_only, _ = bench.forward_only_gateway(bench.full_settings())
        last = forward_only.lifecycle.startup[-1]
        assert isinstance(getattr(last, "__self__", None), HeapRefreezer)

    def test_without_stages_refuses_a_chain_without_them(self, bench_env: str) -> None:
        """Taking out stages that are not there is an error, not a silent no-op."""
        forward_only, _ = bench.forward_only_gateway(bench.full_settings())
        with pytest.raises(ValueError, match="AuthorizeStage"):
            bench.without_stages(forward_only, (AuthorizeStage,))

    def test_without_stages_relinks_the_chain(self, bench_env: str) -> None:
        """The stage before a removed one passes requests to the one after it."""
        full = build(bench.full_settings()).app
        bench.without_stages(full, (AuthenticateStage,))
        chain = bench.stage_chain(full)
        assert AuthenticateStage not in [type(stage) for stage in chain]
        assert AuthorizeStage in [type(stage) for stage in chain]


class TestFullPipeline:
    def test_answers_the_bench_request_with_200_and_identity(self, bench_env: str) -> None:
        """The full gateway lets the teacher's session through (200) and tells the upstream
        who it is, with a signed assertion; the session cookie stays behind."""
        with serve_thread(bench.full_app(), lifespan="on") as url:
            response = _bench_request(url, bench_env)
        assert response.status_code == 200
        forwarded = _forwarded(response)
        assert forwarded["x-gateway-subject"] == ["bench-teacher"]
        assert forwarded["x-gateway-tenant"] == ["school-a"]
        assert len(forwarded["x-gateway-assertion"]) == 1
        assert "cookie" not in forwarded

    def test_without_the_cookie_is_refused(self, bench_env: str) -> None:
        """Without the session the same request is refused: the 200 above is the session's."""
        with serve_thread(bench.full_app(), lifespan="on") as url:
            response = httpx.get(
                url + bench.FULL_PATH, headers={"host": BENCH_HOST, "accept": "application/json"}
            )
        assert response.status_code == 401


class TestStageCost:
    def test_both_gateways_answer_every_request(
        self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The in-process measurement runs the real pipeline (a teacher's session, the
        shipped policy, the audit worker) and the forward-only gateway to a 200 for every
        request, and reports both and their difference."""
        monkeypatch.setenv(bench.UPSTREAM_ENV, "http://127.0.0.1:9")  # never contacted
        monkeypatch.setenv(bench.SESSION_KEY_ENV, key := new_key())
        monkeypatch.setenv(bench.STATE_ENV, str(tmp_path / "state"))
        monkeypatch.setenv(bench.PORT_ENV, BENCH_PORT)
        text = bench.stage_cost(key, requests=20, rounds=2)
        lines = text.splitlines()
        assert lines[0].startswith("stage cost in-process (stub upstream, 2 alternating rounds")
        assert lines[1].startswith("  full pipeline ")
        assert lines[2].startswith("  forward-only ")
        assert lines[3].startswith("  difference ")
        assert "not 200" not in text

    def test_difference_is_full_minus_forward_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The difference printed is the full pipeline's minimum minus forward-only's."""

        async def fake(_cookie: bytes, _requests: int, _rounds: int) -> bench.StageCost:
            return bench.StageCost(full=[40.0, 38.0, 41.0], forward_only=[15.0, 16.0, 14.5])

        monkeypatch.setattr(bench, "_stage_cost", fake)
        text = bench.stage_cost(new_key(), requests=20, rounds=3)
        assert "  full pipeline    38.0 /   40.0" in text
        assert "  forward-only     14.5 /   15.0" in text
        assert "  difference       23.5 (median of the rounds' differences 25.0)" in text

    def test_failed_answers_are_reported(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Answers other than 200 are counted and said: such figures do not count."""

        async def fake(_cookie: bytes, _requests: int, _rounds: int) -> bench.StageCost:
            return bench.StageCost(full=[40.0], forward_only=[15.0], failed=3)

        monkeypatch.setattr(bench, "_stage_cost", fake)
        assert "3 answers were not 200" in bench.stage_cost(new_key(), requests=20, rounds=1)

    def test_stages_only_prints_the_figures_without_wrk_or_nginx(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--stages-only`` runs the in-process measurement alone and prints its lines."""
        real = bench.stage_cost
        monkeypatch.setattr(bench, "stage_cost", lambda key: real(key, requests=20, rounds=2))
        monkeypatch.setattr("shutil.which", lambda _tool: None)  # no wrk, no nginx
        for name in (bench.SESSION_KEY_ENV, bench.STATE_ENV, bench.UPSTREAM_ENV, bench.PORT_ENV):
            monkeypatch.setenv(name, "restored after the test")
        assert bench.main(["--stages-only"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("stage cost in-process (stub upstream, 2 alternating rounds x 20")
        assert "  forward-only " in out
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


def _contender(name: str, runs: dict[int, list[bench.Run]]) -> bench.Contender:
    contender = bench.Contender(name, "module:factory")
    contender.runs = runs
    return contender


class TestGoalCheck:
    def test_ratio_and_throughput_judged_per_load_against_forward_only(self) -> None:
        """Each load gets full/forward-only and full req/s, judged against 80% and 2,000
        req/s, with full/bare beside it."""
        forward = _contender(
            "forward-only", {1: [bench.Run(2000.0, 1, 2, 0, 100.0)], 32: [bench.Run(5000, 1, 2, 0)]}
        )
        bare = _contender(
            "forward-bare", {1: [bench.Run(3400.0, 1, 2, 0)], 32: [bench.Run(10000.0, 1, 2, 0)]}
        )
        full = _contender(
            "full-pipeline",
            {1: [bench.Run(1700.0, 1, 2, 0, 250.0)], 32: [bench.Run(2500.0, 1, 2, 0)]},
        )
        text = bench.goal_check([bare, forward, full], [1, 32])
        assert (
            "1 conns: full/forward-only  0.85 (met), full    1700 req/s (missed), cpu 0.40, "
            "full/bare 0.50\n" in text
        )
        assert (
            "32 conns: full/forward-only  0.50 (missed), full    2500 req/s (met), "
            "full/bare 0.25\n" in text
        )
        assert "ratio goal met at 1/2 loads; req/s goal met at 1/2 loads" in text

    def test_the_bare_forwarder_is_not_the_baseline(self) -> None:
        """Without forward-only there is no ratio to judge, even when the bare forwarder ran."""
        bare = _contender("forward-bare", {1: [bench.Run(3000.0, 1, 2, 0)]})
        full = _contender("full-pipeline", {1: [bench.Run(1700.0, 1, 2, 0)]})
        assert "needs the forward-only and full-pipeline" in bench.goal_check([bare, full], [1])


class TestTable:
    def test_vs_fwd_is_against_forward_only_and_vs_bare_against_the_bare_forwarder(
        self,
    ) -> None:
        """The table's "vs fwd" column divides by forward-only's req/s, "vs bare" by the bare
        forwarder's, "vs direct" by the upstream's."""
        direct = bench.Contender("direct", None)
        direct.runs = {1: [bench.Run(10000.0, 0.1, 1, 0)]}
        bare = _contender("forward-bare", {1: [bench.Run(4000.0, 1, 2, 0)]})
        forward = _contender("forward-only", {1: [bench.Run(2500.0, 1, 2, 0)]})
        full = _contender("full-pipeline", {1: [bench.Run(2000.0, 1, 2, 0, 300.0, 50.0)]})
        lines = bench._table([direct, bare, forward, full], [1]).splitlines()
        assert lines[0].split() == [
            "contender", "conns", "req/s", "p50", "ms", "p99", "ms", "errors", "vs", "direct",
            "vs", "fwd", "vs", "bare", "cpu", "us/req", "+worker",
        ]  # fmt: skip
        assert lines[4].split() == [
            "full-pipeline", "1", "2000", "1.00", "2.00", "0", "0.200", "0.80", "0.50", "300", "50",
        ]  # fmt: skip
        assert lines[2].split()[6:9] == ["0.400", "1.60", "1.00"]
        assert lines[1].split()[6:] == ["1.000", "-", "-"]


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
