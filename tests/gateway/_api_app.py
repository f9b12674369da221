"""A gateway serving its own JSON APIs over a seeded SQLite audit store, with the real policy.

The caller's identity is injected at the authenticate stage (as a logged-in session or bearer
token would set it); everything after that is the real gateway: host, path, policy decision,
routing, the audit API, the holds API and the OpenAPI document. Used by the OpenAPI test and
the fuzzing test (tests/security/test_fuzz_api.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import jsonschema_rs
import orjson

from audit import AuditSink, MemorySink, SQLiteStore
from gateway._wiring import _demo_assertion_key, jwks_route
from gateway.app import GatewayApp, create_app
from gateway.assertion import AssertionSigner, load_key
from gateway.audit_api import audit_routes
from gateway.openapi import openapi_route
from gateway.types import Identity, Scope
from policies import PolicyStore
from retention._holdstore import SQLiteHoldStore
from retention._service import Holds
from retention.api import holds_routes
from tests.audit.test_store_contract import record, write
from tests.gateway._asgi import Recorder
from tests.gateway.test_app import settings

HOST: Final = "platform.example.nl"
TENANTS: Final = ("school-a", "school-b")


def person(role: str, tenant: str | None = None, sub: str = "u1") -> Identity:
    return Identity(
        issuer="iss", subject=sub, roles=frozenset({role}), tenant=tenant, method="bearer"
    )


class AsWho:
    """An authenticator that has already logged ``who`` in (or declines for anonymous)."""

    name: ClassVar[str] = "as_who"

    def __init__(self, who: Identity | None) -> None:
        self.who = who

    async def authenticate(self, scope: Scope) -> Identity | None:
        return self.who


def seeded_store(path: Path, *, per_tenant: int = 6) -> SQLiteStore:
    """Events of two tenants: pupils' data read by staff, denials, some with error text."""
    store = SQLiteStore(path=path)
    store.ensure_schema()
    records = []
    for k in range(per_tenant):
        for t, tenant in enumerate(TENANTS):
            records.append(
                record(
                    k * 10 + t,
                    **{
                        "event.action": "personal_data_access" if k % 2 else "access_denied",
                        "organization.id": tenant,
                        "user.id": f"iss|staff-{tenant}-{k % 3}",
                        "user.roles": ["teacher"],
                        "user.target.id": f"iss|pupil-{tenant}-{k % 2}",
                        "source.ip": f"192.0.2.{10 + k}",
                        "url.path": f"/api/schools/{tenant}/students/{k}",
                        "http.response.status_code": 200 if k % 2 else 403,
                        "trace.id": f"req-{tenant}-{k}",
                        "rule.name": "school_staff_read",
                        "labels": {"data_tenant": tenant},
                    },
                )
            )
    write(store, *records)
    return store


def api_app(
    tmp_path: Path,
    who: Identity | None,
    *,
    store: SQLiteStore | None = None,
    sink: AuditSink | None = None,
) -> GatewayApp:
    """The gateway with the audit, holds, OpenAPI and JWKS routes, ``who`` logged in (session
    revocation, an OIDC route, is not mounted: the policy refuses it to these roles first)."""
    sink = sink if sink is not None else MemorySink()
    store = store if store is not None else seeded_store(tmp_path / "audit.db")
    holds = Holds(store=SQLiteHoldStore(path=tmp_path / "holds.db"), sink=sink)
    key = load_key(_demo_assertion_key(tmp_path / "keys").read_bytes())
    signer = AssertionSigner(keys=[key], issuer=f"https://{HOST}", audience="platform")
    return create_app(
        settings(),
        authorizer=PolicyStore(sink=sink),
        sink=sink,
        forward=Recorder(),
        authenticators=[AsWho(who)],
        routes=[
            *audit_routes(store=store, sink=sink),
            *holds_routes(holds=holds),
            openapi_route(),
            jwks_route(signer),
        ],
    )


class Conformance:
    """Checks answers against the document: the status is documented for the operation, the
    media type is one it lists, and a JSON body validates against that schema."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._validators: dict[tuple[str, str, str, str], Any] = {}

    def problems(
        self, method: str, template: str, status: int, content_type: str | None, body: bytes
    ) -> list[str]:
        operation = self.document["paths"][template][method.lower()]
        answer = operation["responses"].get(str(status))
        if answer is None:
            return [f"{method} {template}: status {status} is not documented"]
        media = (content_type or "").split(";")[0].strip()
        content = answer.get("content") or {}
        if not content:
            return [] if not body else [f"{method} {template} {status}: undocumented body"]
        if media not in content:
            return [f"{method} {template} {status}: media type {media!r} not in {list(content)}"]
        if not media.endswith("json"):
            return []
        key = (method, template, str(status), media)
        if key not in self._validators:
            schema = {**content[media]["schema"], "components": self.document["components"]}
            self._validators[key] = jsonschema_rs.validator_for(schema)
        try:
            instance = orjson.loads(body)
        except orjson.JSONDecodeError:
            return [f"{method} {template} {status}: body is not JSON"]
        return [
            f"{method} {template} {status}: {error.message} at {error.instance_path}"
            for error in self._validators[key].iter_errors(instance)
        ]
