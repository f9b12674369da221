"""bench/_peers_lib.py: wrk parsing, medians and ratios, tables, and the contenders' configs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench._peers_lib import (
    Row,
    Sample,
    WrkResult,
    gateway_environ,
    goal_lines,
    median,
    nginx_config,
    oauth2_proxy_args,
    parse_wrk,
    profile_shares,
    ratio,
    render_profile,
    render_table,
    summarise,
)
from gateway.settings import load_settings

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:8080/api/schools/school-a/students
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    2.01ms  40.00ms   90.00%
    Req/Sec     6.50k   500.00     7.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    5.50ms
     90%    7.00ms
     99%    1.20s
  19500 requests in 3.00s, 14.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   6500.12
Transfer/sec:      2.80MB
"""

CLEAN_OUTPUT = """Running 1s test @ http://127.0.0.1:8080/
  1 threads and 1 connections
  Latency Distribution
     50%   45.00us
     75%   50.00us
     90%   60.00us
     99%    2.00ms
  9000 requests in 1.00s, 1.00MB read
Requests/sec:   9000.00
Transfer/sec:      1.00MB
"""


def _sample(rps: float, p99: float = 10.0, cpu: float | None = 1.0, errors: int = 0) -> Sample:
    wrk = WrkResult(requests=int(rps), rps=rps, p50_ms=p99 / 2, p99_ms=p99, errors=errors)
    return Sample(wrk=wrk, cpu_per_1k=cpu, peak_rss_mib=50.0)


class TestParseWrk:
    def test_reads_throughput_and_latency(self) -> None:
        """Requests, req/s and p50/p99 are read, latency units converted to milliseconds."""
        result = parse_wrk(WRK_OUTPUT)
        assert (result.requests, result.rps) == (19500, 6500.12)
        assert result.p50_ms == pytest.approx(0.85)
        assert result.p99_ms == pytest.approx(1200.0)

    def test_counts_errors(self) -> None:
        """Non-2xx answers and every kind of socket error count as errors."""
        assert parse_wrk(WRK_OUTPUT).errors == 7

    def test_clean_run_has_no_errors(self) -> None:
        """Output without error lines means zero errors."""
        assert parse_wrk(CLEAN_OUTPUT).errors == 0

    def test_missing_latency_distribution_is_an_error(self) -> None:
        """Output of a run without --latency is refused, not read as zero latency."""
        without = "\n".join(line for line in CLEAN_OUTPUT.splitlines() if "%" not in line)
        with pytest.raises(ValueError, match="50% latency"):
            parse_wrk(without)

    def test_other_output_is_an_error(self) -> None:
        """Something that is not wrk's report is refused."""
        with pytest.raises(ValueError, match="not wrk output"):
            parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


class TestMedianAndRatio:
    def test_median_of_measured_values(self) -> None:
        """The median skips values that were not measured."""
        assert median([3.0, None, 1.0, 2.0]) == 2.0

    def test_median_of_nothing(self) -> None:
        """With no measured value there is no median."""
        assert median([None, None]) is None

    def test_ratio(self) -> None:
        """A ratio divides the value by its base."""
        assert ratio(3.0, 2.0) == 1.5

    @pytest.mark.parametrize(("value", "base"), [(None, 1.0), (1.0, None), (1.0, 0.0)])
    def test_ratio_without_base(self, value: float | None, base: float | None) -> None:
        """A missing value, a missing base or a zero base gives no ratio."""
        assert ratio(value, base) is None


