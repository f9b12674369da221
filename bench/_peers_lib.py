"""The load-free parts of the peer benchmark: wrk output, medians and ratios, tables, configs.

Everything here is a pure function of its arguments, so ``tests/bench`` checks it without
starting a process. ``bench/peers.py`` does the running.
"""

from __future__ import annotations

import re
import statistics
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Row",
    "Sample",
    "WrkResult",
    "gateway_environ",
    "goal_lines",
    "median",
    "nginx_config",
    "oauth2_proxy_args",
    "parse_wrk",
    "profile_shares",
    "ratio",
    "render_profile",
    "render_table",
    "summarise",
]

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run reports: completed requests, throughput, latency, failures."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    #: Non-2xx/3xx answers plus socket errors (connect, read, write, timeout).
    errors: int


def _latency(output: str, percentile: str) -> float:
    found = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if found is None:
        raise ValueError(f"no {percentile}% latency in wrk output (was --latency given?)")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse ``wrk --latency`` output; raises ValueError naming what is missing."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    done = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    if rps is None or done is None:
        raise ValueError(f"not wrk output (no Requests/sec or request count):\n{output[:500]}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return WrkResult(
        requests=int(done.group(1)),
        rps=float(rps.group(1)),
        p50_ms=_latency(output, "50"),
        p99_ms=_latency(output, "99"),
        errors=errors,
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """One contender's run at one load: wrk's figures plus its processes' CPU and memory."""

    wrk: WrkResult
    #: CPU seconds (user + system, every process of the contender) per 1,000 requests.
    cpu_per_1k: float | None
    #: The highest resident set (MiB, summed over the contender's processes) during the run.
    peak_rss_mib: float | None


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that were measured; None when none was."""
    present = [float(v) for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None when either is missing or the base is zero."""
    if value is None or base is None or base == 0:
        return None
    return value / base


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a result table: medians over rounds, and the ratios."""

    contender: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_per_1k: float | None
    peak_rss_mib: float | None
    errors: int
    rounds: int
    #: req/s against the reference peer (oauth2-proxy with the same credentials).
    rps_vs_peer: float | None
    #: requests per CPU second against the reference peer's.
    per_cpu_vs_peer: float | None
    p99_vs_peer: float | None
    rps_vs_direct: float | None


def summarise(
    samples: Mapping[tuple[str, int], Sequence[Sample]],
    *,
    order: Sequence[str],
    connections: Sequence[int],
    peers: Mapping[str, str],
    direct: str,
) -> list[Row]:
    """Rows for every contender (in ``order``) at every load, medians over the rounds.

    ``peers`` maps a contender to the one it is compared with (oauth2-proxy with the same kind
    of credentials); ``direct`` names the upstream measured without a proxy.
    """
    rows: list[Row] = []
    for conns in connections:
        med: dict[str, dict[str, float | None]] = {}
        for name in order:
            runs = samples.get((name, conns), ())
            if not runs:
                continue
            med[name] = {
                "rps": median(s.wrk.rps for s in runs),
                "p50": median(s.wrk.p50_ms for s in runs),
                "p99": median(s.wrk.p99_ms for s in runs),
                "cpu": median(s.cpu_per_1k for s in runs),
                "rss": median(s.peak_rss_mib for s in runs),
            }
        for name in order:
            if name not in med:
                continue
            mine = med[name]
            peer = med.get(peers.get(name, ""), {})
            base = med.get(direct, {})
            runs = samples[(name, conns)]
            rows.append(
                Row(
                    contender=name,
                    connections=conns,
                    rps=mine["rps"] or 0.0,
                    p50_ms=mine["p50"] or 0.0,
                    p99_ms=mine["p99"] or 0.0,
                    cpu_per_1k=mine["cpu"],
                    peak_rss_mib=mine["rss"],
                    errors=sum(s.wrk.errors for s in runs),
                    rounds=len(runs),
                    rps_vs_peer=ratio(mine["rps"], peer.get("rps")) if peer else None,
                    # requests per CPU second is 1000 / cpu_per_1k: the ratio inverts
                    per_cpu_vs_peer=ratio(peer.get("cpu"), mine["cpu"]) if peer else None,
                    p99_vs_peer=ratio(mine["p99"], peer.get("p99")) if peer else None,
                    rps_vs_direct=(
                        ratio(mine["rps"], base.get("rps")) if base and name != direct else None
                    ),
                )
            )
    return rows


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


TABLE_HEADER = (
    "| contender | conns | req/s | p50 ms | p99 ms | CPU s/1k req | peak RSS MiB | errors "
    "| req/s vs o2p | req/CPU-s vs o2p | p99 vs o2p | req/s vs direct |"
)


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table of ``rows`` (the ratios are blank where no reference was measured)."""
    lines = [TABLE_HEADER, "|" + "---|" * TABLE_HEADER.count(" | ") + "---|"]
    for row in rows:
        lines.append(
            f"| {row.contender} | {row.connections} | {_num(row.rps, 0)} | {_num(row.p50_ms, 2)} "
            f"| {_num(row.p99_ms, 2)} | {_num(row.cpu_per_1k, 3)} | {_num(row.peak_rss_mib, 1)} "
            f"| {row.errors} | {_num(row.rps_vs_peer, 2)} | {_num(row.per_cpu_vs_peer, 2)} "
            f"| {_num(row.p99_vs_peer, 2)} | {_num(row.rps_vs_direct, 3)} |"
        )
    return "\n".join(lines)


#: Issue #10's goals: requests per CPU second at least half of oauth2-proxy's, and p99 within
#: twice oauth2-proxy's at 32 connections.
GOAL_PER_CPU = 0.5
GOAL_P99 = 2.0
GOAL_CONNECTIONS = 32


def goal_lines(rows: Sequence[Row]) -> list[str]:
    """One line per contender compared with oauth2-proxy at 32 connections: goals met or not."""
    lines = []
    for row in rows:
        if row.connections != GOAL_CONNECTIONS or row.per_cpu_vs_peer is None:
            continue
        per_cpu = "met" if row.per_cpu_vs_peer >= GOAL_PER_CPU else "NOT met"
        p99 = (
            "-"
            if row.p99_vs_peer is None
            else ("met" if row.p99_vs_peer <= GOAL_P99 else "NOT met")
        )
        lines.append(
            f"- {row.contender} at {GOAL_CONNECTIONS} connections: requests per CPU second "
            f"{row.per_cpu_vs_peer:.2f}x oauth2-proxy's (goal >= {GOAL_PER_CPU:.2f}: {per_cpu}); "
            f"p99 {_num(row.p99_vs_peer, 2)}x (goal <= {GOAL_P99:.1f}: {p99})"
        )
    return lines


# --- configuration of the contenders ---------------------------------------------------------


def nginx_config(*, workdir: Path, port: int, body: str) -> str:
    """nginx (one worker, no daemon, no access log) answering every path with ``body``."""
    escaped = body.replace("\\", "\\\\").replace("'", "\\'")
    return textwrap.dedent(
        f"""\
        worker_processes 1;
        daemon off;
        pid {workdir}/nginx.pid;
        error_log {workdir}/nginx-error.log warn;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            client_body_temp_path {workdir}/body;
            proxy_temp_path {workdir}/proxy;
            fastcgi_temp_path {workdir}/fastcgi;
            uwsgi_temp_path {workdir}/uwsgi;
            scgi_temp_path {workdir}/scgi;
            keepalive_requests 1000000;
            keepalive_timeout 75s;
            server {{
                listen 127.0.0.1:{port};
                location / {{
                    default_type application/json;
                    return 200 '{escaped}';
                }}
            }}
        }}
        """
    )


def oauth2_proxy_args(
    *,
    binary: Path,
    port: int,
    issuer: str,
    client_id: str,
    client_secret: str,
    audience: str,
    upstream: str,
    cookie_secret: str,
) -> list[str]:
    """oauth2-proxy accepting the dev identity provider's bearer JWTs and its login flow.

    Bearer tokens: ``--skip-jwt-bearer-tokens`` with ``--extra-jwt-issuers ISSUER=AUDIENCE``
    (the provider's own verifier only accepts tokens whose audience is the client id; the
    access tokens are for ``audience``). Login: OIDC discovery at ``issuer``, PKCE S256 and a
    nonce (the dev provider requires both; oauth2-proxy skips the nonce by default), the
    subject as the user (the provider issues no email). Plain HTTP on loopback, so the cookie
    is not ``Secure``. No request log (the gateway runs without an access log too).
    """
    return [
        str(binary),
        f"--http-address=127.0.0.1:{port}",
        "--provider=oidc",
        f"--oidc-issuer-url={issuer}",
        f"--client-id={client_id}",
        f"--client-secret={client_secret}",
        f"--redirect-url=http://127.0.0.1:{port}/oauth2/callback",
        f"--upstream={upstream}/",
        "--email-domain=*",
        "--oidc-email-claim=sub",
        "--skip-jwt-bearer-tokens=true",
        f"--extra-jwt-issuers={issuer}={audience}",
        "--code-challenge-method=S256",
        "--insecure-oidc-skip-nonce=false",
        "--skip-provider-button=true",
        f"--cookie-secret={cookie_secret}",
        "--cookie-secure=false",
        "--request-logging=false",
        "--silence-ping-logging=true",
    ]


def gateway_environ(
    *,
    port: int,
    upstream: str,
    issuer: str,
    client_id: str,
    client_secret: str,
    audience: str,
    session_key: str,
    assertion_key: Path,
    state: Path,
    opensearch: str | None,
    workers: int,
) -> dict[str, str]:
    """The gateway's settings as ``GATEWAY_*`` variables for ``python -m gateway serve``.

    The full pipeline as deployed, on plain HTTP on loopback (TLS is not what is compared;
    oauth2-proxy runs without it too): host allow-list, canonical path, session cookie or bearer
    JWT from the dev identity provider, the shipped Casbin policy, an audit event per
    personal-data request to OpenSearch (SQLite when ``opensearch`` is None), the signed
    assertion, the forwarder. No metrics or redirect listener.
    """
    environ = {
        "GATEWAY_SERVER__HOST": "127.0.0.1",
        "GATEWAY_SERVER__HTTPS_PORT": str(port),
        "GATEWAY_SERVER__HTTP_PORT": "0",
        "GATEWAY_SERVER__METRICS_PORT": "0",
        "GATEWAY_SERVER__ALLOW_PLAIN_HTTP": "true",
        "GATEWAY_SERVER__PUBLIC_HOSTS": "127.0.0.1",
        "GATEWAY_UPSTREAM__URL": upstream,
        "GATEWAY_UPSTREAM__POOL_SIZE": "256",
        "GATEWAY_ASSERTION__KEY_FILES": str(assertion_key),
        "GATEWAY_POLICY__WATCH": "false",
        "GATEWAY_AUDIT__SPOOL_DIR": str(state / "spool"),
        "GATEWAY_AUDIT__SQLITE_PATH": str(state / "audit.db"),
        "GATEWAY_OIDC__ISSUERS__DEVIDP__DISCOVERY_URL": (
            f"{issuer}/.well-known/openid-configuration"
        ),
        "GATEWAY_OIDC__ISSUERS__DEVIDP__CLIENT_ID": client_id,
        "GATEWAY_OIDC__ISSUERS__DEVIDP__CLIENT_SECRET": client_secret,
        "GATEWAY_OIDC__ISSUERS__DEVIDP__CLAIMS": "devidp",
        "GATEWAY_OIDC__ISSUERS__DEVIDP__AUDIENCES": audience,
        "GATEWAY_SESSION__KEYS": session_key,
        "GATEWAY_SESSION__REVOCATION_STORE": "sqlite",
        "GATEWAY_SESSION__REVOCATION_FILE": str(state / "revocations.sqlite"),
    }
    if workers != 1:
        environ["GATEWAY_SERVER__WORKERS"] = str(workers)
    if opensearch:
        environ["GATEWAY_AUDIT__STORE"] = "opensearch"
        environ["GATEWAY_AUDIT__OPENSEARCH_URLS"] = opensearch
        environ["GATEWAY_AUDIT__INDEX_PREFIX"] = "bench-peers-"
        environ["GATEWAY_AUDIT__REPLICAS"] = "0"
    return environ


# --- the profile -----------------------------------------------------------------------------

#: Leaf functions of a thread that waits (lock, condition, a blocking socket read, a sleep, a
#: blocking read of a pipe in C below the function: the audit worker's ``for line in stdin``
#: and the parent's report reader): py-spy's idle detection misses them; left out.
WAITING_LEAVES = (
    "Condition.wait",
    "Event.wait",
    "Thread.join",
    "SocketIO.readinto",
    "sleep (",
    "main (audit/_worker.py",
    "AuditWorker._read_reports (",
)

#: Where a sample goes: its process or thread first (``WHOLE_STACK``: the stack holds the first
#: marker and any of the others), else the innermost frame with a marker of ``INNERMOST``
#: (stages nest, so an outer stage's frame is in every later stage's stack). The first rule
#: that matches wins; a sample no rule claims is the event loop's.
_WORKER = "audit._worker import main"
WHOLE_STACK: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("audit worker process: shipping to OpenSearch", _WORKER, ("opensearchpy/", "urllib3/")),
    ("audit worker process: reading, chain, spool", _WORKER, ("",)),
    ("audit flusher, reports and supervisor threads", "AuditWorker._", ("",)),
    ("shared-state look-ups in the thread pool", "concurrent/futures", ("State._",)),
    ("other threads", "Thread._bootstrap", ("",)),
)
INNERMOST: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("forward: aiohttp client", ("aiohttp/", "gateway/_upstream.py", "yarl/", "multidict/")),
    ("uvicorn: writing the response", ("RequestResponseCycle.send (",)),
    ("audit event on the request path", ("audit/", "gateway/_audit.py", "structlog/")),
    ("authentication (bearer JWT, throttle)", ("gateway/oidc/", "gateway/authn.py")),
    ("authorization (Casbin, resources)", ("gateway/authz.py", "policies/", "casbin/")),
    ("mutate: identity headers, assertion", ("gateway/headers.py", "gateway/assertion.py")),
    ("forward: the gateway's own code", ("gateway/proxy.py",)),
    ("metrics", ("gateway/metrics.py", "prometheus_client/")),
    (
        "other stages (errors, https, host, path)",
        tuple(
            f"gateway/{name}.py"
            for name in ("app", "https", "hosts", "paths", "pages", "types", "errors")
        ),
    ),
    ("uvicorn/httptools outside the app", ("uvicorn/", "httptools", "_GatewayProtocol.")),
)
EVENT_LOOP = "event loop (uvloop) and the rest"


