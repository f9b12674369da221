"""Everything OIDC, built once from the settings: what ``gateway/_wiring.py`` plugs in.

    oidc = OIDC(settings=settings, sink=sink)
    create_app(
        settings,
        authenticators=oidc.authenticators,      # session cookie, then bearer token
        routes=oidc.routes,                      # /_gateway/login, callback, logout, ...
        login_path=oidc.login_path,
        lifecycle=Lifecycle(shutdown=[oidc.aclose]),
        ...,
    )

and the two small stages, placed after the https stage and before authenticate:
``SessionCookieStage`` (writes refreshed or cleared session cookies) and
``BearerThrottleStage`` (429 for client IPs blocked for too many rejected tokens); see
:meth:`OIDC.stages`. The policy must let anonymous callers reach ``/_gateway/login``,
``/_gateway/callback`` and ``/_gateway/backchannel-logout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from audit import AuditSink
from gateway.authn import Authenticator
from gateway.oidc._bearer import BearerAuthenticator, BearerThrottleStage
from gateway.oidc._claims import Grants, load_claims
from gateway.oidc._login import LOGIN_PATH, Login
from gateway.oidc._provider import Provider
from gateway.oidc._revocation import MemoryRevocations, RevocationStore, SQLiteRevocations
from gateway.oidc._revocation_journal import (
    JOURNAL_DIRECTORY,
    RevocationJournal,
    adopt_orphans,
)
from gateway.oidc._revocation_opensearch import OpenSearchRevocations
from gateway.oidc._session import Sealer, SessionCodec, decode_key
from gateway.oidc._sessions_authn import SessionAuthenticator, SessionCookieStage
from gateway.oidc._shared import MemoryState, OpenSearchState, SharedState, SQLiteState
from gateway.oidc._throttle import Throttle
from gateway.settings import Settings


class OIDC:
    """The OIDC component: authenticators, routes and stages for the gateway."""

    login_path = LOGIN_PATH

    def __init__(
        self,
        *,
        settings: Settings,
        sink: AuditSink,
        transport: httpx.AsyncBaseTransport | None = None,
        revocations: RevocationStore | None = None,
        shared: SharedState | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        oidc, session = settings.oidc, settings.session
        self.client = httpx.AsyncClient(
            transport=transport, timeout=float(oidc.http_timeout), follow_redirects=False
        )
        self.providers = {
            name: Provider(
                name=name,
                settings=issuer,
                client=self.client,
                metadata_ttl=float(oidc.metadata_ttl),
                refetch_cooldown=float(oidc.jwks_refetch_cooldown),
                clock=monotonic,
            )
            for name, issuer in oidc.issuers.items()
        }
        mappings = load_claims(oidc.claims_file)
        self.grants = Grants(path=oidc.grants_file, sink=sink, clock=monotonic)
        self.sealer = Sealer(keys=[decode_key(key.reveal()) for key in session.keys])
        self.codec = SessionCodec(
            sealer=self.sealer,
            cookie_name=session.cookie_name,
            idle_timeout=float(session.idle_timeout),
            absolute_timeout=float(session.absolute_timeout),
            refresh_interval=float(session.refresh_interval),
            roles_max_age=float(session.roles_max_age),
            clock=clock,
        )
        self.revocations = (
            revocations if revocations is not None else revocation_store(settings, clock=clock)
        )
        throttle = settings.throttle
        self.shared = shared if shared is not None else shared_state(settings, clock=clock)
        self.throttle = Throttle(
            store=self.shared,
            max_failures=throttle.max_failures,
            window=float(throttle.window),
            block=float(throttle.block),
            max_block=float(throttle.max_block),
            check_interval=float(throttle.check_interval),
            clock=clock,
        )
        self.login = Login(
            providers=self.providers,
            mappings=mappings,
            grants=self.grants,
            codec=self.codec,
            sealer=self.sealer,
            revocations=self.revocations,
            throttle=self.throttle,
            shared=self.shared,
            client=self.client,
            sink=sink,
            login_timeout=float(oidc.login_timeout),
            leeway=float(oidc.leeway),
            return_origins=oidc.return_origins,
            clock=clock,
        )
        self.session_authenticator = SessionAuthenticator(
            codec=self.codec, revocations=self.revocations, grants=self.grants, sink=sink
        )
        self.bearer_authenticator = BearerAuthenticator(
            providers=self.providers,
            mappings=mappings,
            grants=self.grants,
            throttle=self.throttle,
            sink=sink,
            leeway=float(oidc.leeway),
            clock=clock,
        )
        self._sink = sink

    @property
    def authenticators(self) -> Sequence[Authenticator]:
        return (self.session_authenticator, self.bearer_authenticator)

    @property
    def routes(self) -> Sequence[BaseRoute]:
        return self.login.routes()

    def stages(self) -> list[Middleware]:
        """The stages to place after https and before authenticate, in this order."""
        return [
            Middleware(SessionCookieStage),
            Middleware(BearerThrottleStage, throttle=self.throttle, sink=self._sink),
        ]

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """The revocation store's figures for the metrics listener (journal failures and
        revocations still queued, with the ``audit`` store on OpenSearch; none otherwise)."""
        source: Any = getattr(self.revocations, "samples", None)
        return list(source()) if callable(source) else []

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.shared.aclose()
        close: Any = getattr(self.revocations, "close", None)
        if callable(close):
            await asyncio.to_thread(close)


def shared_state(settings: Settings, *, clock: Callable[[], float] = time.time) -> SharedState:
    """The store of login states and throttle counters that ``oidc.shared_state`` names:
    the audit store's own backend (every instance shares it), or this process's memory."""
    if settings.oidc.shared_state == "memory":
        return MemoryState(max_entries=settings.throttle.max_tracked, clock=clock)
    audit = settings.audit
    if audit.store == "sqlite":
        return SQLiteState(path=audit.sqlite_path, clock=clock)
    return OpenSearchState(
        **audit.opensearch_access(),
        clock=clock,
    )


def revocation_store(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> RevocationStore:
    """The revocation record that ``session.revocation_store`` names: ``audit`` is the audit
    store's backend (an index of the audit cluster every instance polls, or the SQLite audit
    file), ``sqlite`` a file of its own, ``memory`` this process only."""
    session, audit = settings.session, settings.audit
    if session.revocation_store == "sqlite" and session.revocation_file is not None:
        return SQLiteRevocations(path=session.revocation_file, clock=clock)
    if session.revocation_store != "audit":
        return MemoryRevocations(clock=clock)
    if audit.store == "sqlite":
        return SQLiteRevocations(path=audit.sqlite_path, clock=clock)
    # Revocations the cluster has not taken yet survive a crash in a journal beside this
    # process's audit spool (one per process: each worker has its own spool directory).
    journal = RevocationJournal(directory=audit.spool_dir / JOURNAL_DIRECTORY)
    adopt_orphans(journal, spool_dir=audit.spool_dir, workers=settings.server.workers)
    return OpenSearchRevocations(
        **audit.opensearch_access(),
        poll_interval=float(session.revocation_poll_interval),
        max_staleness=float(session.revocation_max_staleness),
        journal=journal,
        clock=clock,
    )
