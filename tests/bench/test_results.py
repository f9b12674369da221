"""bench/_results.py: RESULTS.md rendering and the CPU shares of the load beside us."""

from __future__ import annotations

import pytest

from bench._results import CpuShare, Machine, Section, cpu_share, render_results

MACHINE = Machine(
    cpu="Test CPU 3000",
    cores=2,
    memory_gib=24.0,
    os="Debian GNU/Linux 12 (bookworm)",
    kernel="6.1.0",
    versions={"python": "3.11.7", "uvicorn": "0.54.0"},
)


def _section(
    name: str, *, status: int = 0, output: str = "x 1.0\n", markdown: bool = False
) -> Section:
    return Section(
        name=name,
        command=f"python -m bench.{name}",
        status=status,
        output=output,
        share=CpuShare(seconds=120.0, machine_cores=1.8, our_cores=1.2),
        load_before=(1.0, 2.0, 3.0),
        load_after=(4.0, 5.0, 6.0),
        markdown=markdown,
    )


def _render(*sections: Section) -> str:
    return render_results(
        started="2026-11-28 17:20", finished="17:34", machine=MACHINE, sections=sections
    )


class TestCpuShare:
    def test_cores_are_cpu_seconds_per_wall_second(self) -> None:
        """Busy CPU seconds over wall seconds give average cores, ours and the machine's."""
        share = cpu_share(seconds=10.0, machine_busy_seconds=18.0, our_cpu_seconds=12.0)
        assert (share.machine_cores, share.our_cores) == (1.8, 1.2)
        assert share.other_cores == pytest.approx(0.6)

    def test_others_never_below_zero(self) -> None:
        """Sampling skew that makes ours exceed the machine's gives zero for the others."""
        share = cpu_share(seconds=10.0, machine_busy_seconds=5.0, our_cpu_seconds=6.0)
        assert share.other_cores == 0.0

    def test_no_time_no_share(self) -> None:
        """A zero-length stretch has no share (no division by zero)."""
        assert cpu_share(seconds=0.0, machine_busy_seconds=1.0, our_cpu_seconds=1.0).our_cores == 0


class TestRenderResults:
    def test_machine_versions_and_date(self) -> None:
        """The file names the machine, the versions and when it ran."""
        text = _render(_section("policy"))
        assert "Test CPU 3000, 2 cores; memory 24.0 GiB" in text
        assert "python 3.11.7, uvicorn 0.54.0" in text
        assert "2026-11-28 17:20 to 17:34 (UTC)" in text

    def test_load_beside_us_per_benchmark(self) -> None:
        """Each benchmark's row gives the load averages and the cores others and we used."""
        text = _render(_section("policy"))
        assert (
            "| policy | ok | 2.0 | 1.00 / 2.00 / 3.00 | 4.00 / 5.00 / 6.00 | 0.60 | 1.20 |" in text
        )
        assert "other work on the machine used 0.60 of 2 cores on average" in text

    def test_console_output_is_fenced(self) -> None:
        """A benchmark's console output goes in a text block, verbatim."""
        text = _render(_section("policy", output="case   µs\nallow  3.1\n"))
        assert (
            "## policy\n\n`python -m bench.policy`\n\n```text\ncase   µs\nallow  3.1\n```" in text
        )

    def test_markdown_output_is_kept_as_tables(self) -> None:
        """Markdown output (the peer tables) is inserted as it is."""
        text = _render(_section("peers", output="### nginx\n\n| a |\n|---|\n", markdown=True))
        assert "`python -m bench.peers`\n\n### nginx\n\n| a |\n|---|\n" in text

    def test_failure_is_visible(self) -> None:
        """A failed benchmark is marked in the summary and above its output."""
        text = _render(_section("search", status=2, output="no node\n"))
        assert "| search | FAILED (2) |" in text
        assert "**This benchmark failed (exit status 2); its output:**" in text

    def test_fence_survives_backticks_in_output(self) -> None:
        """Output containing a code fence gets a longer fence, so the file stays well-formed."""
        text = _render(_section("policy", output="```\n"))
        assert "````text\n```\n````" in text

    def test_sections_in_run_order(self) -> None:
        """Sections appear in the order the benchmarks ran."""
        text = _render(_section("peers"), _section("policy"))
        assert text.index("## peers") < text.index("## policy")
