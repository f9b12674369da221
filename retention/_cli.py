"""The command line: one subcommand per task, over the gateway's settings file.

    python -m retention inventory
    python -m retention run [--dry-run] [--now TIME]
    python -m retention holds list [--state active|released|all]
    python -m retention holds place --by USER --incident ID --reason TEXT
                                    [--user ID]... [--source-ip CIDR]... [--tenant ID]...
                                    [--category NAME]... [--since TIME] [--until TIME]
                                    [--review-at TIME]
    python -m retention holds release HOLD_ID --by USER --reason TEXT

Times are ISO-8601 with a time zone. Events (``retention_run``, ``hold_placed``,
``hold_released``) are written straight to the audit store before the command returns.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from audit import AuditStore
from audit.errors import StoreError
from audit.events import parse_timestamp
from audit.processors import Pseudonymise, Pseudonymiser
from retention._config import hold_store
from retention._holdstore import HoldStore
from retention._rules import DEFAULT_RULES, inventory, parse_rules
from retention._run import RetentionJob
from retention._service import Holds
from retention._sink import StoreSink
from retention.errors import RetentionError

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["main"]

_STATES = {"active": True, "released": False, "all": None}


def _config_given(config: Path | None) -> bool:
    from gateway.settings import ENV_CONFIG_FILE  # noqa: PLC0415 - gateway imports us too

    return config is not None or bool(os.environ.get(ENV_CONFIG_FILE))


def _time(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 time with a time zone"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retention",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=None, help="the gateway's TOML settings")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("inventory", help="print the log inventory (categories, fields, periods)")
    run = commands.add_parser("run", help="delete and minimise what retention allows")
    run.add_argument("--dry-run", action="store_true", help="count, change nothing")
    run.add_argument("--now", type=_time, default=None, help="the run's time (default: now)")
    holds = commands.add_parser("holds", help="list, place and release holds")
    actions = holds.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list")
    listing.add_argument("--state", choices=sorted(_STATES), default="all")
    place = actions.add_parser("place")
    place.add_argument("--by", required=True, help="who places the hold (recorded)")
    place.add_argument("--incident", required=True)
    place.add_argument("--reason", required=True)
    for flag in ("--user", "--source-ip", "--tenant", "--category"):
        place.add_argument(flag, action="append", default=[])
    place.add_argument("--since")
    place.add_argument("--until")
    place.add_argument("--review-at")
    release = actions.add_parser("release")
    release.add_argument("hold_id")
    release.add_argument("--by", required=True, help="who releases the hold (recorded)")
    release.add_argument("--reason", required=True)
    return parser


def _stores(settings: Settings) -> tuple[AuditStore, HoldStore, StoreSink]:
    from gateway._wiring import audit_store  # noqa: PLC0415 - gateway imports us too

    events = audit_store(settings.audit)
    events.ensure_schema()
    pseudonymise = None
    if settings.audit.pseudonym_key is not None and settings.audit.pseudonymise_fields:
        key = settings.audit.pseudonym_key.reveal().encode()
        pseudonymise = Pseudonymise(
            pseudonymiser=Pseudonymiser(key=key), fields=settings.audit.pseudonymise_fields
        )
    holds = hold_store(settings.audit)
    holds.ensure_schema()
    return events, holds, StoreSink(store=events, pseudonymise=pseudonymise)


def _place_body(args: argparse.Namespace) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "user_ids": args.user,
        "source_ips": args.source_ip,
        "organization_ids": args.tenant,
        "categories": args.category,
        "since": args.since,
        "until": args.until,
    }
    return {
        "incident_id": args.incident,
        "reason": args.reason,
        "scope": {k: v for k, v in scope.items() if v},
        "review_at": args.review_at,
    }


def _command(args: argparse.Namespace, settings: Settings) -> int:
    from gateway._wiring import retention_recorder  # noqa: PLC0415 - gateway imports us too

    events, store, sink = _stores(settings)
    try:
        if args.command == "run":
            job = RetentionJob(
                events=events,
                holds=store,
                rules=parse_rules(settings.retention.rules),
                sink=sink,
                recorder=retention_recorder(settings, events),  # tamper evidence (#12)
            )
            report = job.run(now=args.now or datetime.now(UTC), dry_run=args.dry_run)
            print(report.text())
            return 0
        holds = Holds(store=store, sink=sink)
        if args.action == "list":
            for hold in holds.list(active=_STATES[args.state]):
                print(orjson.dumps(hold.to_json()).decode())
        elif args.action == "place":
            print(orjson.dumps(holds.place(_place_body(args), by=args.by).to_json()).decode())
        else:
            released = holds.release(args.hold_id, by=args.by, reason=args.reason)
            print(orjson.dumps(released.to_json()).decode())
        return 0
    finally:
        store.close()
        events.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "inventory" and not _config_given(args.config):
        print("no settings file given: the defaults of DESIGN.md §4", file=sys.stderr)
        print(inventory(DEFAULT_RULES))
        return 0
    from gateway.settings import load_settings  # noqa: PLC0415 - gateway imports us too

    try:
        settings = load_settings(args.config)
    except ValueError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        return 2
    if args.command == "inventory":
        print(inventory(parse_rules(settings.retention.rules)))
        return 0
    try:
        return _command(args, settings)
    except RetentionError as exc:
        print(f"{exc.code}: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"audit store: {exc}", file=sys.stderr)
        return 1