def _bucket(frames: Sequence[str]) -> str:
    stack = ";".join(frames)
    for label, first, others in WHOLE_STACK:
        if first in stack and any(marker in stack for marker in others):
            return label
    for frame in reversed(frames):
        for label, markers in INNERMOST:
            if any(marker in frame for marker in markers):
                return label
    return EVENT_LOOP


def profile_shares(raw: str) -> list[tuple[str, float]]:
    """py-spy's raw (collapsed) stacks as the share of busy samples per part, largest first.

    The last entry is the share of all samples left out as waiting (``WAITING_LEAVES``).
    """
    counts: dict[str, int] = {}
    waiting = total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        if frames[-1].startswith(WAITING_LEAVES):
            waiting += n
            continue
        label = _bucket(frames)
        counts[label] = counts.get(label, 0) + n
    busy = total - waiting
    shares = sorted(((k, v / busy) for k, v in counts.items()), key=lambda kv: -kv[1])
    return [*shares, ("(left out: waiting, share of all samples)", waiting / total if total else 0)]


def render_profile(shares: Sequence[tuple[str, float]]) -> str:
    """A Markdown table of :func:`profile_shares`."""
    lines = ["| share of busy samples | where |", "|---|---|"]
    lines += [f"| {share:.1%} | {label} |" for label, share in shares]
    return "\n".join(lines)
