"""What authenticating a request costs: session cookie and bearer token, against anonymous.

Run: ``.venv/bin/python -m bench.oidc_authn [--opensearch URL]`` (as a module: run by path,
``bench/audit.py`` would shadow the ``audit`` package). Each case runs the authenticator directly
on a prepared ASGI scope (no HTTP), N times per round, the cases alternating over ``--rounds``
rounds, and prints the median µs per call and its ratio to the baseline (a request without
credentials, which every authenticator declines) measured in the same run.

With ``--opensearch`` the session cookie is also checked against the OpenSearch revocation
record (``session.revocation_store = "audit"``): its local copy, kept current by the polling
thread running meanwhile, holding ``REVOKED`` revoked sessions and subjects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey
from opensearchpy import OpenSearch

from audit import MemorySink
from gateway.oidc import (
    BearerAuthenticator,
    Grants,
    MemoryRevocations,
    MemoryState,
    OpenSearchRevocations,
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
REVOKED = 10_000


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


def _opensearch_revocations(url: str) -> OpenSearchRevocations:
    """A polled record in a throw-away index holding REVOKED sessions and subjects."""
    store = OpenSearchRevocations(url=url, index_prefix=f"bench-{os.getpid()}-", replicas=0)
    until = time.time() + 3600
    lines: list[dict[str, Any]] = []
    for n in range(REVOKED):
        kind, key = ("session", f"{n:064x}") if n % 2 else ("subject", f"{n:064x}")
        lines.append({"index": {"_index": store.index, "_id": f"{kind}-{key}"}})
        lines.append({"kind": kind, "key": key, "before": until - 7200, "until": until})
    store.sync()
    with contextlib.closing(OpenSearch(hosts=[url])) as client:
        client.bulk(body=lines, refresh="true")
    store.sync()
    return store


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--opensearch", help="an OpenSearch node for the polled record")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "grants.toml").write_text("grants = []\n")
        memory, cookie = _session(tmp, MemoryRevocations())
        sqlite, sqlite_cookie = _session(tmp, SQLiteRevocations(path=tmp / "r.sqlite"))
        polled = _opensearch_revocations(options.opensearch) if options.opensearch else None
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
        }
        if polled is not None:
            search, search_cookie = _session(tmp, polled)
            search_scope = _scope([(b"cookie", f"__Host-gw_session={search_cookie}".encode())])
            cases["session cookie, OpenSearch revocations"] = lambda i: search.authenticate(
                search_scope
            )
        cases |= {
            "bearer JWT, cached": lambda i: bearer.authenticate(cached_scope),
            "bearer JWT, first use (RS256 verify)": lambda i: _uncached(
                bearer, _scope([(b"authorization", f"Bearer {fresh[i % 1000]}".encode())])
            ),
        }
        # Rounds alternate the cases (the machine is shared): the median of each is printed.
        rounds: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(options.rounds):
            for label, call in cases.items():
                n = 1000 if "first use" in label else N
                rounds[label].append(await _time(call, n))
        results = {label: statistics.median(values) for label, values in rounds.items()}
        base = results["anonymous (baseline)"]
        print(f"{'case':42} {'µs/call':>10} {'x baseline':>11}")
        for label, micros in results.items():
            print(f"{label:42} {micros:10.2f} {micros / base:11.1f}")
        if polled is not None:
            polled.close()
            with contextlib.closing(OpenSearch(hosts=[options.opensearch])) as client:
                client.indices.delete(index=polled.index)
        else:
            print("(no --opensearch: the OpenSearch revocation record was not measured)")


if __name__ == "__main__":
    asyncio.run(main())