class TestSummarise:
    def _rows(self) -> list[Row]:
        samples = {
            ("direct", 32): [_sample(10_000), _sample(12_000), _sample(11_000)],
            ("peer", 32): [_sample(2_000, p99=10, cpu=0.5), _sample(1_000, p99=30, cpu=0.3)],
            ("ours", 32): [_sample(1_000, p99=20, cpu=1.0, errors=2), _sample(500, cpu=1.0)],
            ("direct", 1): [_sample(5_000)],
            ("ours", 1): [_sample(400)],
        }
        return summarise(
            samples,
            order=["direct", "peer", "ours"],
            connections=[1, 32],
            peers={"ours": "peer"},
            direct="direct",
        )

    def test_rows_follow_loads_then_order(self) -> None:
        """Rows come per load, contenders in the given order, skipping ones not measured."""
        rows = self._rows()
        assert [(r.connections, r.contender) for r in rows] == [
            (1, "direct"),
            (1, "ours"),
            (32, "direct"),
            (32, "peer"),
            (32, "ours"),
        ]

    def test_medians_over_rounds(self) -> None:
        """Each figure is the median over the rounds, errors are summed."""
        direct, peer, ours = self._rows()[2:]
        assert direct.rps == 11_000
        assert peer.p99_ms == 20.0
        assert (ours.rps, ours.errors, ours.rounds) == (750.0, 2, 2)

    def test_ratios_against_the_peer(self) -> None:
        """req/s and p99 divide by the peer's; requests per CPU second invert CPU per request."""
        ours = self._rows()[4]
        assert ours.rps_vs_peer == pytest.approx(750 / 1500)
        assert ours.p99_vs_peer == pytest.approx(15 / 20)
        assert ours.per_cpu_vs_peer == pytest.approx(0.4 / 1.0)

    def test_ratio_against_direct(self) -> None:
        """req/s is divided by the direct upstream's; the direct row has no ratio."""
        rows = self._rows()
        assert rows[4].rps_vs_direct == pytest.approx(750 / 11_000)
        assert rows[2].rps_vs_direct is None

    def test_no_peer_measured_gives_no_peer_ratio(self) -> None:
        """At a load where the peer has no runs, the peer ratios stay empty."""
        ours_at_1 = self._rows()[1]
        assert ours_at_1.rps_vs_peer is None
        assert ours_at_1.rps_vs_direct == pytest.approx(400 / 5_000)


class TestGoalLines:
    def _rows(self, *, ours_cpu: float, ours_p99: float) -> list[Row]:
        samples = {
            ("peer", 32): [_sample(1_000, p99=10.0, cpu=0.4)],
            ("ours", 32): [_sample(500, p99=ours_p99, cpu=ours_cpu)],
            ("ours", 1): [_sample(100, p99=1.0, cpu=5.0)],
        }
        return summarise(
            samples,
            order=["peer", "ours"],
            connections=[1, 32],
            peers={"ours": "peer"},
            direct="direct",
        )

    def test_met(self) -> None:
        """Half the peer's requests per CPU second and twice its p99 meet the goals."""
        (line,) = goal_lines(self._rows(ours_cpu=0.8, ours_p99=20.0))
        assert "0.50x oauth2-proxy's (goal >= 0.50: met)" in line
        assert "p99 2.00x (goal <= 2.0: met)" in line

    def test_not_met(self) -> None:
        """Less throughput per CPU second or a higher p99 than the goals is said plainly."""
        (line,) = goal_lines(self._rows(ours_cpu=1.0, ours_p99=25.0))
        assert "(goal >= 0.50: NOT met)" in line
        assert "(goal <= 2.0: NOT met)" in line

    def test_only_compared_rows_at_32_connections(self) -> None:
        """Rows at other loads, and rows without a peer, give no goal line."""
        assert len(goal_lines(self._rows(ours_cpu=0.8, ours_p99=20.0))) == 1


class TestRenderTable:
    def test_one_line_per_row_under_a_header(self) -> None:
        """A Markdown table: header, separator with one cell per column, then the rows."""
        rows = summarise(
            {("direct", 8): [_sample(9_000, cpu=None)]},
            order=["direct"],
            connections=[8],
            peers={},
            direct="direct",
        )
        lines = render_table(rows).splitlines()
        assert len(lines) == 3
        assert lines[1].count("---") == lines[0].count("|") - 1
        assert lines[2].startswith("| direct | 8 | 9,000 | 5.00 | 10.00 | - | 50.0 | 0 |")


