"""A gateway for forwarding tests: fake early stages (they write the GatewayState as the https,
path and authenticate stages would), then optionally the mutate stage, then the forwarder."""

from __future__ import annotations

import os
import uuid

from audit import AuditSink, MemorySink
from gateway._upstream import ClientKind, create_upstream
from gateway.assertion import AssertionSigner, generate_key
from gateway.headers import MutateHeaders
from gateway.proxy import Forward
from gateway.types import (
    ANONYMOUS,
    SCOPE_KEY,
    ASGIApp,
    GatewayState,
    Identity,
    Receive,
    Scope,
    Send,
)


class FakeEarlyStages:
    """Stands in for the https, host, path and authenticate stages: writes the GatewayState."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        who: Identity = ANONYMOUS,
        client_ip: str = "192.0.2.10",
        host: str = "gateway.example",
    ) -> None:
        self.app = app
        self.who = who
        self.client_ip = client_ip
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[SCOPE_KEY] = GatewayState(
                request_id=uuid.uuid4().hex,
                client_ip=self.client_ip,
                scheme="https",
                host=self.host,
                path=scope["path"],
                identity=self.who,
            )
        await self.app(scope, receive, send)


def gateway_app(
    upstream_url: str,
    *,
    kind: ClientKind = "aiohttp",
    audit: AuditSink | None = None,
    who: Identity = ANONYMOUS,
    signer: AssertionSigner | None = None,
    read_timeout: float = 30.0,
    connect_timeout: float = 5.0,
) -> ASGIApp:
    client = create_upstream(
        kind, base_url=upstream_url, read_timeout=read_timeout, connect_timeout=connect_timeout
    )
    app: ASGIApp = Forward(client=client, audit=audit if audit is not None else MemorySink())
    if signer is not None:
        app = MutateHeaders(app, signer=signer)
    return FakeEarlyStages(app, who=who)


def gateway_from_env() -> ASGIApp:
    """Factory for ``uvicorn --factory`` in a subprocess: forward + mutate to $TEST_UPSTREAM."""
    signer = AssertionSigner(keys=[generate_key()], issuer="https://gw.test", audience="platform")
    kind: ClientKind = "httpx" if os.environ.get("TEST_CLIENT") == "httpx" else "aiohttp"
    return gateway_app(os.environ["TEST_UPSTREAM"], kind=kind, signer=signer)
