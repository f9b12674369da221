"""An echoing upstream for forwarding tests: a real Starlette app served by uvicorn (never a
mock) that reports what it received, so tests assert on what actually crossed the wire."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CHUNK = 64 * 1024


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
            "body": body.decode("latin-1"),
            "peer_port": request.client.port if request.client else None,
        },
        headers={"x-upstream": "echo"},
    )


async def status(request: Request) -> Response:
    return Response(b"upstream says no", status_code=int(request.path_params["code"]))


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "5")))
    return Response(b"late")


async def slow_body(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.sleep(float(request.query_params.get("s", "5")))
        yield b"second"

    return StreamingResponse(body())


async def download(request: Request) -> StreamingResponse:
    size = int(request.query_params["n"])
    block = b"x" * CHUNK

    async def body() -> AsyncIterator[bytes]:
        left = size
        while left > 0:
            part = block if left >= CHUNK else block[:left]
            left -= len(part)
            yield part

    return StreamingResponse(
        body(), headers={"content-length": str(size)}, media_type="application/octet-stream"
    )


#: Set when an endless download's generator ends (the gateway dropped the upstream connection).
ENDLESS_STOPPED = threading.Event()


async def endless(_request: Request) -> StreamingResponse:
    ENDLESS_STOPPED.clear()
    block = b"e" * CHUNK

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                yield block
                await asyncio.sleep(0.001)
        finally:
            ENDLESS_STOPPED.set()

    return StreamingResponse(body(), media_type="application/octet-stream")


async def upload(request: Request) -> JSONResponse:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
    return JSONResponse({"received": received})


async def set_cookie(_request: Request) -> Response:
    response = Response(b"ok")
    response.set_cookie("upstream_cookie", "secret-of-user-a")
    return response


async def set_session_cookie(_request: Request) -> Response:
    response = Response(b"ok")
    response.set_cookie("__Host-gw_session", "planted-by-upstream", secure=True)
    response.set_cookie("__HOST-GW_SESSION", "planted-in-capitals", secure=True)
    response.set_cookie("upstream_cookie", "kept")
    return response


async def banners(_request: Request) -> Response:
    """Software banners a real upstream sends (the gateway drops them)."""
    return Response(
        b"ok",
        headers={"Server": "Apache/2.4.1 (Unix)", "X-Powered-By": "PHP/5.3.2", "X-Kept": "1"},
    )


async def redirect(_request: Request) -> Response:
    return Response(status_code=302, headers={"location": "/echo"})


async def ws_echo(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=offered[0] if offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close-please":
                await websocket.close(code=4001)
                return
            if message.get("text") is not None:
                await websocket.send_text("echo:" + message["text"])
            else:
                await websocket.send_bytes(b"echo:" + message["bytes"])
    except WebSocketDisconnect:
        return


async def ws_headers(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json([[k.decode(), v.decode()] for k, v in websocket.headers.raw])
    await websocket.close()


def upstream_app() -> Starlette:
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/echo{rest:path}", echo, methods=methods),
            Route("/status/{code:int}", status, methods=methods),
            Route("/slow", slow),
            Route("/slow-body", slow_body),
            Route("/download", download),
            Route("/endless", endless),
            Route("/upload", upload, methods=["POST", "PUT"]),
            Route("/set-cookie", set_cookie),
            Route("/set-session-cookie", set_session_cookie),
            Route("/redirect", redirect),
            Route("/banners", banners),
            WebSocketRoute("/ws", ws_echo),
            WebSocketRoute("/ws-headers", ws_headers),
        ]
    )
