"""The holds API under ``/_gateway/holds`` (Starlette routes; JSON in, JSON out).

    GET  /_gateway/holds[?state=active|released|all]   {"holds": [...]}
    POST /_gateway/holds                                {"incident_id", "reason", "scope",
                                                         "review_at"?} -> 201 {"hold": {...}}
    POST /_gateway/holds/{hold_id}/release              {"reason"} -> 200 {"hold": {...}}

The gateway's authorize stage has already allowed the caller (policies/policy.csv: listing for
security officers and incident responders, placing and releasing for incident responders).
Errors answer ``{"error": code, "description": text}``: 400 ``invalid_json`` or
``invalid_hold``, 404 ``hold_not_found``, 409 ``hold_already_released``, 413
``body_too_large``, 403 ``no_user`` (a caller without a user id cannot be recorded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from audit import AuditSink
from audit.errors import StoreUnavailable
from gateway.types import identity
from retention._config import hold_store
from retention._holdstore import HoldStore
from retention._service import Holds
from retention.errors import InvalidHold, RetentionError

if TYPE_CHECKING:
    from gateway.settings import AuditSettings

__all__ = ["HOLDS_PATH", "HoldsAPI", "holds_api", "holds_routes"]

HOLDS_PATH: Final = "/_gateway/holds"
MAX_BODY: Final = 64 * 1024
_STATES: Final = {"active": True, "released": False, "all": None}
_NO_STORE: Final = {"cache-control": "no-store"}


def _error(code: str, description: str, status: int) -> JSONResponse:
    return JSONResponse(
        {"error": code, "description": description}, status_code=status, headers=_NO_STORE
    )


def _unavailable() -> JSONResponse:
    return _error("store_unavailable", "the audit store cannot be reached; try again later", 503)


class _BadRequest(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


async def _json_body(request: Request) -> Any:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _BadRequest(_error("body_too_large", f"at most {MAX_BODY} bytes", 413))
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _BadRequest(_error("invalid_json", "the body is not JSON", 400)) from None


def _caller(request: Request) -> str | None:
    return identity(request.scope).user_id


def holds_routes(*, holds: Holds) -> list[Route]:
    """The three routes, over ``holds`` (store calls run in the thread pool)."""

    async def list_holds(request: Request) -> JSONResponse:
        state = request.query_params.get("state", "all")
        if state not in _STATES:
            return _error("invalid_state", "state is active, released or all", 400)
        try:
            found = await run_in_threadpool(holds.list, active=_STATES[state])
        except StoreUnavailable:
            return _unavailable()
        return JSONResponse({"holds": [h.to_json() for h in found]}, headers=_NO_STORE)

    async def place(request: Request) -> JSONResponse:
        by = _caller(request)
        if by is None:
            return _error("no_user", "placing a hold needs an identified user", 403)
        try:
            body = await _json_body(request)
            hold = await run_in_threadpool(holds.place, body, by=by)
        except _BadRequest as exc:
            return exc.response
        except RetentionError as exc:
            return _error(exc.code, str(exc), exc.status_code)
        except StoreUnavailable:
            return _unavailable()
        return JSONResponse({"hold": hold.to_json()}, status_code=201, headers=_NO_STORE)

    async def release(request: Request) -> JSONResponse:
        by = _caller(request)
        if by is None:
            return _error("no_user", "releasing a hold needs an identified user", 403)
        try:
            body = await _json_body(request)
            if not isinstance(body, dict) or set(body) != {"reason"}:
                raise InvalidHold('body: expected {"reason": "..."}')
            hold = await run_in_threadpool(
                holds.release, request.path_params["hold_id"], by=by, reason=body["reason"]
            )
        except _BadRequest as exc:
            return exc.response
        except RetentionError as exc:
            return _error(exc.code, str(exc), exc.status_code)
        except StoreUnavailable:
            return _unavailable()
        return JSONResponse({"hold": hold.to_json()}, headers=_NO_STORE)

    return [
        Route(HOLDS_PATH, list_holds, methods=["GET"]),
        Route(HOLDS_PATH, place, methods=["POST"]),
        Route(HOLDS_PATH + "/{hold_id}/release", release, methods=["POST"]),
    ]


class HoldsAPI:
    """The routes over one hold store, and ``aclose`` for the gateway's shutdown."""

    def __init__(self, *, store: HoldStore, sink: AuditSink) -> None:
        self._store = store
        self.holds = Holds(store=store, sink=sink)  # the service, for the console's pages too
        self.routes = holds_routes(holds=self.holds)

    async def aclose(self) -> None:
        """Close the hold store's connection (a thread: closing may block briefly)."""
        await run_in_threadpool(self._store.close)


def holds_api(settings: AuditSettings, *, sink: AuditSink) -> HoldsAPI:
    """The routes over the hold store next to the configured audit store (for the gateway)."""
    return HoldsAPI(store=hold_store(settings), sink=sink)
