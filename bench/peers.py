"""The gateway side by side with oauth2-proxy and the bare upstream, in one run.

    .venv/bin/python -m bench.peers [--duration 3] [--rounds 3] [--connections 1 32 128]
                                    [--opensearch URL] [--upstreams nginx demo] [--markdown F]
                                    [--workers 1 2] [--cookies [nginx demo]]
                                    [--profile FILE [--py-spy PATH]]

Contenders, all against the same upstream, all with the same person (a teacher of school A
reading ``GET /api/schools/school-a/students``, a personal-data route the shipped policy
allows, so the gateway records an audit event for every request):

    direct              wrk -> upstream                        (the baseline)
    oauth2-proxy        wrk -> oauth2-proxy v7.15.6 -> upstream, bearer JWT from the dev IdP
    gateway 1w          wrk -> python -m gateway serve (1 worker) -> upstream, same bearer JWT:
                        JWT validation, Casbin decision, audit event to OpenSearch, signed
                        assertion, forward
    gateway 2w          the same with ``server.workers = 2`` (SO_REUSEPORT processes)
    oauth2-proxy cookie the same oauth2-proxy with its own session cookie, from its login flow
                        against the dev IdP (PKCE, nonce), instead of the bearer token
    gateway 1w cookie   the gateway with its session cookie, from its login flow

Upstreams: nginx from Debian answering a small JSON body (the fast row), and the demo
platform (``demo_upstream`` on uvicorn, one process) as the heavier row.

Both proxies get their tokens and cookies the way a client would: the bearer token from the
dev identity provider's code flow (a fresh one before every wrk run: tokens live 10 minutes),
the cookies from each proxy's own login flow against that provider, driven over HTTP like a
browser that picks the person on the provider's form. Runs alternate between contenders in
rounds (the order rotates each round); the tables show medians over the rounds.

Figures per contender and load: req/s, p50/p99 latency (wrk --latency), CPU seconds per 1,000
requests (user + system time of every process of the contender, from /proc; the upstream, wrk
and OpenSearch are not counted), the peak resident memory during the run (VmHWM summed over
the contender's processes, reset before each run through /proc/PID/clear_refs), errors
(non-2xx answers and socket errors: a proxy that answers 401 quickly is not fast). Ratios:
req/s, requests per CPU second and p99 against oauth2-proxy with the same kind of credentials,
and req/s against the direct upstream. Each run is bounded (``--duration``).

``--profile FILE``: after the rounds, one more run of the first table's ``gateway 1w`` (bearer,
the largest ``--connections``) under ``py-spy record --format raw --subprocesses`` (the request
process and its audit worker; py-spy is not a project dependency: ``pip install py-spy`` beside
it, or give ``--py-spy``). FILE gets py-spy's collapsed stacks; the share of the samples per
part of the pipeline (``bench._peers_lib.profile_shares``) is printed after the tables.

Tools: wrk and nginx from Debian (installed with apt-get when missing and run as root),
oauth2-proxy built once with ``go install`` (``tools/oauth2_proxy.py``), OpenSearch from
``tools/opensearch_node.py`` (the node at OPENSEARCH_URL, or one started for the run).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from bench._peers_lib import (
    Row,
    Sample,
    gateway_environ,
    goal_lines,
    nginx_config,
    oauth2_proxy_args,
    parse_wrk,
    profile_shares,
    render_profile,
    render_table,
    summarise,
)
from gateway._wiring import _demo_assertion_key
from gateway.oidc import new_key

REPO = Path(__file__).resolve().parents[1]
PATH = "/api/schools/school-a/students"
PERSON = "demo-teacher-school-a"
CLIENT_ID = "bench"
AUDIENCE = "platform-api"  # the dev identity provider's access-token audience
OAUTH2_PROXY_VERSION = "v7.15.6"
JSON_BODY = (
    '{"data":[{"id":"stu-1","name":"Sanne","school":"school-a","year":3},'
    '{"id":"stu-2","name":"Daan","school":"school-a","year":4}]}'
)
START_TIMEOUT = 60.0
APT_PACKAGES = {"wrk": "wrk", "nginx": "nginx-light"}
LOG_TAIL = 25


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def started(
    name: str, argv: Sequence[str], port: int, logs: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``, wait until ``port`` accepts, stop it (SIGTERM, then SIGKILL) on exit."""
    log = logs / f"{name.replace(' ', '-')}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}:\n{_tail(log)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{name} did not listen within {START_TIMEOUT:.0f} s:\n{_tail(log)}"
                )
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of ``pids`` so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pids: Sequence[int]) -> bool:
    """Reset each process's VmHWM to its current RSS (Linux ``clear_refs`` 5)."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def peak_rss_mib(pids: Sequence[int]) -> float:
    total_kib = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


# --- credentials: the dev identity provider's code flow, driven like a browser ---------------


class Browser:
    """A cookie jar that keeps every cookie it is given (Secure ones too, on plain HTTP)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.client = httpx.Client(follow_redirects=False, timeout=10.0)

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self._keep(self.client.get(url, headers=self._header(), **kwargs))  # type: ignore[arg-type]

    def post(self, url: str, data: dict[str, str]) -> httpx.Response:
        return self._keep(self.client.post(url, data=data, headers=self._header()))

    def _header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for raw in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return response

    def close(self) -> None:
        self.client.close()


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class DevIdp:
    """The dev identity provider: one client (``bench``) for both proxies."""

    issuer: str
    client_secret: str
    token_redirect: str  # a registered redirect URI used only to mint bearer tokens

    def choose_person(self, browser: Browser, authorize_url: str) -> str:
        """Pick :data:`PERSON` on the provider's form; returns where it sends the browser."""
        parts = urlsplit(authorize_url)
        form = f"{self.issuer}{parts.path}?{parts.query}"
        chosen = browser.post(form, {"person": PERSON})
        if chosen.status_code != 302:
            raise SystemExit(f"dev IdP refused the login ({chosen.status_code}): {chosen.text}")
        return chosen.headers["location"]

    def access_token(self) -> str:
        """A bearer JWT for :data:`PERSON` (audience platform-api), by the code flow."""
        verifier, challenge = _pkce()
        query = httpx.QueryParams(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "scope": "openid",
                "redirect_uri": self.token_redirect,
                "state": secrets.token_urlsafe(8),
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        browser = Browser()
        try:
            back = self.choose_person(browser, f"{self.issuer}/authorize?{query}")
            code = parse_qs(urlsplit(back).query)["code"][0]
            tokens = browser.client.post(
                f"{self.issuer}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.token_redirect,
                    "code_verifier": verifier,
                },
                auth=(CLIENT_ID, self.client_secret),
            )
            tokens.raise_for_status()
            return str(tokens.json()["access_token"])
        finally:
            browser.close()

    def login(self, proxy: str, start: str, cookie_prefix: str) -> str:
        """Log in through ``proxy`` (its login path ``start``); the Cookie header it set."""
        browser = Browser()
        try:
            url = urljoin(proxy, start)
            for _hop in range(6):  # the proxy's redirects up to the provider's form
                response = browser.get(url)
                if response.status_code not in (301, 302, 303, 307, 308):
                    raise SystemExit(f"login at {proxy} stopped at {url} ({response.status_code})")
                url = urljoin(url, response.headers["location"])
                if url.startswith(self.issuer):
                    break
            back = self.choose_person(browser, url)
            done = browser.get(back)
            if done.status_code not in (302, 303):
                raise SystemExit(f"login callback at {proxy} answered {done.status_code}")
            session = {k: v for k, v in browser.cookies.items() if k.startswith(cookie_prefix)}
            if not session:
                raise SystemExit(f"login at {proxy} set no {cookie_prefix}* cookie")
            return "; ".join(f"{k}={v}" for k, v in session.items())
        finally:
            browser.close()


