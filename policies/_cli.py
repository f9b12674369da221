"""Review and check the access policy from the files the gateway enforces.

    python -m policies review matrix [--format md|csv|html]   role x route x method
    python -m policies review reach [--category b] [--subject pupils]   who reaches what
    python -m policies review diff OLD.csv NEW.csv            what changed, in words
    python -m policies review diff --git REV [REV2]           the same between git revisions
    python -m policies review lint                            risky grants (exit 1 on errors)
    python -m policies review report [--check]                write (or check) policies/report/
    python -m policies check --role R [--tenant T] METHOD PATH   explain one decision
    python -m policies test                                   run the policy test table

Options before the command choose other files (--model, --policy, --resources, --table,
--claims: the OIDC claims mapping lint checks the roles against).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from policies._evaluator import FastEvaluator
from policies._reference import ReferenceAuthorizer
from policies._resources import Resources
from policies._review import diff_in_words, lint, matrix, reach_markdown, report_files
from policies._source import PolicySource, load_source, source_from_text
from policies._store import DEFAULT_MODEL, DEFAULT_POLICY, DEFAULT_RESOURCES, DEFAULT_TABLE
from policies._table import load_table, run_table
from policies.errors import PolicyError

__all__ = ["DEFAULT_CLAIMS", "REPORT_DIR", "main"]

REPORT_DIR: Final = Path(__file__).resolve().parent / "report"
#: The OIDC claims mapping (gateway/oidc), which lint checks against resources.toml's roles.
DEFAULT_CLAIMS: Final = Path(__file__).resolve().parent / "claims.toml"
_EXIT_LINT: Final = 1
_EXIT_ERROR: Final = 2


def _git_text(path: Path, revision: str) -> str:
    root = subprocess.run(
        ["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    relative = path.resolve().relative_to(Path(root).resolve())
    return subprocess.run(
        ["git", "-C", root, "show", f"{revision}:{relative.as_posix()}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _claims_text(path: Path) -> str | None:
    """The claims file's text, or ``None`` when there is none (the check is then skipped)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _cmd_review(args: argparse.Namespace, out: TextIO) -> int:
    resources = Resources.from_file(args.resources)
    claims = _claims_text(args.claims)
    model_text = args.model.read_text(encoding="utf-8")
    if args.review == "diff":
        if args.git:
            old_text = _git_text(args.policy, args.git[0])
            new_text = (
                _git_text(args.policy, args.git[1])
                if len(args.git) > 1
                else args.policy.read_text(encoding="utf-8")
            )
        elif len(args.files) == 2:
            old_text, new_text = (Path(f).read_text(encoding="utf-8") for f in args.files)
        else:
            raise SystemExit("review diff takes two policy files or --git REV [REV2]")
        old = source_from_text(model_text, old_text)
        new = source_from_text(model_text, new_text)
        out.write("\n".join(diff_in_words(old, new, resources)) + "\n")
        return 0
    source = load_source(args.model, args.policy)
    if args.review == "lint":
        findings = lint(source, resources, claims_text=claims)
        for finding in findings:
            out.write(f"{finding}\n")
        errors = sum(f.level == "error" for f in findings)
        out.write(f"{errors} errors, {len(findings) - errors} warnings\n")
        return _EXIT_LINT if errors else 0
    if args.review == "report":
        return _report(source, resources, claims, args.out, check=args.check, out=out)
    if args.review == "reach":
        rows = matrix(FastEvaluator(source, cache_size=0), resources)
        try:
            out.write(
                reach_markdown(
                    rows,
                    resources,
                    title="Who can reach what",
                    categories=args.category,
                    subjects=args.subject,
                )
            )
        except ValueError as exc:
            out.write(f"error: {exc}\n")
            return _EXIT_ERROR
        return 0
    out.write(report_files(source, resources, claims_text=claims)[f"matrix.{args.format}"])
    return 0