_GATEWAY = 'process 10:"python -m gateway serve";Runner.run (asyncio/runners.py:118)'
_ASGI = (
    _GATEWAY + ";RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:422)"
    ";HostStage.__call__ (gateway/hosts.py:110)"
    ";AuthenticateStage.__call__ (gateway/authn.py:80)"
)
_WORKER = (
    _GATEWAY + ';process 11:"python -c import sys; from audit._worker import main'
    '; sys.exit(main())";main (audit/_worker.py:530)'
)
PROFILE = "\n".join(
    [
        # the innermost stage counts: forwarding, although authenticate is further out
        _ASGI + ";Forward._http (gateway/proxy.py:150);ClientSession._request (aiohttp/client.py:1)"
        " 40",
        _ASGI + ";BearerAuthenticator.authenticate (gateway/oidc/_bearer.py:90) 20",
        _ASGI + " 10",  # the authenticate stage itself
        _GATEWAY + " 10",  # uvloop, outside any Python frame of ours
        _WORKER + ";_take (audit/_worker.py:500) 10",
        _WORKER + ";OpenSearch.bulk (opensearchpy/client/__init__.py:1) 5",
        _GATEWAY + ";Thread._bootstrap (threading.py:1);AuditWorker._flusher (audit/_worker.py:1)"
        " 5",
        _GATEWAY + ";Thread._bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:1)"
        ";OpenSearchState._blocked (gateway/oidc/_shared.py:1)"
        ";Urllib3HttpConnection.perform_request (opensearchpy/connection/http_urllib3.py:1)"
        ";SocketIO.readinto (socket.py:1) 100",  # waits for OpenSearch: left out
        _GATEWAY + ";Thread._bootstrap (threading.py:1);Condition.wait (threading.py:1) 0",
        "",
    ]
)


class TestProfileShares:
    def test_innermost_stage_claims_the_sample(self) -> None:
        """Stages nest: a sample goes to the innermost part it is in, not an outer stage."""
        shares = dict(profile_shares(PROFILE))
        assert shares["forward: aiohttp client"] == pytest.approx(0.4)
        assert shares["authentication (bearer JWT, throttle)"] == pytest.approx(0.3)

    def test_processes_and_threads_by_their_own_rules(self) -> None:
        """The audit worker's samples split into shipping and the rest; the flusher thread
        is its own part; stacks in no part of ours are the event loop's."""
        shares = dict(profile_shares(PROFILE))
        assert shares["audit worker process: shipping to OpenSearch"] == pytest.approx(0.05)
        assert shares["audit worker process: reading, chain, spool"] == pytest.approx(0.1)
        assert shares["audit flusher, reports and supervisor threads"] == pytest.approx(0.05)
        assert shares["event loop (uvloop) and the rest"] == pytest.approx(0.1)

    def test_waiting_left_out_and_reported_last(self) -> None:
        """Samples of a waiting thread are not busy: shares are of the rest, and the waiting
        share of all samples comes last."""
        shares = profile_shares(PROFILE)
        label, waiting = shares[-1]
        assert label == "(left out: waiting, share of all samples)"
        assert waiting == pytest.approx(0.5)
        assert sum(share for _, share in shares[:-1]) == pytest.approx(1.0)
        assert "shared-state look-ups in the thread pool" not in dict(shares)

    def test_largest_first_in_a_table(self) -> None:
        """The table lists the parts largest first, one row each."""
        lines = render_profile(profile_shares(PROFILE)).splitlines()
        assert lines[2] == "| 40.0% | forward: aiohttp client |"
        assert len(lines) == 2 + 6 + 1  # header, six parts, the waiting share


