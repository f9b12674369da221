"""The command line: one subcommand per task, reading the gateway's settings file."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from audit.events import Category
from retention._rules import DEFAULT_RULES, RetentionRule, inventory, parse_rules

__all__ = ["main"]


def _rules(config: Path | None) -> dict[Category, RetentionRule]:
    from gateway.settings import load_settings  # noqa: PLC0415 - gateway imports us too

    return parse_rules(load_settings(config).retention.rules)


def _config_given(config: Path | None) -> bool:
    from gateway.settings import ENV_CONFIG_FILE  # noqa: PLC0415 - gateway imports us too

    return config is not None or bool(os.environ.get(ENV_CONFIG_FILE))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retention", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="the gateway's TOML settings")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("inventory", help="print the log inventory (categories, fields, periods)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "inventory" and not _config_given(args.config):
        print("no settings file given: the defaults of DESIGN.md §4", file=sys.stderr)
        print(inventory(DEFAULT_RULES))
        return 0
    try:
        rules = _rules(args.config)
    except ValueError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        return 2
    if args.command == "inventory":
        print(inventory(rules))
        return 0
    return 2  # pragma: no cover - argparse refuses unknown commands
