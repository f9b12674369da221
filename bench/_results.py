"""``bench/RESULTS.md``: the machine, the versions, the load beside us, and every benchmark.

Pure functions of what :mod:`bench.run_all` measured, so ``tests/bench`` renders them without
running anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["CpuShare", "Machine", "Section", "cpu_share", "render_results"]


@dataclass(frozen=True, slots=True)
class Machine:
    cpu: str
    cores: int
    memory_gib: float
    os: str
    kernel: str
    versions: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class CpuShare:
    """CPU use over a stretch of wall time, in cores: all of the machine's, and ours."""

    seconds: float
    machine_cores: float
    our_cores: float

    @property
    def other_cores(self) -> float:
        """What the rest of the machine (other people's work) used, never below zero."""
        return max(self.machine_cores - self.our_cores, 0.0)


def cpu_share(*, seconds: float, machine_busy_seconds: float, our_cpu_seconds: float) -> CpuShare:
    """Average cores busy over ``seconds``: the machine's and our process tree's."""
    if seconds <= 0:
        return CpuShare(seconds=0.0, machine_cores=0.0, our_cores=0.0)
    return CpuShare(
        seconds=seconds,
        machine_cores=machine_busy_seconds / seconds,
        our_cores=our_cpu_seconds / seconds,
    )


@dataclass(frozen=True, slots=True)
class Section:
    """One benchmark's run: its command line, what it printed, and the load during it."""

    name: str
    command: str
    status: int
    output: str
    share: CpuShare
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    #: The output is Markdown already (tables), not console text to fence.
    markdown: bool = False


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _fence(text: str) -> str:
    body = text.rstrip("\n")
    fence = "```"
    while fence in body:
        fence += "`"
    return f"{fence}text\n{body}\n{fence}"


def render_results(
    *,
    started: str,
    finished: str,
    machine: Machine,
    sections: Sequence[Section],
    notes: Sequence[str] = (),
) -> str:
    """The whole RESULTS.md; a section whose benchmark failed says so at its top."""
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (python -m bench.run_all), {started} to {finished} (UTC). "
        "Each benchmark prints ratios against a baseline measured in the same run; absolute "
        "numbers depend on the load beside us, recorded per benchmark below.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine.cpu}, {machine.cores} cores; memory {machine.memory_gib:.1f} GiB",
        f"- OS: {machine.os}, kernel {machine.kernel}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in machine.versions.items()),
    ]
    total = sum(s.share.seconds for s in sections)
    if total > 0:
        other = sum(s.share.other_cores * s.share.seconds for s in sections) / total
        lines.append(
            f"- Concurrent load: other work on the machine used {other:.2f} of "
            f"{machine.cores} cores on average while the benchmarks ran ({total / 60:.1f} min)"
        )
    lines += [f"- {note}" for note in notes]
    lines += [
        "",
        "| benchmark | status | minutes | load avg before (1/5/15 min) | after "
        "| cores used by others | cores used by us |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sections:
        status = "ok" if s.status == 0 else f"FAILED ({s.status})"
        lines.append(
            f"| {s.name} | {status} | {s.share.seconds / 60:.1f} | {_load(s.load_before)} "
            f"| {_load(s.load_after)} | {s.share.other_cores:.2f} | {s.share.our_cores:.2f} |"
        )
    for s in sections:
        lines += ["", f"## {s.name}", "", f"`{s.command}`", ""]
        if s.status != 0:
            lines += [f"**This benchmark failed (exit status {s.status}); its output:**", ""]
        lines.append(s.output.rstrip("\n") if s.markdown and s.status == 0 else _fence(s.output))
    return "\n".join(lines).rstrip("\n") + "\n"
