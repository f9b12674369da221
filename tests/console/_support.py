"""The console on its own, for page tests with Starlette's TestClient.

The gateway's stages are replaced by one small stage that writes the gateway state a request
would have after authenticate and authorize (an identity with a session id, an allow). The
stores are real (SQLite audit and hold stores in a temporary directory), the sink is a
:class:`audit.MemorySink`, and the policy is the shipped one.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.routing import Router
from starlette.testclient import TestClient

from audit import MemorySink, Scope, SQLiteStore
from console import Console, CsrfTokens
from gateway.oidc import MemoryRevocations, RevocationStore
from gateway.types import Decision, GatewayState, Identity, Receive, Send
from gateway.types import Scope as ASGIScope
from policies import PolicyStore
from retention import Holds
from retention._holdstore import SQLiteHoldStore
from tests.audit.test_store_contract import record, write

BASE = "https://gateway.test"
ISSUER = "https://idp.test"


def person(*roles: str, tenant: str | None = None, subject: str = "staff-1") -> Identity:
    return Identity(
        issuer=ISSUER,
        subject=subject,
        roles=frozenset(roles),
        tenant=tenant,
        method="session",
        session_id="session-" + subject,
    )


@dataclass
class World:
    """The console over real stores, and who is asking (change ``who`` per request)."""

    console: Console
    events: SQLiteStore
    sink: MemorySink
    revocations: RevocationStore
    holds: Holds
    who: Identity
    client: TestClient
    tokens: CsrfTokens

    def add_events(self, *events: dict[str, Any]) -> list[str]:
        records = [record(i, **fields) for i, fields in enumerate(events)]
        write(self.events, *records)
        return [r.event_id for r in records]

    def csrf(self) -> str:
        token = self.tokens.issue(self.who)
        assert token is not None
        return token

    def emitted(self, action: str) -> list[dict[str, Any]]:
        return [e for e in self.sink.events if e.get("event.action") == action]

    def all_events(self) -> list[dict[str, Any]]:
        return self.events.search(Scope(), size=1000)


@functools.cache
def shipped_policy() -> PolicyStore:
    """The shipped policy, loaded once (loading runs its test table and lint)."""
    return PolicyStore()


def world(
    tmp_path: Path, who: Identity, *, revocations: RevocationStore | None = None
) -> Iterator[World]:
    """The console as ``who`` sees it; ``revocations`` defaults to an in-memory store."""
    key = secrets.token_bytes(32)
    events = SQLiteStore(path=tmp_path / "audit.db")
    events.ensure_schema()
    sink = MemorySink()
    if revocations is None:
        revocations = MemoryRevocations()
    holds = Holds(store=SQLiteHoldStore(path=tmp_path / "audit.db"), sink=sink)
    console = Console(
        events=events,
        sink=sink,
        holds=holds,
        policy=shipped_policy(),
        revocations=revocations,
        session_lifetime=3600.0,
        session_keys=[key],
    )
    router = Router(routes=console.routes)
    holder: dict[str, World] = {}

    async def app(scope: ASGIScope, receive: Receive, send: Send) -> None:
        current = holder["world"].who
        scope["gateway"] = GatewayState(
            request_id="req-1",
            client_ip="192.0.2.10",
            scheme="https",
            host="gateway.test",
            path=scope["path"],
            identity=current,
            decision=Decision(allowed=True, reason="allowed"),
        )
        await router(scope, receive, send)

    client = TestClient(app, base_url=BASE, follow_redirects=False)
    made = World(console, events, sink, revocations, holds, who, client, CsrfTokens(keys=[key]))
    holder["world"] = made
    yield made
    client.close()
    events.close()
