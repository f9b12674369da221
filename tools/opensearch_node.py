"""Start a throw-away OpenSearch node for tests and CI, or reuse one that answers.

Usage::

    python tools/opensearch_node.py run -- COMMAND [ARGS...]   # node up, COMMAND, node down
    python tools/opensearch_node.py serve                      # node up until Ctrl-C
    python tools/opensearch_node.py fetch                      # only download and unpack

``run`` exports ``OPENSEARCH_URL`` to COMMAND and exits with COMMAND's exit code. When
``OPENSEARCH_URL`` is already set and a node answers there, that node is used and nothing is
started. Otherwise the integration-test distribution of OpenSearch
(``org.opensearch.distribution.integ-test-zip:opensearch``, zip, no bundled JDK, no security
plugin) is fetched from Maven Central with ``mvn dependency:copy`` into a cache outside the
repository (reused on later runs), unpacked, given the two modules of the full distribution
that retention needs and that distribution lacks (``lang-painless`` and ``reindex``: painless
scripts and ``_update_by_query``, their jars resolved from Maven Central with ``mvn
dependency:copy-dependencies``; see ``EXTRA_MODULES``), and started with the machine's Java:
single-node discovery, loopback only, free ports, a small heap, and a temporary directory for
config, data and logs that is removed afterwards. The node is stopped when COMMAND ends, fails
or is interrupted, and dies with this process even on SIGKILL (parent-death signal).

OpenSearch refuses to run as root; as root, the node runs as an unprivileged system user
(``opensearch-test``) that this script creates when missing.

Environment:
    OPENSEARCH_URL            reuse this node if it answers (nothing is started or stopped)
    OPENSEARCH_VERSION        distribution version (default: DEFAULT_VERSION below)
    OPENSEARCH_CACHE_DIR      where the zip and the unpacked distribution are kept
    OPENSEARCH_HEAP           JVM heap size (default 512m)
    OPENSEARCH_START_TIMEOUT  seconds to wait for cluster health (default 180)
    JAVA_HOME                 the Java to run the node with (default: the one on PATH)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VERSION = "2.19.6"
ARTIFACT = "org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"
NODE_USER = "opensearch-test"
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 60
PR_SET_PDEATHSIG = 1
WORKDIR_PREFIX = "opensearch-test-"
OWNER_FILE = "owner.pid"


#: Modules of the full distribution that the integration-test one lacks: name, the Maven
#: artifact whose jar (and runtime dependencies not already in ``lib/``) make the module, the
#: plugin class, and the security policy the full distribution ships with the module.
EXTRA_MODULES: dict[str, tuple[str, str, str]] = {
    "lang-painless": (
        "org.opensearch.plugin:lang-painless",
        "org.opensearch.painless.PainlessPlugin",
        'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n'
        '  permission java.lang.RuntimePermission "getClassLoader";\n};\n',
    ),
    "reindex": (
        "org.opensearch.plugin:reindex-client",
        "org.opensearch.index.reindex.ReindexPlugin",
        'grant {\n  permission java.net.SocketPermission "*", "connect";\n};\n',
    ),
}
MODULES_MARKER = ".modules"
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>module-jars</artifactId><version>1</version>
  <dependencies><dependency>
    <groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version>
  </dependency></dependencies>
</project>
"""


class NodeError(RuntimeError):
    """The node could not be fetched, started or reached; the message says why."""


@dataclass(frozen=True)
class Node:
    url: str
    version: str
    started_here: bool


