"""The command line: one subcommand per task, over the gateway's settings file.

    python -m retention inventory
    python -m retention run [--dry-run] [--now TIME | --every INTERVAL]
    python -m retention runs [--last N]
    python -m retention holds list [--state active|released|all]
    python -m retention holds place --by USER --incident ID --reason TEXT
                                    [--user ID]... [--source-ip CIDR]... [--tenant ID]...
                                    [--category NAME]... [--since TIME] [--until TIME]
                                    [--review-at TIME]
    python -m retention holds release HOLD_ID --by USER --reason TEXT

``run`` runs once (for cron or a Kubernetes CronJob); with ``--every 1h`` (or ``30m``, ``1d``,
``90s``) it runs again at that interval until SIGTERM or SIGINT, which stop it cleanly between
two steps (the next run does the rest). A run while another holds the run lock exits 3 (once)
or waits for its next turn (loop). Times are ISO-8601 with a time zone. Events
(``retention_run``, ``hold_placed``, ``hold_released``) are written straight to the audit store
before the command returns, and with ``audit.signing_key`` signed into the CLIs' own digest
chain (``audit.ChainedStoreSink``, state in ``audit.spool_dir/cli``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from audit import AuditStore, ChainedStoreSink
from audit.errors import StoreError
from audit.events import parse_timestamp
from audit.processors import Pseudonymise, Pseudonymiser
from retention._config import hold_store, run_store
from retention._holdstore import HoldStore
from retention._rules import DEFAULT_RULES, inventory, parse_rules
from retention._run import RetentionJob
from retention._runstore import RunRecord, RunStore
from retention._service import Holds
from retention.errors import LockLost, RetentionError, RunLocked

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["main"]

_STATES = {"active": True, "released": False, "all": None}
_INTERVAL = re.compile(r"([1-9][0-9]*)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
#: Exit code of a single run that found the run lock held by another run.
EXIT_LOCKED = 3
#: Where (under ``audit.spool_dir``) the CLIs keep the digest chain of their own events.
CLI_CHAIN_DIR = "cli"


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


def _interval(text: str) -> timedelta:
    found = _INTERVAL.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an interval such as 90s, 30m, 1h, 1d")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


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
    when = run.add_mutually_exclusive_group()
    when.add_argument("--now", type=_time, default=None, help="the run's time (default: now)")
    when.add_argument(
        "--every", type=_interval, default=None, help="run in a loop at this interval (1h)"
    )
    reports = commands.add_parser("runs", help="print the stored runs and their reports")
    reports.add_argument("--last", type=int, default=10, help="how many, newest last")
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


def _stores(settings: Settings) -> tuple[AuditStore, HoldStore, RunStore, ChainedStoreSink]:
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
    runs = run_store(settings.audit)
    runs.ensure_schema()
    return events, holds, runs, _sink(settings, events, pseudonymise)


def _sink(
    settings: Settings, events: AuditStore, pseudonymise: Pseudonymise | None
) -> ChainedStoreSink:
    """Events stored at once and, with ``audit.signing_key``, signed into the CLIs' digest
    chain (state in ``audit.spool_dir/cli``; tamper evidence, #12)."""
    from gateway._wiring import audit_keyring  # noqa: PLC0415 - gateway imports us too

    keyring = audit_keyring(settings.audit)
    if keyring is None or not keyring.can_sign:
        return ChainedStoreSink(store=events, pseudonymise=pseudonymise)
    return ChainedStoreSink(
        store=events,
        keyring=keyring,
        directory=settings.audit.spool_dir / CLI_CHAIN_DIR,
        instance_prefix=settings.audit.instance_id,
        interval=float(settings.audit.digest_interval),
        pseudonymise=pseudonymise,
    )


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

    events, store, runs, sink = _stores(settings)
    try:
        if args.command == "run":
            job = RetentionJob(
                events=events,
                holds=store,
                rules=parse_rules(settings.retention.rules),
                sink=sink,
                runs=runs,
                recorder=retention_recorder(settings, events),  # tamper evidence (#12)
            )
            return _run(job, args)
        if args.command == "runs":
            for run in runs.runs()[-args.last :] if args.last > 0 else []:
                print(orjson.dumps(_run_json(run)).decode())
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
        runs.close()
        store.close()
        events.close()


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "owner": run.owner,
        "started_at": run.started_at.isoformat(),
        "state": run.state,
        "report": run.report,
    }


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set the event (the job stops between two steps, the loop ends);
    the previous handlers are put back afterwards."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        print(f"{signal.Signals(signum).name}: stopping after the current step", file=sys.stderr)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(job: RetentionJob, args: argparse.Namespace) -> int:
    with _stop_on_signals() as stop:
        return _run_until(job, args, stop)


def _run_until(job: RetentionJob, args: argparse.Namespace, stop: threading.Event) -> int:
    if args.every is None:
        try:
            report = job.run(now=args.now or datetime.now(UTC), dry_run=args.dry_run, stop=stop)
        except RunLocked as exc:
            print(f"{exc.code}: {exc}", file=sys.stderr)
            return EXIT_LOCKED
        print(report.text(), flush=True)
        return 0
    while not stop.is_set():
        try:
            report = job.run(now=datetime.now(UTC), dry_run=args.dry_run, stop=stop)
            print(report.text(), flush=True)
        except (RunLocked, LockLost) as exc:
            print(f"{exc.code}: {exc}; trying again in {args.every}", file=sys.stderr, flush=True)
        except StoreError as exc:  # the store may come back before the next turn
            print(f"audit store: {exc}; trying again in {args.every}", file=sys.stderr, flush=True)
        stop.wait(args.every.total_seconds())
    print("stopped", file=sys.stderr)
    return 0


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
