"""Build the gateway's ASGI application from settings, once, at start-up."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

HEALTH_PATH = "/_gateway/health"


async def health(_request: Request) -> JSONResponse:
    """Liveness: the process runs and its event loop answers."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


def create_app() -> Starlette:
    return Starlette(routes=[Route(HEALTH_PATH, health, methods=["GET", "HEAD"])])
