"""Look up the pseudonym of a value, to search the audit log for a person (authorised staff).

    python -m audit.lookup [--key-id ID] VALUE [VALUE ...]

Prints ``VALUE<TAB>PSEUDONYM`` per value. Pseudonyms are keyed HMACs (see
``audit.processors.Pseudonymiser``): there is no way back from a pseudonym to the value, only
forward from a value you already know, as with Vault's ``sys/audit-hash``. The key is read from
the file named by ``AUDIT_PSEUDONYM_KEY_FILE`` (never from the command line, which would put it
in the shell history and the process list). Whoever runs this needs that file; the gateway's
search endpoint that offers the same lookup records an ``audit_pseudonym_lookup`` event.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from audit.processors import Pseudonymiser

KEY_FILE_VARIABLE = "AUDIT_PSEUDONYM_KEY_FILE"


def load_pseudonymiser(key_id: str) -> Pseudonymiser:
    """The pseudonymiser with the key from ``AUDIT_PSEUDONYM_KEY_FILE``; fails with a clear
    message when the variable or the file is missing, or the key is too short."""
    path = os.environ.get(KEY_FILE_VARIABLE)
    if not path:
        raise SystemExit(f"{KEY_FILE_VARIABLE} is not set: it names the file with the key")
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise SystemExit(f"cannot read the key file: {exc.strerror}") from exc
    try:
        return Pseudonymiser(key=key, key_id=key_id)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audit.lookup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--key-id", default="k1", help="the key id the pseudonyms carry")
    parser.add_argument("values", nargs="+", help="values to look up (e.g. a user id)")
    args = parser.parse_args(argv)
    pseudonymiser = load_pseudonymiser(args.key_id)
    for value in args.values:
        print(f"{value}\t{pseudonymiser.pseudonym(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
