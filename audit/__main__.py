"""Audit search, subject export and statistics from the command line.

    python -m audit --sqlite PATH | --opensearch URL [--index-prefix P]
                    --user ID --role ROLE [--role ...] [--tenant T]
                    [--signing-key PEM_FILE --chain-dir DIR]  COMMAND ...

    search  [--filter NAME=VALUE ...] [--size N] [--cursor C] [--order asc|desc]
    export  SUBJECT [--format json|csv] [--person-map CSV] [--name-staff]
    stats   [--row KEY ...] [--column KEY] [--min-group-size N]
    migrate (OpenSearch: bring daily indices made under an older template up to date)
    verify  --keys JWKS_FILE [--from TIME] [--to TIME] [--instance ID] [--format text|json]
            [--anchor FILE] [--signed-since TIME]

The same scoping as the HTTP API applies to the ``--role``/``--tenant`` given (the CLI runs
with the store's credentials, so whoever runs it already holds them: the roles state on whose
behalf). ``export --person-map`` reads the platform's person map (``user_id,tenant,platform_id``,
see ``audit/_persons.py``) so others' reads of the person's records by platform id are
included; ``--name-staff`` turns off the replacement of other staff members by their role.
Every search, export, statistics, migrate and verify run is written to the store as an audit
event before the command returns. With ``--signing-key`` (PEM Ed25519, the gateway's
``audit.signing_key``; or ``AUDIT_SIGNING_KEY_FILE``) and ``--chain-dir`` (or
``AUDIT_CHAIN_DIR``: a local directory the CLI keeps its chain state in) each event is then
signed into the CLIs' own digest chain (``audit/_clisink.py``), so ``verify`` notices one
deleted. A scheduled verifier need not hold the gateway's key: give the CLIs a key of their
own and publish its public half with the gateway's (``audit.verifier_keys_file``). Exit
status 2 for a bad filter, bad signing options or a bad person map, 3 for a refusal.

``migrate`` puts the current index template and upgrades older daily indices in place
(``audit/_migrate.py``: the free-text field is filled by writing each document back unchanged;
no event is lost or doubled); platform admins run it, and it is an ``audit_migration`` event.

``verify`` walks the signed digest chains (``audit/_verify.py``) with the public keys of
``--keys`` (the JWK set served at ``/_gateway/audit-keys.json``) and prints one line per
interval; exit status 1 when anything is found, so a scheduled job can alert. ``--anchor``
names a file (outside the store) where verify keeps the chain heads it saw: a later run
reports a digest seen before that is gone or changed (deleting the newest digests). Each run is an
``audit_verify`` event. Only the security, incident, compliance and platform-admin roles run it.
verify also reports events in the store that no digest lists (``events_unsigned``: injected,
or copied under a new id; ``audit/_unsigned.py`` has the rule), and says without calling them
findings how many are pending (newer than the last digests), written by a CLI without a key,
or from a time no chain was signing; ``--signed-since`` (every writer has had a key since
then) makes the last two findings as well. The last line on stderr sums it up.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from audit._chain import Keyring
from audit._clisink import ChainedStoreSink
from audit._digests import digest_store_beside
from audit._export import SubjectExporter
from audit._migrate import migrate_indices
from audit._opensearch import OpenSearchStore, connect
from audit._persons import PersonMapFile
from audit._search import AuditSearch, Requester, backbone_event, parse_filters
from audit._sqlite import SQLiteStore
from audit._stats import DEFAULT_ROWS, DEFAULT_THRESHOLD, Statistics
from audit._store import AuditStore
from audit._verify import Verifier
from audit.errors import BadFilter, PersonMapInvalid, SearchRefused, StoreError
from audit.events import Action, parse_timestamp

#: Environment defaults of ``--signing-key`` and ``--chain-dir``.
ENV_SIGNING_KEY: Final = "AUDIT_SIGNING_KEY_FILE"
ENV_CHAIN_DIR: Final = "AUDIT_CHAIN_DIR"


def _sink(args: argparse.Namespace, store: AuditStore) -> ChainedStoreSink:
    """The CLI's sink: signing into the chain in ``--chain-dir`` when a key is given."""
    key_file = args.signing_key or os.environ.get(ENV_SIGNING_KEY)
    chain_dir = args.chain_dir or os.environ.get(ENV_CHAIN_DIR)
    if key_file is None:
        if chain_dir:
            raise BadFilter("--chain-dir without --signing-key: nothing would sign")
        return ChainedStoreSink(store=store)
    if not chain_dir:
        raise BadFilter("--signing-key needs --chain-dir (where the CLI keeps its chain)")
    try:
        keyring = Keyring.from_pem(Path(key_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise BadFilter(f"--signing-key: {exc}") from exc
    return ChainedStoreSink(store=store, keyring=keyring, directory=chain_dir)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m audit", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", help="path of the SQLite audit store")
    where.add_argument("--opensearch", help="OpenSearch node URL")
    parser.add_argument("--index-prefix", default="")
    parser.add_argument("--user", required=True, help="who runs this (issuer|subject)")
    parser.add_argument("--role", action="append", required=True)
    parser.add_argument("--tenant")
    parser.add_argument(
        "--signing-key", help=f"PEM Ed25519 key signing this CLI's events ({ENV_SIGNING_KEY})"
    )
    parser.add_argument("--chain-dir", help=f"the CLI's digest chain state ({ENV_CHAIN_DIR})")
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="search events")
    search.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE")
    search.add_argument("--size", type=int, default=100)
    search.add_argument("--cursor")
    search.add_argument("--order", choices=["asc", "desc"], default="asc")
    export = commands.add_parser("export", help="everything about one person")
    export.add_argument("subject")
    export.add_argument("--format", choices=["json", "csv"], default="json")
    export.add_argument("--person-map", type=Path, help="the platform's person map (CSV)")
    export.add_argument(
        "--name-staff", action="store_true", help="show other staff members' ids, not roles"
    )
    stats = commands.add_parser("stats", help="suppressed counts")
    stats.add_argument("--row", action="append")
    stats.add_argument("--column", default="event.action")
    stats.add_argument("--min-group-size", type=int, default=DEFAULT_THRESHOLD)
    commands.add_parser("migrate", help="upgrade older daily indices (OpenSearch)")
    verify = commands.add_parser("verify", help="check the signed digest chains")
    verify.add_argument("--keys", required=True, help="JWK set of the audit signing keys")
    verify.add_argument("--from", dest="since", help="ISO-8601 time with a zone")
    verify.add_argument("--to", dest="until", help="ISO-8601 time with a zone")
    verify.add_argument("--instance", help="only this shipper instance's chain")
    verify.add_argument("--format", choices=["text", "json"], default="text")
    verify.add_argument("--anchor", type=Path, help="file keeping the chain heads between runs")
    verify.add_argument(
        "--signed-since",
        help="ISO-8601 time from which every writer had a signing key: any event no digest"
        " lists from then on is a finding",
    )
    return parser


