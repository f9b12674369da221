"""Run the demo platform: ``python -m demo_upstream --port 9001 [--jwks-file F | --jwks-url U]``."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from demo_upstream import AssertionChecker, create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001
DEFAULT_ISSUER = "https://gateway.localhost"
DEFAULT_AUDIENCE = "onderwijs-regio-platform"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo_upstream", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", type=Path, help="the gateway's JWKS document")
    keys.add_argument("--jwks-url", help="where the gateway publishes its JWKS")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER, help="expected assertion issuer")
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE, help="expected assertion audience")
    args = parser.parse_args(argv)
    checker = None
    if args.jwks_file or args.jwks_url:
        checker = AssertionChecker(
            issuer=args.issuer,
            audience=args.audience,
            jwks_file=args.jwks_file,
            jwks_url=args.jwks_url,
        )
    uvicorn.run(create_app(checker=checker), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
