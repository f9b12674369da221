"""Run the gateway: ``python -m gateway serve [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from gateway.app import HEALTH_PATH, create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the gateway")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)

    base = f"http://{args.host}:{args.port}"
    print(f"Gateway starting; health check at {base}{HEALTH_PATH}", flush=True)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
