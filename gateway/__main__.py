"""The gateway's command line.

python -m gateway serve [--config FILE]          run the gateway
python -m gateway demo                           demo mode: self-signed TLS, demo upstream
python -m gateway check-config [--config FILE]   validate the settings and show them
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.settings import Secret, SettingsError, iter_settings, load_settings


def check_config(config: Path | None) -> int:
    """Validate the settings; print them (secrets masked) and every security relaxation."""
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        return 2
    for name, value in iter_settings(settings):
        shown = "**********" if isinstance(value, Secret) else value
        if isinstance(shown, tuple):
            shown = ", ".join(str(item) for item in shown)
        print(f"{name} = {shown}")
    for relaxation in settings.relaxations():
        print(f"relaxed: {relaxation}", file=sys.stderr)
    print("settings are valid", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the gateway"),
        ("check-config", "validate the settings and show them"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", type=Path, help="TOML settings file (or GATEWAY_CONFIG)")
    demo = sub.add_parser("demo", help="demo mode: self-signed TLS and the demo upstream")
    demo.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.command == "check-config":
        return check_config(args.config)
    from gateway._wiring import run_demo, run_from_settings  # noqa: PLC0415 - heavy imports

    if args.command == "demo":
        return run_demo(args.config)
    return run_from_settings(args.config)


if __name__ == "__main__":
    sys.exit(main())
