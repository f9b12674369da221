"""bench/run_all.py: the benchmark list, the machine's figures, and a failing benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import run_all
from bench.run_all import BENCHMARKS, Benchmark, machine, machine_busy_seconds, tree_cpu_seconds

BENCH = Path(run_all.__file__).parent


class TestBenchmarks:
    def test_every_benchmark_in_bench_is_run(self) -> None:
        """Every benchmark script in bench/ (not the runner, not private modules) is listed."""
        scripts = {
            path.stem
            for path in BENCH.glob("*.py")
            if not path.stem.startswith("_") and path.stem != "run_all"
        }
        assert {b.name for b in BENCHMARKS} == scripts


class TestMachine:
    def test_describes_the_machine(self) -> None:
        """CPU, cores, memory and the Python version are read from this machine."""
        found = machine()
        assert found.cores == os.cpu_count()
        assert found.memory_gib > 0
        assert found.cpu != "?"
        assert "python" in found.versions

    def test_machine_busy_time_grows(self) -> None:
        """The machine's busy CPU time only grows."""
        before = machine_busy_seconds()
        sum(range(2_000_000))
        assert machine_busy_seconds() >= before > 0

    def test_tree_counts_reaped_children(self) -> None:
        """CPU time of a child that has exited (reaped) still counts for our tree."""
        before = tree_cpu_seconds(os.getpid())
        subprocess.run(
            [sys.executable, "-c", "sum(range(30_000_000))"], check=True, capture_output=True
        )
        assert tree_cpu_seconds(os.getpid()) > before


class TestRunOne:
    def test_failure_is_recorded_with_its_output(self, tmp_path: Path) -> None:
        """A benchmark that fails gives a section with its status and error output."""
        section = run_all.run_one(Benchmark("no_such_benchmark", ()), os.getpid(), tmp_path)
        assert section.status == 1
        assert "No module named bench.no_such_benchmark" in section.output
        assert section.share.seconds > 0
