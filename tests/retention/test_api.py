"""retention/api.py: the holds API through the assembled gateway and the real policy."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from audit import MemorySink
from audit.errors import StoreUnavailable
from gateway.app import GatewayApp, create_app
from gateway.settings import load_settings
from gateway.types import Identity, Scope
from policies import PolicyStore
from retention._holdstore import SQLiteHoldStore
from retention._service import Holds
from retention.api import HoldsAPI, holds_routes
from tests.gateway._asgi import Recorder, call, http_scope

NOW = datetime(2027, 1, 10, 9, 30, tzinfo=UTC)
ISSUER = "https://idp.example"


class HeaderAuthenticator:
    """Test identity from ``x-test-role`` (and ``x-test-user``); anonymous without it."""

    name: ClassVar[str] = "test"

    async def authenticate(self, scope: Scope) -> Identity | None:
        headers = dict(scope["headers"])
        role = headers.get(b"x-test-role")
        if role is None:
            return None
        return Identity(
            issuer=ISSUER,
            subject=headers.get(b"x-test-user", b"sam").decode(),
            roles=frozenset({role.decode()}),
            tenant=None,
            method="bearer",
        )


class Gateway:
    def __init__(self, tmp_path: Path) -> None:
        self.sink = MemorySink()
        self.store = SQLiteHoldStore(path=tmp_path / "audit.db")
        self.store.ensure_schema()
        holds = Holds(store=self.store, sink=self.sink, clock=lambda: NOW)
        settings = load_settings(
            environ={
                "GATEWAY_SERVER__PUBLIC_HOSTS": "platform.example.nl",
                "GATEWAY_SERVER__TLS_CERT_FILE": "/nonexistent/cert.pem",
                "GATEWAY_ASSERTION__KEY_FILES": "/nonexistent/assertion.pem",
                "GATEWAY_SERVER__TLS_KEY_FILE": "/nonexistent/key.pem",
            }
        )
        policy = PolicyStore(sink=self.sink)
        self.app: GatewayApp = create_app(
            settings,
            authorizer=policy,
            sink=self.sink,
            forward=Recorder(),
            authenticators=[HeaderAuthenticator()],
            routes=holds_routes(holds=holds),
            personal_data=policy.personal_data,
        )

    async def request(
        self, method: str, path: str, body: Any = None, role: str | None = "incident_responder"
    ) -> tuple[int, Any]:
        headers = [("accept", "application/json")]
        if role is not None:
            headers.append(("x-test-role", role))
        raw = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
        if body is not None:
            headers.append(("content-type", "application/json"))
        query = b""
        if "?" in path:
            path, q = path.split("?", 1)
            query = q.encode()
        result = await call(
            self.app, http_scope(path, method=method, headers=headers, query=query), raw
        )
        try:
            return result.status, orjson.loads(result.body)
        except orjson.JSONDecodeError:
            return result.status, result.body


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    made = Gateway(tmp_path)
    yield made
    made.store.close()


VALID = {
    "incident_id": "INC-2027-004",
    "reason": "suspected account takeover",
    "scope": {"user_ids": [f"{ISSUER}|mallory"], "source_ips": ["203.0.113.0/24"]},
}


class TestPlace:
    async def test_responder_places_hold(self, gateway: Gateway) -> None:
        """An incident responder places a hold: 201, stored, and a hold_placed event."""
        status, body = await gateway.request("POST", "/_gateway/holds", VALID)
        assert status == 201
        hold = body["hold"]
        assert hold["placed_by"] == f"{ISSUER}|sam"
        assert hold["placed_at"] == NOW.isoformat()
        assert hold["active"] is True
        assert [h.hold_id for h in gateway.store.holds()] == [hold["hold_id"]]
        [event] = [e for e in gateway.sink.events if e["event.action"] == "hold_placed"]
        assert event["user.id"] == f"{ISSUER}|sam"
        assert event["labels"]["hold_id"] == hold["hold_id"]
        assert event["labels"]["incident_id"] == "INC-2027-004"

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            (b"{not json", "invalid_json"),
            ({**VALID, "scope": {}}, "invalid_hold"),
            ({**VALID, "incident_id": ""}, "invalid_hold"),
            ({**VALID, "scope": {"source_ips": ["999.1.1.1"]}}, "invalid_hold"),
        ],
    )
    async def test_bad_request_is_400_and_stores_nothing(
        self, gateway: Gateway, body: Any, code: str
    ) -> None:
        """A malformed request is a 400 with a stable code and a description; nothing stored."""
        status, answer = await gateway.request("POST", "/_gateway/holds", body)
        assert status == 400
        assert answer["error"] == code
        assert answer["description"]
        assert gateway.store.holds() == []
        assert "hold_placed" not in gateway.sink.actions()

    async def test_security_officer_may_not_place(self, gateway: Gateway) -> None:
        """The policy lets only incident responders place holds."""
        status, _ = await gateway.request("POST", "/_gateway/holds", VALID, "security_officer")
        assert status == 403
        assert gateway.store.holds() == []

    async def test_anonymous_refused(self, gateway: Gateway) -> None:
        """Without authentication the API answers 401."""
        status, _ = await gateway.request("POST", "/_gateway/holds", VALID, role=None)
        assert status == 401


class TestListAndRelease:
    async def test_list_for_security_officer(self, gateway: Gateway) -> None:
        """A security officer lists holds."""
        await gateway.request("POST", "/_gateway/holds", VALID)
        status, body = await gateway.request("GET", "/_gateway/holds", role="security_officer")
        assert status == 200
        assert [h["incident_id"] for h in body["holds"]] == ["INC-2027-004"]

    async def test_release_then_listed_as_released(self, gateway: Gateway) -> None:
        """A released hold is kept and listed as released, with a hold_released event."""
        _, placed = await gateway.request("POST", "/_gateway/holds", VALID)
        hold_id = placed["hold"]["hold_id"]
        status, body = await gateway.request(
            "POST", f"/_gateway/holds/{hold_id}/release", {"reason": "incident closed"}
        )
        assert status == 200
        assert body["hold"]["release_reason"] == "incident closed"
        _, active = await gateway.request("GET", "/_gateway/holds?state=active")
        _, released = await gateway.request("GET", "/_gateway/holds?state=released")
        assert active["holds"] == []
        assert [h["hold_id"] for h in released["holds"]] == [hold_id]
        assert gateway.sink.actions().count("hold_released") == 1

    async def test_second_release_is_409(self, gateway: Gateway) -> None:
        """A hold is released once."""
        _, placed = await gateway.request("POST", "/_gateway/holds", VALID)
        path = f"/_gateway/holds/{placed['hold']['hold_id']}/release"
        await gateway.request("POST", path, {"reason": "closed"})
        status, body = await gateway.request("POST", path, {"reason": "again"})
        assert (status, body["error"]) == (409, "hold_already_released")

    async def test_unknown_hold_is_404(self, gateway: Gateway) -> None:
        """Releasing a hold that does not exist says so."""
        status, body = await gateway.request(
            "POST", "/_gateway/holds/nope/release", {"reason": "closed"}
        )
        assert (status, body["error"]) == (404, "hold_not_found")

    async def test_release_needs_reason(self, gateway: Gateway) -> None:
        """A release without a reason is a 400 and the hold stays active."""
        _, placed = await gateway.request("POST", "/_gateway/holds", VALID)
        status, body = await gateway.request(
            "POST", f"/_gateway/holds/{placed['hold']['hold_id']}/release", {}
        )
        assert (status, body["error"]) == (400, "invalid_hold")
        assert gateway.store.holds(active=True) != []

    async def test_bad_state_filter(self, gateway: Gateway) -> None:
        """An unknown state filter is a 400."""
        status, body = await gateway.request("GET", "/_gateway/holds?state=deleted")
        assert (status, body["error"]) == (400, "invalid_state")


class _DownStore(SQLiteHoldStore):
    """A hold store whose database cannot be reached."""

    def holds(self, active: bool | None = None) -> list[Any]:
        raise StoreUnavailable("database is locked")

    def add(self, hold: Any) -> None:
        raise StoreUnavailable("database is locked")


class TestStoreDown:
    async def test_store_down_is_a_503_with_a_code(self, tmp_path: Path) -> None:
        """With the hold store unreachable, listing and placing answer 503 store_unavailable
        (not a generic 500), and no hold_placed event claims a hold that was not stored."""
        gateway = Gateway(tmp_path)
        down = _DownStore(path=tmp_path / "down.db")
        holds = Holds(store=down, sink=gateway.sink, clock=lambda: NOW)
        app = create_app(
            load_settings(
                environ={
                    "GATEWAY_SERVER__PUBLIC_HOSTS": "platform.example.nl",
                    "GATEWAY_SERVER__TLS_CERT_FILE": "/nonexistent/cert.pem",
                    "GATEWAY_ASSERTION__KEY_FILES": "/nonexistent/assertion.pem",
                    "GATEWAY_SERVER__TLS_KEY_FILE": "/nonexistent/key.pem",
                }
            ),
            authorizer=PolicyStore(sink=gateway.sink),
            sink=gateway.sink,
            forward=Recorder(),
            authenticators=[HeaderAuthenticator()],
            routes=holds_routes(holds=holds),
        )
        gateway.app = app
        status, body = await gateway.request("GET", "/_gateway/holds")
        assert (status, body["error"]) == (503, "store_unavailable")
        status, body = await gateway.request(
            "POST",
            "/_gateway/holds",
            {"incident_id": "INC-1", "reason": "r", "scope": {"user_ids": ["https://idp|1"]}},
        )
        assert (status, body["error"]) == (503, "store_unavailable")
        assert "hold_placed" not in gateway.sink.actions()


class TestLifecycle:
    async def test_aclose_closes_the_hold_store(self, tmp_path: Path) -> None:
        """The gateway's shutdown hook closes the hold store's connection."""
        store = SQLiteHoldStore(path=tmp_path / "audit.db")
        store.ensure_schema()
        api = HoldsAPI(store=store, sink=MemorySink())
        assert store.holds() == []
        await api.aclose()
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            store.holds()