# --- contenders ------------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    url: str
    root: int  # the pid whose process tree is the contender
    auth: str  # "none", "bearer" or "cookie"
    login: tuple[str, str] = ("", "")  # cookie contenders: login path, session cookie prefix

    def headers(self, idp: DevIdp, token: str) -> list[str]:
        if self.auth == "bearer":
            return [f"Authorization: Bearer {token}"]
        if self.auth == "cookie":
            return [f"Cookie: {idp.login(self.url, *self.login)}"]
        return []


@dataclass
class Table:
    upstream: str
    contenders: list[Contender] = field(default_factory=list)
    samples: dict[tuple[str, int], list[Sample]] = field(default_factory=dict)


def run_wrk(url: str, connections: int, duration: float, headers: Sequence[str]) -> str:
    threads = 1 if connections < 2 else 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        *(arg for header in headers for arg in ("-H", header)),
        url + PATH,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 30, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def measure(c: Contender, idp: DevIdp, token: str, conns: int, duration: float) -> Sample:
    headers = c.headers(idp, token)
    pids = tree(c.root)
    peak_ok = reset_peak_rss(pids)
    before = cpu_seconds(pids)
    result = parse_wrk(run_wrk(c.url, conns, duration, headers))
    pids = tree(c.root)
    used = cpu_seconds(pids) - before
    return Sample(
        wrk=result,
        cpu_per_1k=used / result.requests * 1000 if result.requests else None,
        peak_rss_mib=peak_rss_mib(pids) if peak_ok else None,
    )


