"""python -m policies: the committed report, check, lint, diff and test commands."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from policies._cli import DEFAULT_CLAIMS, REPORT_DIR, main
from policies._resources import Resources
from policies._review import report_files
from policies._source import PolicySource
from tests.policies.conftest import MODEL, POLICY


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


class TestCommittedReport:
    def test_is_up_to_date(self, shipped: PolicySource, resources: Resources) -> None:
        """policies/report/ matches the shipped policy; regenerate with `make policy-report`."""
        stale = [
            name
            for name, text in report_files(
                shipped, resources, claims_text=DEFAULT_CLAIMS.read_text(encoding="utf-8")
            ).items()
            if not (REPORT_DIR / name).is_file()
            or (REPORT_DIR / name).read_text(encoding="utf-8") != text
        ]
        assert stale == [], "run `make policy-report` and commit policies/report/"

    def test_check_mode_reports_stale_files(self, tmp_path: Path) -> None:
        """review report --check exits 1 and names files that differ."""
        code, text = _run("review", "report", "--out", str(tmp_path), "--check")
        assert code == 1
        assert "out of date:" in text and "matrix.md" in text
        assert _run("review", "report", "--out", str(tmp_path))[0] == 0
        assert _run("review", "report", "--out", str(tmp_path), "--check") == (0, "")


class TestCheck:
    def test_explains_an_allow_with_line_route_and_reference(self) -> None:
        """check names the deciding line, the route's categories and pycasbin's agreement."""
        code, text = _run(
            "check",
            "--role",
            "teacher",
            "--tenant",
            "school-a",
            "GET",
            "/api/schools/school-a/students/4",
        )
        assert code == 0
        assert "decision: allow (allowed)" in text
        assert "p, teacher, own, /api/schools/:tenant/students/:id, GET, allow" in text
        assert "school_students" in text and "categories a, b" in text
        assert "pycasbin Enforcer: allow (agrees)" in text

    def test_explains_a_cross_tenant_denial(self) -> None:
        """A teacher asking for another school is denied with no matching rule."""
        _, text = _run(
            "check",
            "--role",
            "teacher",
            "--tenant",
            "school-a",
            "GET",
            "/api/schools/school-b/students",
        )
        assert "decision: deny (no_matching_rule)" in text
        assert "matching lines: none" in text


class TestReachCommand:
    def test_answers_who_reaches_pupils_data(self) -> None:
        """--subject pupils lists the roles and how far they reach, nothing else."""
        code, text = _run("review", "reach", "--subject", "pupils")
        assert code == 0
        assert "## Personal data of pupils" in text and "## Category" not in text
        assert "- **teacher**: GET `/api/schools/:tenant/students` (own tenant)" in text
        assert "**student**" not in text and "**anonymous**" not in text

    def test_answers_per_category(self) -> None:
        """--category c: only the newsletter route carries communications."""
        code, text = _run("review", "reach", "--category", "c")
        assert code == 0
        assert "- **platform_staff**: POST `/api/admin/newsletters` (yes)" in text
        assert "Personal data of" not in text

    def test_an_unknown_category_is_an_error(self) -> None:
        """A typo is not answered with an empty list."""
        code, text = _run("review", "reach", "--category", "z")
        assert code == 2
        assert "unknown category z" in text


class TestLintCommand:
    def test_exits_zero_on_the_shipped_policy(self) -> None:
        """The shipped policy passes lint."""
        code, text = _run("review", "lint")
        assert code == 0
        assert text.splitlines()[-1].startswith("0 errors")

    def test_exits_one_on_a_risky_grant(self, tmp_path: Path) -> None:
        """A cross-tenant grant to a teacher fails lint, so CI can gate on it."""
        risky = tmp_path / "policy.csv"
        risky.write_text(
            POLICY.read_text(encoding="utf-8")
            + "p, teacher, all, /api/schools/:tenant/reports, GET, allow\n",
            encoding="utf-8",
        )
        code, text = _run("--policy", str(risky), "review", "lint")
        assert code == 1
        assert "error cross_tenant_reach" in text

    def test_exits_one_when_a_federation_asserts_a_local_role(self, tmp_path: Path) -> None:
        """A production claims mapping granting platform_staff fails lint."""
        claims = tmp_path / "claims.toml"
        claims.write_text(
            DEFAULT_CLAIMS.read_text(encoding="utf-8").replace(
                'staff = "teacher"', 'staff = "platform_staff"'
            ),
            encoding="utf-8",
        )
        code, text = _run("--claims", str(claims), "review", "lint")
        assert code == 1
        assert "error federated_local_role: claims mapping surfconext: staff -> platform_staff" in (
            text
        )


class TestDiffCommand:
    def test_between_two_files(self, tmp_path: Path) -> None:
        """diff OLD NEW prints the changes in words."""
        new = tmp_path / "new.csv"
        new.write_text(
            POLICY.read_text(encoding="utf-8").replace(
                "p, platform_staff, all, /api/admin/newsletters, POST, allow\n", ""
            ),
            encoding="utf-8",
        )
        code, text = _run("review", "diff", str(POLICY), str(new))
        assert code == 0
        assert "revoked: platform_staff may POST /api/admin/newsletters" in text

    def test_between_git_revisions(self, tmp_path: Path) -> None:
        """diff --git REV REV2 reads the policy file at both revisions."""
        repo = tmp_path / "repo"
        repo.mkdir()
        policy = repo / "policy.csv"

        def git(*args: str) -> None:
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(repo),
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@example.org",
                    *args,
                ],
                check=True,
                capture_output=True,
            )

        git("init", "-q")
        policy.write_text(POLICY.read_text(encoding="utf-8"), encoding="utf-8")
        git("add", "policy.csv")
        git("commit", "-qm", "one")
        policy.write_text(
            POLICY.read_text(encoding="utf-8") + "g, platform_admin, compliance_reviewer\n",
            encoding="utf-8",
        )
        git("commit", "-qam", "two")
        code, text = _run(
            "--model",
            str(MODEL),
            "--policy",
            str(policy),
            "review",
            "diff",
            "--git",
            "HEAD~1",
            "HEAD",
        )
        assert code == 0, text
        assert "platform_admin now inherits every permission of compliance_reviewer" in text
        assert "platform_admin: GET /_gateway/stats (gateway_stats; b): — -> yes" in text


class TestTestCommand:
    def test_runs_the_table(self) -> None:
        """python -m policies test runs every row and says how many pass."""
        code, text = _run("test")
        assert code == 0
        assert text.endswith("policy tests pass\n")