def log(message: str) -> None:
    print(f"[opensearch] {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    override = os.environ.get("OPENSEARCH_CACHE_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        # /root is not readable by the unprivileged node user; keep the distribution where it is.
        return Path("/var/cache/onderwijs-gateway")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onderwijs-gateway"


def _get_json(url: str, timeout: float) -> dict[str, object]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked
        body = json.load(response)
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


def probe(url: str, timeout: float = 2.0) -> str | None:
    """Return the version of the OpenSearch node answering at ``url``, or None."""
    try:
        info = _get_json(url.rstrip("/") + "/", timeout)
    except (OSError, ValueError):
        return None
    version = info.get("version")
    if not isinstance(version, dict) or version.get("distribution") != "opensearch":
        return None
    return str(version.get("number"))


def fetch(version: str, cache_dir: Path) -> Path:
    """Return the unpacked distribution for ``version``, downloading it only once."""
    home = cache_dir / f"opensearch-{version}"
    marker = home / ".unpacked"
    if marker.exists():
        log(f"using cached distribution {home}")
        return home
    cache_dir.mkdir(parents=True, exist_ok=True)
    zip_path = cache_dir / f"opensearch-{version}.zip"
    if not zip_path.exists():
        if shutil.which("mvn") is None:
            raise NodeError("Maven (mvn) is needed to fetch OpenSearch and is not on PATH")
        artifact = ARTIFACT.format(version=version)
        log(f"fetching {artifact} from Maven Central")
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={cache_dir}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not zip_path.exists():
            tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
            raise NodeError(f"could not fetch {artifact}:\n" + "\n".join(tail))
    log(f"unpacking {zip_path.name}")
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache_dir))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(staging)
        unpacked = staging / f"opensearch-{version}"
        for script in (unpacked / "bin").iterdir():
            script.chmod(0o755)
        if home.exists():
            shutil.rmtree(home)
        unpacked.rename(home)
        marker.touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # Readable (not writable) by the node user; config is copied per run.
    for path in [cache_dir, *cache_dir.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    return home


def with_modules(home: Path, version: str, cache_dir: Path) -> Path:
    """The distribution at ``home`` plus ``EXTRA_MODULES``, built once beside it in the cache
    (``opensearch-VERSION-modules``; the plain unpacked one stays as it was)."""
    target = cache_dir / f"opensearch-{version}-modules"
    if (target / MODULES_MARKER).exists():
        return target
    if shutil.which("mvn") is None:
        raise NodeError("Maven (mvn) is needed to fetch OpenSearch modules and is not on PATH")
    log(f"adding the modules {', '.join(EXTRA_MODULES)} from Maven Central")
    staging = Path(tempfile.mkdtemp(prefix="modules-", dir=cache_dir))
    try:
        copy = staging / "home"
        shutil.copytree(home, copy, symlinks=True)
        shipped = {jar.name for jar in (copy / "lib").glob("*.jar")}
        for name, (artifact, classname, policy) in EXTRA_MODULES.items():
            module = copy / "modules" / name
            module.mkdir()
            for jar in _resolve(f"{artifact}:{version}", staging / f"jars-{name}"):
                if jar.name not in shipped:
                    shutil.copy2(jar, module / jar.name)
            (module / "plugin-descriptor.properties").write_text(
                f"description={name} (added by tools/opensearch_node.py)\nversion={version}\n"
                f"name={name}\nclassname={classname}\njava.version=11\n"
                f"opensearch.version={version}\nextended.plugins=\nhas.native.controller=false\n"
            )
            (module / "plugin-security.policy").write_text(policy)
        (copy / MODULES_MARKER).touch()
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        try:
            copy.rename(target)
        except OSError:  # another run built it meanwhile
            if not (target / MODULES_MARKER).exists():
                shutil.rmtree(target, ignore_errors=True)
                copy.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _resolve(coordinates: str, out: Path) -> list[Path]:
    """The jar of ``group:artifact:version`` and its runtime dependencies, from Maven."""
    group, artifact, version = coordinates.split(":")
    out.mkdir(parents=True)
    (out / "pom.xml").write_text(_POM.format(group=group, artifact=artifact, version=version))
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(out / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={out / 'jars'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    jars = sorted((out / "jars").glob("*.jar"))
    if result.returncode != 0 or not jars:
        tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise NodeError(f"could not fetch {coordinates}:\n" + "\n".join(tail))
    return jars


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def java_home() -> str:
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        raise NodeError("no Java found: install Java 17 or set JAVA_HOME")
    return str(Path(java).resolve().parent.parent)


def node_account() -> pwd.struct_passwd | None:
    """The account to run the node as: None when not root, else the unprivileged user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(NODE_USER)
    except KeyError:
        log(f"creating system user {NODE_USER} (OpenSearch refuses to run as root)")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NODE_USER],
            check=True,
        )
        return pwd.getpwnam(NODE_USER)


def _child_setup(account: pwd.struct_passwd | None) -> None:
    """Runs in the child between fork and exec: drop privileges, then die with the parent."""
    os.setsid()
    if account is not None:
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    # After setuid: a change of credentials clears the parent-death signal.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _remove_stale_workdirs() -> None:
    """Delete work directories left by runs that were killed (their owner process is gone)."""
    for workdir in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            owner = int((workdir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(workdir, ignore_errors=True)
        except PermissionError:
            continue


def _localise_jvm_options(path: Path, workdir: Path) -> None:
    """Point the GC log, heap dumps and error files into ``workdir``.

    The launcher changes to the distribution's directory, which the node user cannot write.
    """
    text = path.read_text()
    text = text.replace("file=logs/", f"file={workdir}/logs/")
    text = text.replace("-XX:ErrorFile=logs/", f"-XX:ErrorFile={workdir}/logs/")
    text = text.replace("-XX:HeapDumpPath=data", f"-XX:HeapDumpPath={workdir}/data")
    path.write_text(text)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@contextlib.contextmanager
def started_node(version: str, cache_dir: Path, heap: str, timeout: float) -> Iterator[Node]:
    home = with_modules(fetch(version, cache_dir), version, cache_dir)
    account = node_account()
    _remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    (workdir / OWNER_FILE).write_text(str(os.getpid()))
    conf = workdir / "config"
    shutil.copytree(home / "config", conf)
    _localise_jvm_options(conf / "jvm.options", workdir)
    for name in ("data", "logs", "tmp"):
        (workdir / name).mkdir()
    if account is not None:
        for path in [workdir, *workdir.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
    http_port, transport_port = free_port(), free_port()
    settings = {
        "cluster.name": "gateway-test",
        "node.name": "gateway-test-node",
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "path.data": str(workdir / "data"),
        "path.logs": str(workdir / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.destructive_requires_name": "false",
    }
    args = [str(home / "bin" / "opensearch")]
    for key, value in settings.items():
        args += ["-E", f"{key}={value}"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "JAVA_HOME": java_home(),
        "OPENSEARCH_PATH_CONF": str(conf),
        "OPENSEARCH_TMPDIR": str(workdir / "tmp"),
        "OPENSEARCH_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}",
        "LANG": "C.UTF-8",
    }
    console = workdir / "console.log"
    url = f"http://127.0.0.1:{http_port}"
    log(f"starting OpenSearch {version} at {url} (workdir {workdir})")
    began = time.monotonic()
    with console.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _child_setup(account),  # noqa: PLW1509 - privileges, death signal
        )
    try:
        _wait_healthy(url, process, timeout, workdir)
        running = probe(url) or version
        log(f"OpenSearch {running} is up at {url} after {time.monotonic() - began:.1f} s")
        yield Node(url=url, version=running, started_here=True)
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_healthy(
    url: str, process: subprocess.Popen[bytes], timeout: float, workdir: Path
) -> None:
    deadline = time.monotonic() + timeout
    health = url + "/_cluster/health?wait_for_status=yellow&timeout=5s"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NodeError(
                f"OpenSearch exited with code {process.returncode} before it was healthy.\n"
                f"--- console ---\n{_tail(workdir / 'console.log')}\n"
                f"--- log ---\n{_tail(workdir / 'logs' / 'gateway-test.log')}"
            )
        try:
            if _get_json(health, timeout=10).get("status") in ("green", "yellow"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise NodeError(
        f"OpenSearch did not become healthy within {timeout:.0f} s.\n"
        f"--- console ---\n{_tail(workdir / 'console.log')}\n"
        f"--- log ---\n{_tail(workdir / 'logs' / 'gateway-test.log')}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log("OpenSearch did not stop in time; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def available_node() -> Iterator[Node]:
    """A node to test against: the one at OPENSEARCH_URL if it answers, else a new one."""
    given = os.environ.get("OPENSEARCH_URL")
    if given:
        version = probe(given)
        if version is not None:
            log(f"reusing OpenSearch {version} at {given}")
            yield Node(url=given, version=version, started_here=False)
            return
        log(f"nothing answers at OPENSEARCH_URL={given}; starting a node instead")
    with started_node(
        version=os.environ.get("OPENSEARCH_VERSION", DEFAULT_VERSION),
        cache_dir=default_cache_dir(),
        heap=os.environ.get("OPENSEARCH_HEAP", DEFAULT_HEAP),
        timeout=float(os.environ.get("OPENSEARCH_START_TIMEOUT", DEFAULT_START_TIMEOUT)),
    ) as node:
        yield node


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise _Interrupted(signum)


def run(command: list[str]) -> int:
    """Run ``command`` with OPENSEARCH_URL pointing at a live node; return its exit code.

    SIGINT, SIGTERM and SIGHUP are passed on to the command; the node is stopped after it.
    """
    if not command:
        raise NodeError("run needs a command after --")
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in signals}
    try:
        with available_node() as node:
            env = dict(os.environ, OPENSEARCH_URL=node.url, OPENSEARCH_RUNNING_VERSION=node.version)
            child = subprocess.Popen(command, env=env)
            try:
                return child.wait()
            except _Interrupted as exc:
                log(f"interrupted by signal {exc.signum}; stopping the command and the node")
                child.send_signal(exc.signum)
                try:
                    child.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                return 128 + exc.signum
    except _Interrupted as exc:  # while the node was starting
        log(f"interrupted by signal {exc.signum} while starting the node")
        return 128 + exc.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve() -> int:
    with available_node() as node:
        print(f"OPENSEARCH_URL={node.url}", flush=True)
        if not node.started_here:
            return 0
        log("press Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run a command with a live node")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("serve", help="start a node and keep it until Ctrl-C")
    sub.add_parser("fetch", help="download and unpack the distribution only")
    args = parser.parse_args(argv)
    try:
        if args.action == "run":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            return run(command)
        if args.action == "serve":
            return serve()
        version, cache_dir = (
            os.environ.get("OPENSEARCH_VERSION", DEFAULT_VERSION),
            default_cache_dir(),
        )
        with_modules(fetch(version, cache_dir), version, cache_dir)
        return 0
    except NodeError as exc:
        log(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
