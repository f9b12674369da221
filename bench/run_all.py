"""Run every benchmark in ``bench/`` and write ``bench/RESULTS.md`` (``make bench``).

    .venv/bin/python -m bench.run_all [--out bench/RESULTS.md] [--only NAME ...]

Each benchmark runs as ``python -m bench.NAME`` with bounded arguments (the whole run takes
about 15 minutes here), one after the other, and keeps its own baseline in-process: the ratios
it prints come from its own run. ``make bench`` starts an OpenSearch node for the run
(``tools/opensearch_node.py run``), so OPENSEARCH_URL is set for the benchmarks that need one.

Around every benchmark the load beside us is recorded: the load average before and after, and
the cores the whole machine used (``/proc/stat``) against the cores our own process tree used
(the OpenSearch node, this script and the benchmark with everything it started); the
difference is other people's work on a shared machine. A benchmark that fails is recorded as
failed with its output, and the run goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench._results import Machine, Section, cpu_share, render_results

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "RESULTS.md"
TIMEOUT = 900.0
PACKAGES = (
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "aiohttp",
    "authlib",
    "joserfc",
    "pycasbin",
    "opensearch-py",
    "structlog",
)


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    args: tuple[str, ...]
    #: ``--markdown FILE`` is appended and the file's content is the section (tables).
    markdown: bool = False
    #: ``--opensearch $OPENSEARCH_URL`` is appended when a node is given.
    opensearch_flag: bool = False


#: What ``make bench`` runs, bounded: sizes below each benchmark's default where that default
#: takes many minutes (search loads 1,000,000 events, retention 3,000,000, by default).
BENCHMARKS = (
    Benchmark("peers", ("--duration", "3", "--rounds", "3"), markdown=True),
    Benchmark("gateway", ("--duration", "3", "--rounds", "2"), opensearch_flag=True),
    Benchmark("policy", ("--quick",)),
    Benchmark("oidc_authn", (), opensearch_flag=True),
    Benchmark("audit", ("--events", "5000", "--rounds", "3")),
    Benchmark("audit_chain", ("--events", "5000", "--rounds", "3", "--verify-events", "50000")),
    Benchmark("shared_state", ("-n", "200")),
    Benchmark("revocation_journal", ("-n", "1000"), opensearch_flag=True),
    Benchmark("search", ("--events", "50000", "--repeats", "10")),
    Benchmark("retention", ("--days", "5", "--per-day", "10000", "--holds", "3")),
)


# --- what the machine is doing -----------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has been busy since boot (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, with their reaped children's."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            stats[int(entry.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        found = stats.get(pid)
        if found is not None:
            total += sum(int(v) for v in found[11:15])  # utime stime cutime cstime
        todo.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


def our_root() -> int:
    """The OpenSearch runner that started us when there is one (its node is ours), else us."""
    parent = os.getppid()
    with contextlib.suppress(OSError):
        if b"opensearch_node" in Path(f"/proc/{parent}/cmdline").read_bytes():
            return parent
    return os.getpid()


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (one, five, fifteen)


def machine() -> Machine:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    os_name = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    if os.environ.get("OPENSEARCH_RUNNING_VERSION"):
        versions["OpenSearch"] = os.environ["OPENSEARCH_RUNNING_VERSION"]
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 1,
        memory_gib=memory_kib / 1024 / 1024,
        os=os_name,
        kernel=platform.release(),
        versions=versions,
    )


# --- the run -----------------------------------------------------------------------------------


def ensure_tools() -> None:
    """wrk and nginx (apt-get) and oauth2-proxy (go install), or exit with what to do."""
    from bench.peers import ensure_debian_tools, oauth2_proxy_binary  # noqa: PLC0415

    ensure_debian_tools()
    oauth2_proxy_binary()


def run_one(benchmark: Benchmark, root: int, scratch: Path) -> Section:
    argv = [sys.executable, "-m", f"bench.{benchmark.name}", *benchmark.args]
    markdown = scratch / f"{benchmark.name}.md"
    if benchmark.markdown:
        argv += ["--markdown", str(markdown)]
    shown = shlex.join(["python", "-m", f"bench.{benchmark.name}", *benchmark.args])
    if benchmark.opensearch_flag and os.environ.get("OPENSEARCH_URL"):
        argv += ["--opensearch", os.environ["OPENSEARCH_URL"]]
        shown += " --opensearch $OPENSEARCH_URL"
    print(f"== {shown}", flush=True)
    load_before = load_average()
    busy_before, ours_before, started = machine_busy_seconds(), tree_cpu_seconds(root), time.time()
    try:
        done = subprocess.run(
            argv,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        status, output = done.returncode, done.stdout
        if done.returncode != 0:
            output += "\n" + "\n".join(done.stderr.splitlines()[-30:])
    except subprocess.TimeoutExpired as exc:
        status = 124
        partial = exc.stdout or ""
        if isinstance(partial, bytes):
            partial = partial.decode(errors="replace")
        output = f"stopped after {TIMEOUT:.0f} s\n{partial}"
    share = cpu_share(
        seconds=time.time() - started,
        machine_busy_seconds=machine_busy_seconds() - busy_before,
        our_cpu_seconds=tree_cpu_seconds(root) - ours_before,
    )
    if status == 0 and benchmark.markdown and markdown.exists():
        output = markdown.read_text()
    print(output, flush=True)
    return Section(
        name=benchmark.name,
        command=shown,
        status=status,
        output=output,
        share=share,
        load_before=load_before,
        load_after=load_average(),
        markdown=benchmark.markdown,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS])
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    ensure_tools()
    if not os.environ.get("OPENSEARCH_URL"):
        print("note: no OPENSEARCH_URL; benchmarks that need a node start their own", flush=True)
    root = our_root()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="bench-run-") as scratch:
        sections = [run_one(b, root, Path(scratch)) for b in chosen]
    notes = [
        "Cores used by us: the OpenSearch node, this runner and the benchmark with every "
        "process it started; others: the rest of the machine (/proc/stat minus ours).",
    ]
    text = render_results(
        started=started,
        finished=datetime.now(UTC).strftime("%H:%M"),
        machine=machine(),
        sections=sections,
        notes=notes,
    )
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0 if all(s.status == 0 for s in sections) else 1


if __name__ == "__main__":
    sys.exit(main())