def check(c: Contender, idp: DevIdp, token: str) -> None:
    """One request by hand: the contender must answer 200 before it is measured."""
    header = c.headers(idp, token)
    headers = dict(h.split(": ", 1) for h in header)
    response = httpx.get(c.url + PATH, headers=headers, timeout=10.0)
    if response.status_code != 200:
        raise SystemExit(
            f"{c.name} answered {response.status_code} to the benchmark request: "
            f"{response.text[:300]}"
        )


PROFILE_RATE = 200  # samples per second
PROFILE_ATTACH = 1.0  # seconds py-spy gets to attach before the load starts


def profile(
    c: Contender, idp: DevIdp, *, conns: int, duration: float, out: Path, py_spy: str
) -> None:
    """One wrk run against ``c`` while py-spy samples its process tree into ``out`` (raw)."""
    headers = c.headers(idp, idp.access_token())
    command = [py_spy, "record", "--pid", str(c.root), "--subprocesses", "--format", "raw"]
    command += ["--rate", str(PROFILE_RATE), "--nonblocking", "--output", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(PROFILE_ATTACH)
        if spy.poll() is not None:
            raise SystemExit(
                f"py-spy exited at once: {spy.stderr.read().decode() if spy.stderr else ''}"
            )
        print(parse_wrk(run_wrk(c.url, conns, duration, headers)), file=sys.stderr)
    finally:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    if not out.exists():
        raise SystemExit(f"py-spy wrote no profile to {out}")


# --- tools -----------------------------------------------------------------------------------


def ensure_debian_tools() -> None:
    missing = [tool for tool in APT_PACKAGES if shutil.which(tool) is None]
    if not missing:
        return
    packages = [APT_PACKAGES[tool] for tool in missing]
    hint = f"apt-get update && apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"missing: {', '.join(missing)}; install them with: {hint}")
    print(f"installing {' '.join(packages)} with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise SystemExit(f"could not install {', '.join(packages)}; try: {hint}")


def oauth2_proxy_binary() -> Path:
    from tools.oauth2_proxy import FetchError, ensure  # noqa: PLC0415 - only for this bench

    try:
        return ensure(OAUTH2_PROXY_VERSION)
    except FetchError as exc:
        raise SystemExit(f"oauth2-proxy unavailable: {exc}") from exc


def versions(binary: Path) -> list[str]:
    """What each tool says its version is (first line, copyright notices cut)."""

    def first_line(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return f"{command[0]}: ?"
        text = (done.stdout or done.stderr).strip().splitlines()
        return text[0].split(" Copyright")[0] if text else f"{command[0]}: ?"

    return [
        first_line([str(binary), "--version"]),
        first_line(["nginx", "-v"]),
        first_line(["wrk", "--version"]),
    ]


# --- the run ---------------------------------------------------------------------------------


PEERS = {
    "gateway 1w": "oauth2-proxy",
    "gateway 2w": "oauth2-proxy",
    "gateway 1w cookie": "oauth2-proxy cookie",
}


class Setup:
    """Starts the processes of one run (all stopped when ``stack`` closes)."""

    def __init__(self, args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.tmp = tmp
        self.stack = stack
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.binary = oauth2_proxy_binary()
        self.session_key = new_key()
        self.assertion_key = _demo_assertion_key(tmp / "keys")
        # every proxy's callback must be registered at the provider before it starts
        self.ports = {
            up: {"o2p": free_port(), "gw1": free_port(), "gw2": free_port()}
            for up in args.upstreams
        }
        idp_port = free_port()
        issuer = f"http://127.0.0.1:{idp_port}"
        redirects = [f"{issuer}/bench-token"]
        for up in self.ports.values():
            redirects.append(f"http://127.0.0.1:{up['o2p']}/oauth2/callback")
            redirects += [f"http://127.0.0.1:{up[k]}/_gateway/callback" for k in ("gw1", "gw2")]
        self.idp = DevIdp(
            issuer=issuer, client_secret=secrets.token_urlsafe(24), token_redirect=redirects[0]
        )
        self._start(
            "devidp",
            [sys.executable, "-m", "devidp", "--mode", "test", "--port", str(idp_port)]
            + ["--client-id", CLIENT_ID, "--client-secret", self.idp.client_secret]
            + [arg for uri in redirects for arg in ("--redirect-uri", uri)],
            idp_port,
        )

    def _start(
        self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None
    ) -> int:
        return self.stack.enter_context(started(name, argv, port, self.logs, env)).pid

    def upstream(self, name: str) -> tuple[str, int]:
        port = free_port()
        if name == "nginx":
            workdir = self.tmp / "nginx"
            workdir.mkdir()
            conf = workdir / "nginx.conf"
            conf.write_text(nginx_config(workdir=workdir, port=port, body=JSON_BODY))
            pid = self._start("nginx", ["nginx", "-p", str(workdir), "-c", str(conf)], port)
        else:
            argv = [sys.executable, "-m", "uvicorn", "--factory", "demo_upstream:create_app"]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
            argv += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
            pid = self._start("demo-upstream", argv, port)
        return f"http://127.0.0.1:{port}", pid

    def oauth2_proxy(self, upstream_name: str, upstream: str) -> tuple[str, int]:
        port = self.ports[upstream_name]["o2p"]
        argv = oauth2_proxy_args(
            binary=self.binary,
            port=port,
            issuer=self.idp.issuer,
            client_id=CLIENT_ID,
            client_secret=self.idp.client_secret,
            audience=AUDIENCE,
            upstream=upstream,
            cookie_secret=secrets.token_hex(16),
        )
        return f"http://127.0.0.1:{port}", self._start(f"oauth2-proxy-{upstream_name}", argv, port)

    def gateway(self, upstream_name: str, upstream: str, workers: int) -> tuple[str, int]:
        port = self.ports[upstream_name][f"gw{workers}"]
        env = gateway_environ(
            port=port,
            upstream=upstream,
            issuer=self.idp.issuer,
            client_id=CLIENT_ID,
            client_secret=self.idp.client_secret,
            audience=AUDIENCE,
            session_key=self.session_key,
            assertion_key=self.assertion_key,
            state=self.tmp / f"gateway-{upstream_name}-{workers}",
            opensearch=self.args.opensearch or None,
            workers=workers,
        )
        name = f"gateway-{upstream_name}-{workers}w"
        pid = self._start(name, [sys.executable, "-m", "gateway", "serve"], port, env)
        return f"http://127.0.0.1:{port}", pid

    def table(self, upstream_name: str) -> Table:
        """Every contender in front of one upstream, in the order of the result table."""
        table = Table(upstream_name)
        cookies = upstream_name in self.args.cookies
        upstream, upstream_pid = self.upstream(upstream_name)
        table.contenders.append(Contender("direct", upstream, upstream_pid, "none"))
        o2p_url, o2p_pid = self.oauth2_proxy(upstream_name, upstream)
        table.contenders.append(Contender("oauth2-proxy", o2p_url, o2p_pid, "bearer"))
        if cookies:
            login = (f"/oauth2/start?rd={PATH}", "_oauth2_proxy")
            table.contenders.append(
                Contender("oauth2-proxy cookie", o2p_url, o2p_pid, "cookie", login)
            )
        for workers in self.args.workers:
            url, pid = self.gateway(upstream_name, upstream, workers)
            table.contenders.append(Contender(f"gateway {workers}w", url, pid, "bearer"))
            if workers == 1 and cookies:
                login = (f"/_gateway/login?next={PATH}", "__Host-gw_session")
                table.contenders.append(Contender("gateway 1w cookie", url, pid, "cookie", login))
        return table


def measure_rounds(args: argparse.Namespace, idp: DevIdp, tables: list[Table]) -> None:
    """Alternate the contenders of each table, round after round (rotating the order)."""
    for round_no in range(args.rounds):
        for table in tables:
            shift = round_no % len(table.contenders)
            order = table.contenders[shift:] + table.contenders[:shift]
            for conns in args.connections:
                for c in order:
                    sample = measure(c, idp, idp.access_token(), conns, args.duration)
                    table.samples.setdefault((c.name, conns), []).append(sample)
        print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> list[tuple[str, list[Row]]]:
    """Start everything, check and warm up every contender, measure; the rows per upstream."""
    ensure_debian_tools()
    with (
        tempfile.TemporaryDirectory(prefix="bench-peers-") as name,
        contextlib.ExitStack() as stack,
    ):
        setup = Setup(args, Path(name), stack)
        args.versions = versions(setup.binary)
        tables = [setup.table(upstream) for upstream in args.upstreams]
        token = setup.idp.access_token()
        for table in tables:
            for c in table.contenders:
                check(c, setup.idp, token)
                run_wrk(c.url, 8, 1, c.headers(setup.idp, token))  # warm up
        runs = sum(len(t.contenders) for t in tables) * len(args.connections) * args.rounds
        print(
            f"{runs} wrk runs of {args.duration:g} s (about {runs * args.duration / 60:.1f} min);"
            f" GET {PATH}; logs in {setup.logs}",
            file=sys.stderr,
            flush=True,
        )
        measure_rounds(args, setup.idp, tables)
        if args.profile:
            target = next(c for c in tables[0].contenders if c.name == "gateway 1w")
            conns = max(args.connections)
            profile(
                target,
                setup.idp,
                conns=conns,
                duration=args.duration,
                out=args.profile,
                py_spy=args.py_spy,
            )
            args.profiled = f"{target.name} at {conns} connections in front of {tables[0].upstream}"
    return [
        (
            table.upstream,
            summarise(
                table.samples,
                order=[c.name for c in table.contenders],
                connections=args.connections,
                peers=PEERS,
                direct="direct",
            ),
        )
        for table in tables
    ]


UPSTREAM_TITLES = {
    "nginx": "upstream: nginx (small JSON body)",
    "demo": "upstream: the demo platform (demo_upstream on uvicorn, 1 process)",
}


def report(args: argparse.Namespace, results: list[tuple[str, list[Row]]]) -> str:
    lines = [
        f"GET {PATH} as {PERSON}; {args.rounds} rounds x {args.duration:g} s per load; "
        f"medians over rounds.",
        "Versions: " + "; ".join(args.versions) + ".",
        "",
    ]
    for upstream, rows in results:
        lines += [f"### {UPSTREAM_TITLES.get(upstream, upstream)}", "", render_table(rows), ""]
        goals = goal_lines(rows)
        if goals:
            lines += ["Goals (issue #10):", "", *goals, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument(
        "--upstreams", nargs="+", choices=["nginx", "demo"], default=["nginx", "demo"]
    )
    parser.add_argument(
        "--cookies",
        nargs="*",
        choices=["nginx", "demo"],
        default=["nginx"],
        help="upstreams with cookie-session runs",
    )
    parser.add_argument("--workers", type=int, nargs="+", choices=[1, 2], default=[1, 2])
    parser.add_argument(
        "--opensearch",
        metavar="URL",
        default=os.environ.get("OPENSEARCH_URL"),
        help="the gateway's audit store (default: OPENSEARCH_URL; SQLite without either)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument(
        "--profile", type=Path, metavar="FILE", help="py-spy's raw stacks of gateway 1w to FILE"
    )
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy") or "py-spy",
        help="the py-spy executable (default: the one on PATH)",
    )
    args = parser.parse_args(argv)
    if args.profile and 1 not in args.workers:
        parser.error("--profile samples gateway 1w: keep 1 in --workers")
    if not 0 < args.duration <= 60 or not 1 <= args.rounds <= 20:
        parser.error("--duration must be in (0, 60] and --rounds in [1, 20]")
    results = run(args)
    text = report(args, results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.profile:
        print(f"\nProfile of {args.profiled} ({args.profile}), share of the busy samples:\n")
        shares = profile_shares(args.profile.read_text(errors="replace"))
        print(render_profile(shares))
    return 0


if __name__ == "__main__":
    sys.exit(main())
