"""A gateway with stand-in components, served by gateway.server for tests in a subprocess.

python -m tests.gateway._served_app CERT KEY HTTPS_PORT HTTP_PORT METRICS_PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Collection
from pathlib import Path
from urllib.parse import parse_qs

from audit import MemorySink
from gateway.app import Lifecycle, create_app
from gateway.https import RedirectApp, RedirectTarget
from gateway.metrics import GatewayMetrics, MetricsApp
from gateway.server import Listener, run
from gateway.settings import load_settings
from gateway.tls import build_ssl_context
from gateway.types import Decision, Receive, Scope, Send


class AllowAll:
    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        return Decision(allowed=True, reason="allowed", rule="test")


async def slow_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers after ``?sleep=seconds``, like a slow platform."""
    query = parse_qs(scope["query_string"].decode())
    await asyncio.sleep(float(query.get("sleep", ["0"])[0]))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"upstream says hi"})


def main() -> None:
    cert, key, https_port, http_port, metrics_port = sys.argv[1:6]
    settings = load_settings(
        environ={
            "GATEWAY_SERVER__PUBLIC_HOSTS": "localhost",
            "GATEWAY_SERVER__TLS_CERT_FILE": cert,
            "GATEWAY_ASSERTION__KEY_FILES": "/nonexistent/assertion.pem",
            "GATEWAY_SERVER__TLS_KEY_FILE": key,
            "GATEWAY_SERVER__HTTPS_PORT": https_port,
        }
    )

    async def started() -> None:
        print("LIFESPAN STARTED", flush=True)

    async def stopped() -> None:
        print("LIFESPAN STOPPED", flush=True)

    metrics = GatewayMetrics()
    app = create_app(
        settings,
        authorizer=AllowAll(),
        sink=MemorySink(),
        forward=slow_upstream,
        lifecycle=Lifecycle(startup=[started], shutdown=[stopped]),
        metrics=metrics,
    )
    redirect = RedirectTarget(public_hosts=["localhost"], https_port=int(https_port))

    listeners = [
        Listener(
            "https",
            app,
            "127.0.0.1",
            int(https_port),
            ssl=lambda: build_ssl_context(Path(cert), Path(key)),
            lifespan=True,
        ),
        Listener("http", RedirectApp(redirect=redirect), "127.0.0.1", int(http_port)),
        Listener("metrics", MetricsApp(metrics=metrics), "127.0.0.1", int(metrics_port)),
    ]
    run(listeners, graceful_timeout=10, started=lambda: print("READY", flush=True))
    print("EXITED CLEANLY", flush=True)


if __name__ == "__main__":
    main()
