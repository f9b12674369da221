"""Run the dev identity provider: ``python -m devidp --mode demo --port 9400``.

Refuses to start unless ``--mode demo`` or ``--mode test`` is given (or ``DEVIDP_MODE``).
It listens on loopback only and registers one client (the gateway).
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from devidp import DevClient, ModeNotEnabled, create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devidp", description=__doc__)
    parser.add_argument("--mode", choices=["demo", "test"], default=os.environ.get("DEVIDP_MODE"))
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--client-id", default="gateway")
    parser.add_argument("--client-secret", default=os.environ.get("DEVIDP_CLIENT_SECRET"))
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=None,
        help="allowed redirect URI of the gateway (repeatable)",
    )
    parser.add_argument("--post-logout-redirect-uri", action="append", default=None)
    args = parser.parse_args(argv)
    issuer = f"http://127.0.0.1:{args.port}"
    try:
        app = create_app(
            issuer=issuer,
            mode=args.mode,
            clients=[
                DevClient(
                    client_id=args.client_id,
                    client_secret=args.client_secret,
                    redirect_uris=args.redirect_uri or ["https://localhost:8443/_gateway/callback"],
                    post_logout_redirect_uris=args.post_logout_redirect_uri
                    or ["https://localhost:8443/"],
                )
            ],
        )
    except ModeNotEnabled as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    print(f"dev identity provider ({args.mode} mode) at {issuer}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