def _report(
    source: PolicySource,
    resources: Resources,
    claims: str | None,
    directory: Path,
    *,
    check: bool,
    out: TextIO,
) -> int:
    files = report_files(source, resources, claims_text=claims)
    stale = [
        name
        for name, text in files.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    if check:
        for name in stale:
            out.write(f"out of date: {directory / name}\n")
        return _EXIT_LINT if stale else 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    out.write(f"wrote {len(files)} files to {directory} ({len(stale)} changed)\n")
    return 0


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    source = load_source(args.model, args.policy)
    resources = Resources.from_file(args.resources)
    fast = FastEvaluator(source, cache_size=0)
    roles = frozenset(args.role)
    request = {"roles": roles, "tenant": args.tenant, "method": args.method, "path": args.path}
    decision = fast.decide(**request)
    verdict = "allow" if decision.allowed else "deny"
    out.write(f"decision: {verdict} ({decision.reason})\n")
    lines = {rule.text: rule.line for rule in source.rules}
    if decision.rule:
        out.write(f"rule: {source.policy_name}:{lines[decision.rule]}  {decision.rule}\n")
    route = resources.classify(args.method, args.path)
    if route is None:
        out.write("route: not a known route\n")
    else:
        out.write(
            f"route: {route.family} {route.method} {route.pattern} (categories "
            f"{', '.join(route.categories) or 'none'}; others' personal data: "
            f"{'yes' if route.others_personal_data else 'no'}"
            f"{'; tenant ' + route.tenant if route.tenant else ''})\n"
        )
    for role in sorted(roles):
        reached = sorted(fast.closures.get(role, {role}))
        out.write(f"role {role} inherits: {', '.join(r for r in reached if r != role) or '-'}\n")
    matching = fast.matching_rules(**request)
    out.write("matching lines:\n" if matching else "matching lines: none\n")
    for rule in matching:
        out.write(f"  {source.policy_name}:{rule.line}  {rule.text}\n")
    theirs = ReferenceAuthorizer(source).decide(**request)
    agrees = "agrees" if theirs == decision else f"DISAGREES: {theirs}"
    out.write(f"pycasbin Enforcer: {'allow' if theirs.allowed else 'deny'} ({agrees})\n")
    return 0


def _cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    source = load_source(args.model, args.policy)
    cases = load_table(args.table)
    failures = run_table(FastEvaluator(source, cache_size=0), cases)
    for failure in failures:
        out.write(f"FAIL {failure}\n")
    out.write(f"{len(cases) - len(failures)} of {len(cases)} policy tests pass\n")
    return _EXIT_LINT if failures else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m policies",
        description=__doc__.split("\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    parser.add_argument("--resources", type=Path, default=DEFAULT_RESOURCES)
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--claims", type=Path, default=DEFAULT_CLAIMS)
    commands = parser.add_subparsers(dest="command", required=True)
    review = commands.add_parser("review", help="compliance review outputs")
    kinds = review.add_subparsers(dest="review", required=True)
    shown = kinds.add_parser("matrix", help="permission matrix role x route x method")
    shown.add_argument("--format", choices=("md", "csv", "html"), default="md")
    reach = kinds.add_parser("reach", help="who can reach each data category and whose data")
    reach.add_argument("--category", action="append", help="a to f; repeat for several")
    reach.add_argument("--subject", action="append", help="e.g. pupils; repeat for several")
    diff = kinds.add_parser("diff", help="what changed between two policies, in words")
    diff.add_argument("files", nargs="*", help="OLD.csv NEW.csv")
    diff.add_argument("--git", nargs="+", metavar="REV", help="REV [REV2] (default: the file)")
    kinds.add_parser("lint", help="risky grants; exits 1 when there are errors")
    report = kinds.add_parser("report", help="write the committed report files")
    report.add_argument("--out", type=Path, default=REPORT_DIR)
    report.add_argument("--check", action="store_true", help="exit 1 if they are out of date")
    check = commands.add_parser("check", help="explain one decision")
    check.add_argument("--role", action="append", required=True, help="repeat for several")
    check.add_argument("--tenant", default=None)
    check.add_argument("method")
    check.add_argument("path")
    commands.add_parser("test", help="run the policy test table")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    args = _parser().parse_args(argv)
    handlers = {"review": _cmd_review, "check": _cmd_check, "test": _cmd_test}
    try:
        return handlers[args.command](args, stream)
    except PolicyError as exc:
        stream.write(f"error: {exc}\n")
        return _EXIT_ERROR
    except subprocess.CalledProcessError as exc:
        stream.write(f"error: git failed: {exc.stderr.strip()}\n")
        return _EXIT_ERROR