def _read_anchor(path: Path | None) -> dict[str, tuple[int, str]]:
    if path is None or not path.exists():
        return {}
    try:
        data = orjson.loads(path.read_bytes())
        return {str(k): (int(v["seq"]), str(v["hash"])) for k, v in data.items()}
    except (
        OSError,
        orjson.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        raise BadFilter(f"--anchor: unreadable ({exc})") from exc


#: Who may run verify: it reads every chain (event ids, no event content).
VERIFY_ROLES = frozenset(
    {"security_officer", "incident_responder", "compliance_reviewer", "platform_admin"}
)


def _verify(
    args: argparse.Namespace, store: AuditStore, who: Requester, sink: ChainedStoreSink
) -> int:
    labels: dict[str, Any] = {
        k: v
        for k, v in (("from", args.since), ("to", args.until), ("instance", args.instance))
        if v
    }
    if not who.roles & VERIFY_ROLES:
        sink.emit(backbone_event(Action.AUDIT_VERIFY, who, outcome="failure", labels=labels))
        raise SearchRefused("verify needs a security, incident, compliance or admin role")
    try:
        since = parse_timestamp(args.since) if args.since else None
        until = parse_timestamp(args.until) if args.until else None
        signed_since = parse_timestamp(args.signed_since) if args.signed_since else None
    except ValueError as exc:
        raise BadFilter(f"--from/--to/--signed-since: {exc}") from exc
    try:
        with open(args.keys, "rb") as handle:
            keyring = Keyring.from_jwks(handle.read())
    except (OSError, ValueError) as exc:
        raise BadFilter(f"--keys: {exc}") from exc
    anchor = _read_anchor(args.anchor)
    digests = digest_store_beside(store)
    report = Verifier(events=store, digests=digests, keyring=keyring).verify(
        since=since, until=until, instance=args.instance, anchor=anchor, signed_since=signed_since
    )
    if args.anchor is not None and report.ok:
        heads = {**anchor, **report.heads}
        tmp = args.anchor.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({k: {"seq": s, "hash": h} for k, (s, h) in heads.items()}))
        os.replace(tmp, args.anchor)
    for interval in report.intervals:
        if args.format == "json":
            sys.stdout.write(orjson.dumps(interval.to_json()).decode() + "\n")
        else:
            sys.stdout.write(interval.text() + "\n")
    for finding, prefix in [
        *((f, "") for f in report.other),
        *((n, "note: ") for n in report.notes),
    ]:
        if args.format == "json":
            line = {"kind": finding.kind, "detail": finding.detail, "finding": not prefix}
            sys.stdout.write(orjson.dumps(line | {"event_ids": finding.event_ids}).decode() + "\n")
        else:
            sys.stdout.write(f"{prefix}{finding.kind}: {finding.detail}\n")
    sys.stderr.write(report.summary() + "\n")
    labels |= {
        "intervals": str(len(report.intervals)),
        "findings": str(report.findings),
        "unsigned": str(report.unsigned_events),
    }
    outcome = "success" if report.ok else "failure"
    sink.emit(backbone_event(Action.AUDIT_VERIFY, who, outcome=outcome, labels=labels))
    return 0 if report.ok else 1


