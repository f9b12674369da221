"""What authenticating a request costs: session cookie and bearer token, against anonymous.

Run: ``.venv/bin/python -m bench.oidc_authn`` (as a module: run by path, ``bench/audit.py``
would shadow the ``audit`` package). Each case runs the authenticator directly on a prepared
ASGI scope (no HTTP), N times, and prints µs per call and the ratio to the baseline (a request
without credentials, which every authenticator declines) measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from audit import MemorySink
from gateway.oidc import (
    BearerAuthenticator,
    Grants,
    MemoryRevocations,
    MemoryState,
    Provider,
    RevocationStore,
    Sealer,
    SessionAuthenticator,
    SessionCodec,
    SQLiteRevocations,
    Throttle,
    load_claims,
)
from gateway.settings import IssuerSettings
from gateway.types import GatewayState

ROOT = Path(__file__).resolve().parents[1]
ISSUER = "https://idp.bench"
N = 5000


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": headers,
        "gateway": GatewayState(request_id="r", client_ip="192.0.2.1", path="/"),
    }


def _session(tmp: Path, revocations: RevocationStore) -> tuple[SessionAuthenticator, str]:
    codec = SessionCodec(
        sealer=Sealer(keys=[os.urandom(32), os.urandom(32)]),
        cookie_name="__Host-gw_session",
        idle_timeout=1800,
        absolute_timeout=43200,
        refresh_interval=300,
    )
    grants = Grants(path=tmp / "grants.toml", sink=MemorySink())
    auth = SessionAuthenticator(
        codec=codec, revocations=revocations, grants=grants, sink=MemorySink()
    )
    session = codec.new(
        idp="x", issuer=ISSUER, subject="s", roles=frozenset({"teacher"}), tenant="school-a"
    )
    return auth, codec.encode(session)


def _bearer(tmp: Path) -> tuple[BearerAuthenticator, RSAKey]:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/a",
                    "token_endpoint": f"{ISSUER}/t",
                    "jwks_uri": f"{ISSUER}/jwks",
                },
            )
        return httpx.Response(200, json={"keys": [key.as_dict(private=False)]})

    provider = Provider(
        name="bench",
        settings=IssuerSettings(
            discovery_url=f"{ISSUER}/.well-known/openid-configuration",
            client_id="c",
            claims="devidp",
            audiences=("platform-api",),
        ),
        client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        metadata_ttl=3600,
        refetch_cooldown=30,
    )
    auth = BearerAuthenticator(
        providers={"bench": provider},
        mappings=load_claims(ROOT / "policies" / "claims.toml"),
        grants=Grants(path=tmp / "grants.toml", sink=MemorySink()),
        throttle=Throttle(store=MemoryState(), max_failures=10, window=60, block=60),
        sink=MemorySink(),
        leeway=60,
    )
    return auth, key


def _token(key: RSAKey, n: int) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": f"s{n}",
        "aud": "platform-api",
        "exp": now + 600,
        "roles": ["supplier"],
        "tenant": "org-x",
    }
    return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)


async def _uncached(bearer: BearerAuthenticator, scope: dict[str, Any]) -> Any:
    bearer._cache.clear()  # every call verifies the signature and claims again
    return await bearer.authenticate(scope)


async def _time(call: Callable[[int], Awaitable[Any]], n: int = N) -> float:
    for i in range(min(n, 200)):  # warm up
        await call(i)
    started = time.perf_counter()
    for i in range(n):
        await call(i)
    return (time.perf_counter() - started) / n * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "grants.toml").write_text("grants = []\n")
        memory, cookie = _session(tmp, MemoryRevocations())
        sqlite, sqlite_cookie = _session(tmp, SQLiteRevocations(path=tmp / "r.sqlite"))
        bearer, key = _bearer(tmp)
        anonymous = _scope([])
        session_scope = _scope([(b"cookie", f"__Host-gw_session={cookie}".encode())])
        sqlite_scope = _scope([(b"cookie", f"__Host-gw_session={sqlite_cookie}".encode())])
        cached_token = _token(key, 0)
        cached_scope = _scope([(b"authorization", f"Bearer {cached_token}".encode())])
        fresh = [_token(key, i) for i in range(1, 1001)]
        cases: dict[str, Callable[[int], Awaitable[Any]]] = {
            "anonymous (baseline)": lambda i: memory.authenticate(anonymous),
            "session cookie, memory revocations": lambda i: memory.authenticate(session_scope),
            "session cookie, SQLite revocations": lambda i: sqlite.authenticate(sqlite_scope),
            "bearer JWT, cached": lambda i: bearer.authenticate(cached_scope),
            "bearer JWT, first use (RS256 verify)": lambda i: _uncached(
                bearer, _scope([(b"authorization", f"Bearer {fresh[i % 1000]}".encode())])
            ),
        }
        results: dict[str, float] = {}
        for label, call in cases.items():
            n = 1000 if "first use" in label else N
            results[label] = await _time(call, n)
        base = results["anonymous (baseline)"]
        print(f"{'case':42} {'µs/call':>10} {'x baseline':>11}")
        for label, micros in results.items():
            print(f"{label:42} {micros:10.2f} {micros / base:11.1f}")


if __name__ == "__main__":
    asyncio.run(main())