class TestNginxConfig:
    def test_nginx_accepts_the_config(self, tmp_path: Path) -> None:
        """nginx -t accepts the generated configuration, a quote in the body included."""
        nginx = shutil.which("nginx")
        assert nginx is not None, "nginx is needed: apt-get install -y nginx-light"
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_config(workdir=tmp_path, port=18099, body='{"a":"it\'s"}'))
        done = subprocess.run(
            [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def test_serves_the_body_on_loopback(self, tmp_path: Path) -> None:
        """The server listens on 127.0.0.1 at the port and returns the body as JSON."""
        text = nginx_config(workdir=tmp_path, port=18099, body='{"x":1}')
        assert "listen 127.0.0.1:18099;" in text
        assert "return 200 '{\"x\":1}';" in text
        assert "default_type application/json;" in text


class TestOauth2ProxyArgs:
    def _args(self) -> list[str]:
        return oauth2_proxy_args(
            binary=Path("/cache/oauth2-proxy"),
            port=4180,
            issuer="http://127.0.0.1:9400",
            client_id="bench",
            client_secret="s3cret",
            audience="platform-api",
            upstream="http://127.0.0.1:9001",
            cookie_secret="0123456789abcdef0123456789abcdef",
        )

    def test_binary_first(self) -> None:
        """The command starts with the binary."""
        assert self._args()[0] == "/cache/oauth2-proxy"

    def test_accepts_the_dev_idps_bearer_tokens(self) -> None:
        """Bearer JWTs are accepted from the provider's issuer for the access-token audience."""
        args = self._args()
        assert "--skip-jwt-bearer-tokens=true" in args
        assert "--extra-jwt-issuers=http://127.0.0.1:9400=platform-api" in args
        assert "--oidc-issuer-url=http://127.0.0.1:9400" in args

    def test_login_flow_meets_the_dev_idps_demands(self) -> None:
        """PKCE S256 and a nonce (the provider requires both), callback on its own port."""
        args = self._args()
        assert "--code-challenge-method=S256" in args
        assert "--insecure-oidc-skip-nonce=false" in args
        assert "--redirect-url=http://127.0.0.1:4180/oauth2/callback" in args

    def test_listens_on_loopback_and_forwards_to_the_upstream(self) -> None:
        """It listens on 127.0.0.1 and forwards everything to the upstream."""
        args = self._args()
        assert "--http-address=127.0.0.1:4180" in args
        assert "--upstream=http://127.0.0.1:9001/" in args


class TestGatewayEnviron:
    def _environ(self, tmp_path: Path, *, opensearch: str | None, workers: int) -> dict[str, str]:
        return gateway_environ(
            port=18443,
            upstream="http://127.0.0.1:9001",
            issuer="http://127.0.0.1:9400",
            client_id="bench",
            client_secret="s3cret",
            audience="platform-api",
            session_key="A" * 43,
            assertion_key=tmp_path / "key.pem",
            state=tmp_path,
            opensearch=opensearch,
            workers=workers,
        )

    def test_settings_load(self, tmp_path: Path) -> None:
        """The gateway's own settings loader accepts the variables: loopback, plain HTTP."""
        settings = load_settings(environ=self._environ(tmp_path, opensearch=None, workers=1))
        assert (settings.server.host, settings.server.https_port) == ("127.0.0.1", 18443)
        assert settings.server.allow_plain_http
        assert settings.upstream.url == "http://127.0.0.1:9001"
        assert settings.oidc.issuers["devidp"].audiences == ("platform-api",)

    def test_audit_to_opensearch(self, tmp_path: Path) -> None:
        """With a node URL the audit store is OpenSearch, else SQLite."""
        environ = self._environ(tmp_path, opensearch="http://127.0.0.1:9200", workers=1)
        assert load_settings(environ=environ).audit.store == "opensearch"
        environ = self._environ(tmp_path, opensearch=None, workers=1)
        assert load_settings(environ=environ).audit.store == "sqlite"

    def test_two_workers(self, tmp_path: Path) -> None:
        """Two workers load: revocations are kept in a shared SQLite file, as they must be."""
        settings = load_settings(environ=self._environ(tmp_path, opensearch=None, workers=2))
        assert settings.server.workers == 2
        assert settings.session.revocation_store == "sqlite"