#: Who may run migrate: the operators (it rewrites every daily index in place).
MIGRATE_ROLES = frozenset({"platform_admin"})


def _migrate(args: argparse.Namespace, who: Requester, sink: ChainedStoreSink) -> int:
    if not who.roles & MIGRATE_ROLES:
        sink.emit(backbone_event(Action.AUDIT_MIGRATION, who, outcome="failure", labels={}))
        raise SearchRefused("migrate needs the platform_admin role")
    if not args.opensearch:
        sys.stdout.write("the SQLite store has nothing to migrate\n")
        return 0
    client = connect(args.opensearch, timeout=MIGRATE_TIMEOUT)
    try:
        report = migrate_indices(client, prefix=args.index_prefix.lower())
    finally:
        client.close()
    for item in report.indices:
        line = f"{item.index}: {item.status}"
        if item.status == "migrated":
            line += f", {item.documents} documents ({item.changed_meanwhile} changed meanwhile)"
        if item.error:
            line += f": {item.error}"
        sys.stdout.write(line + "\n")
    summary = report.summary()
    sys.stderr.write(", ".join(f"{v} {k}" for k, v in summary.items()) + "\n")
    outcome = "success" if report.ok else "failure"
    labels = {k: str(v) for k, v in summary.items()}
    sink.emit(backbone_event(Action.AUDIT_MIGRATION, who, outcome=outcome, labels=labels))
    return 0 if report.ok else 1


def _filters(pairs: Sequence[str]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise BadFilter(f"--filter wants NAME=VALUE, got {pair!r}")
        params.setdefault(name, []).append(value)
    return params


#: Cursors of the CLI are signed with this key unless AUDIT_CURSOR_KEY_FILE names one: whoever
#: runs the CLI holds the store's credentials already, so the signature guards nothing there;
#: the scope digest in the cursor still ties it to the same search and roles.
CLI_CURSOR_KEY = b"python -m audit: unkeyed cursors"
#: Seconds per request of migrate (a bulk write-back of 1,000 documents, a mapping update).
MIGRATE_TIMEOUT = 120.0


def _cursor_key() -> bytes:
    path = os.environ.get("AUDIT_CURSOR_KEY_FILE")
    return Path(path).read_bytes().strip() if path else CLI_CURSOR_KEY


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    store: AuditStore = (
        SQLiteStore(path=args.sqlite)
        if args.sqlite
        else OpenSearchStore(url=args.opensearch, index_prefix=args.index_prefix)
    )
    who = Requester(args.user, frozenset(args.role), args.tenant)
    try:
        sink = _sink(args, store)
        if args.command == "search":
            result = AuditSearch(store=store, sink=sink, cursor_key=_cursor_key()).search(
                who,
                parse_filters(_filters(args.filter)),
                size=args.size,
                cursor=args.cursor,
                newest_first=args.order == "desc",
            )
            total = {"value": result.total.value, "relation": "eq" if result.total.exact else "gte"}
            body = {"events": result.events, "total": total, "next_cursor": result.next_cursor}
            sys.stdout.write(orjson.dumps(body).decode() + "\n")
        elif args.command == "migrate":
            return _migrate(args, who, sink)
        elif args.command == "verify":
            return _verify(args, store, who, sink)
        elif args.command == "export":
            persons = PersonMapFile(path=args.person_map) if args.person_map else None
            made = SubjectExporter(
                store=store, sink=sink, pseudonymise_staff=not args.name_staff, persons=persons
            ).export(who, args.subject)
            sys.stdout.write(made.to_csv() if args.format == "csv" else made.to_json().decode())
        else:
            rows = args.row or list(DEFAULT_ROWS)
            try:
                table = Statistics(store=store, sink=sink, threshold=args.min_group_size).table(
                    who, rows=rows, column=args.column
                )
            except ValueError as exc:
                raise BadFilter(str(exc)) from exc
            sys.stdout.write(orjson.dumps(table).decode() + "\n")
    except (BadFilter, PersonMapInvalid) as exc:
        what = "person map" if isinstance(exc, PersonMapInvalid) else "bad filter"
        sys.stderr.write(f"{what}: {exc}\n")
        return 2
    except SearchRefused as exc:
        sys.stderr.write(f"refused: {exc}\n")
        return 3
    except StoreError as exc:
        sys.stderr.write(f"audit store: {exc}\n")
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
