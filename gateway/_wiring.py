"""Build the running gateway from settings: components, listeners, signals, demo mode.

Everything is built once, before the first request: the audit worker (the pipeline with its
spool and store, in a process of its own: ``audit/_worker.py``), the
policy store (which refuses to start on a broken policy), the assertion signer, the upstream
client and the stages. SIGHUP and file changes reload the policy; SIGTERM drains in-flight
requests, then flushes the audit queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from audit import (
    AuditPipeline,
    AuditStore,
    AuditWorker,
    Category,
    DigestWriter,
    Keyring,
    PersonMapFile,
    RetentionRecorder,
    SubjectExporter,
    WorkerSpec,
    digest_store_beside,
    opensearch_store,
    sqlite_store,
)
from audit._pipeline import FullPolicy
from audit._spool import Spool
from audit.processors import Pseudonymise, Pseudonymiser
from console import Console
from gateway._heap import HeapRefreezer
from gateway._upstream import create_upstream
from gateway.app import GatewayApp, Lifecycle, create_app
from gateway.assertion import AssertionSigner, load_key
from gateway.audit_api import audit_routes
from gateway.headers import MutateHeaders
from gateway.https import RedirectApp, RedirectTarget
from gateway.metrics import GatewayMetrics, MetricsApp
from gateway.oidc import OIDC, decode_key, new_key
from gateway.openapi import openapi_route
from gateway.proxy import Forward
from gateway.server import Listener, bind_reuseport, run, supervise
from gateway.settings import (
    AuditSettings,
    IssuerSettings,
    Secret,
    Settings,
    SettingsError,
    load_settings,
    with_overrides,
)
from gateway.tls import build_ssl_context, ensure_self_signed
from policies import PolicyError, PolicyStore
from policies._store import DEFAULT_MODEL, DEFAULT_POLICY, DEFAULT_RESOURCES, DEFAULT_TABLE
from policies._watch import PolicyWatcher
from retention import parse_rules
from retention.api import holds_api

logger = logging.getLogger("gateway")

JWKS_PATH = "/_gateway/jwks.json"
AUDIT_KEYS_PATH = "/_gateway/audit-keys.json"
DEVIDP_API_AUDIENCE = "platform-api"  # the audience of devidp's access tokens
UPSTREAM_PROBE_TIMEOUT = 2.0
POLICY_WATCH_INTERVAL = 2.0


@dataclass
class Gateway:
    """The built gateway and the parts that signals and shutdown need to reach."""

    app: GatewayApp
    listeners: list[Listener]
    policy: PolicyStore
    audit: AuditWorker
    lifecycle: Lifecycle = field(default_factory=Lifecycle)

    def reload_policy(self) -> None:
        """SIGHUP: reload in a thread (reading and checking files blocks)."""
        asyncio.get_running_loop().run_in_executor(None, self.policy.reload)


def audit_store(settings: AuditSettings) -> AuditStore:
    if settings.store == "sqlite":
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite_store(path=settings.sqlite_path)
    return opensearch_store(
        **settings.opensearch_access(),
        shards=settings.shards,
    )


def audit_keyring(settings: AuditSettings) -> Keyring | None:
    """The tamper-evidence keys: the signing key(s), plus retired public keys; None if unset."""
    retired = None
    if settings.verifier_keys_file is not None:
        try:
            retired = settings.verifier_keys_file.read_bytes()
        except OSError as exc:
            raise ValueError(
                f"audit.verifier_keys_file: cannot read {settings.verifier_keys_file}"
                f" ({exc.strerror})"
            ) from exc
    if settings.signing_key is not None:
        try:
            return Keyring.from_pem(settings.signing_key.reveal().encode(), public_jwks=retired)
        except ValueError as exc:
            raise ValueError(f"audit: signing or verifier keys: {exc}") from exc
    if retired is not None:
        try:
            return Keyring.from_jwks(retired)
        except ValueError as exc:
            raise ValueError(f"audit.verifier_keys_file: {exc}") from exc
    return None


def digest_writer(
    settings: AuditSettings, keyring: Keyring | None, store: AuditStore
) -> DigestWriter | None:
    """The shipper's digest writer when a signing key is configured (state in the spool)."""
    if keyring is None or not keyring.can_sign:
        return None
    return DigestWriter(
        directory=settings.spool_dir / "chain",
        keyring=keyring,
        store=digest_store_beside(store),
        instance=settings.instance_id,
        interval=float(settings.digest_interval),
    )


def retention_recorder(settings: Settings, store: AuditStore) -> RetentionRecorder | None:
    """Signed records of retention's changes, when a signing key is configured."""
    keyring = audit_keyring(settings.audit)
    if keyring is None or not keyring.can_sign:
        return None
    rules: dict[str, str] = {}
    for category, rule in parse_rules(settings.retention.rules).items():
        full = rule.full_detail
        detail = "kept whole" if full is None else f"{full.days} days full detail"
        rules[category.value] = f"{detail}, deleted after {rule.delete_after.days} days"
    return RetentionRecorder(
        events=store, digests=digest_store_beside(store), keyring=keyring, rules=rules
    )


def audit_keys_route(keyring: Keyring) -> Route:
    async def audit_keys(_request: Request) -> Response:
        """The public keys of the audit digest chain, for verifiers."""
        return Response(
            keyring.jwks_json(),
            media_type="application/jwk-set+json",
            headers={"cache-control": "public, max-age=300"},
        )

    return Route(AUDIT_KEYS_PATH, audit_keys, methods=["GET", "HEAD"])


def audit_pipeline(
    settings: AuditSettings,
    store: AuditStore | None = None,
    digests: DigestWriter | None = None,
) -> AuditPipeline:
    """The audit pipeline (called in the audit worker's process by :func:`audit_worker`).

    With a signing key configured and no ``digests`` given, it builds its digest writer here,
    in the process that ships: the chain's state follows the shipper, and the pipeline closes
    the writer (the open interval's digest) after its shipper stopped."""
    store = store if store is not None else audit_store(settings)
    if digests is None:
        digests = digest_writer(settings, audit_keyring(settings), store)
    pseudonymise = None
    if settings.pseudonym_key is not None and settings.pseudonymise_fields:
        pseudonymise = Pseudonymise(
            pseudonymiser=Pseudonymiser(key=settings.pseudonym_key.reveal().encode()),
            fields=settings.pseudonymise_fields,
        )
    return AuditPipeline(
        store=store,
        spool_dir=settings.spool_dir,
        spool_max_bytes=settings.spool_max_bytes,
        fsync=settings.fsync,
        full_policy={
            Category(name): cast(FullPolicy, value)
            for name, value in settings.full_policy().items()
        },
        pseudonymise=pseudonymise,
        on_shipped=digests,
    )


def audit_worker(settings: AuditSettings) -> AuditWorker:
    """The audit pipeline of :func:`audit_pipeline`, run in a supervised process of its own:
    the request path only enqueues (measured in ``bench/gateway.py``: the chain, spool writer
    and shipper cost as much CPU as forwarding, and they no longer share the GIL)."""
    return AuditWorker(
        spec=WorkerSpec("gateway._wiring:audit_pipeline", (settings,)),
        full_policy={
            Category(name): cast(FullPolicy, value)
            for name, value in settings.full_policy().items()
        },
    )


def assertion_signer(settings: Settings) -> AssertionSigner:
    keys = []
    for path in settings.assertion.key_files:
        try:
            keys.append(load_key(path.read_bytes()))
        except OSError as exc:
            raise ValueError(f"assertion.key_files: cannot read {path} ({exc.strerror})") from exc
        except ValueError as exc:
            raise ValueError(f"assertion.key_files: {path}: {exc}") from exc
    issuer = settings.assertion.issuer or f"https://{settings.server.public_hosts[0]}"
    return AssertionSigner(
        keys=keys,
        issuer=issuer,
        audience=settings.assertion.audience,
        lifetime=int(settings.assertion.lifetime),
    )


def upstream_probe(url: str) -> Callable[[], Any]:
    """Readiness: a TCP connection to the upstream opens in time."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)

    async def probe() -> bool:
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), UPSTREAM_PROBE_TIMEOUT
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    return probe


def jwks_route(signer: AssertionSigner) -> Route:
    async def jwks(_request: Request) -> Response:
        """The public keys of the identity assertion, for the upstream to verify it."""
        return Response(
            signer.jwks_json(),
            media_type="application/jwk-set+json",
            headers={"cache-control": "public, max-age=300"},
        )

    return Route(JWKS_PATH, jwks, methods=["GET", "HEAD"])


def cursor_key(settings: Settings) -> bytes | None:
    """The audit search cursors' signing key, derived from the first session key so every
    instance sharing the session keys accepts the others' cursors (None: a key per process)."""
    if not settings.session.keys:
        return None
    secret = settings.session.keys[0].reveal().encode()
    return hmac.new(secret, b"audit-search-cursor-v1", hashlib.sha256).digest()


def _policy_samples(store: PolicyStore) -> Iterable[tuple[str, Mapping[str, str], float]]:
    yield ("gateway_policy_reloads_total", {"outcome": "success"}, store.reloads_succeeded)
    yield ("gateway_policy_reloads_total", {"outcome": "failure"}, store.reloads_failed)


def build(settings: Settings) -> Gateway:
    """Every component, from the settings; raises ValueError/PolicyError naming what is wrong."""
    events = audit_store(settings.audit)  # shipped to by the pipeline, read by the audit API
    keyring = audit_keyring(settings.audit)  # the worker builds its own digest writer
    pipeline = audit_worker(settings.audit)
    files = settings.policy
    store = PolicyStore(
        model_path=files.model_file or DEFAULT_MODEL,
        policy_path=files.policy_file or DEFAULT_POLICY,
        resources_path=files.resources_file or DEFAULT_RESOURCES,
        table_path=files.tests_file or DEFAULT_TABLE,
        sink=pipeline,
    )
    signer = assertion_signer(settings)
    client = create_upstream(
        settings.upstream.client,
        base_url=settings.upstream.url,
        connect_timeout=float(settings.upstream.connect_timeout),
        read_timeout=float(settings.upstream.read_timeout),
        pool_size=settings.upstream.pool_size,
    )
    forward = Forward(client=client, audit=pipeline, methods=settings.upstream.methods)
    metrics = GatewayMetrics()
    metrics.export(lambda: pipeline.metrics().samples())
    metrics.export(lambda: _policy_samples(store))
    lifecycle = Lifecycle()
    heap = HeapRefreezer()
    lifecycle.startup.append(pipeline.start)
    lifecycle.shutdown.append(pipeline.aclose)  # runs last: shutdown hooks run in reverse
    lifecycle.shutdown.append(forward.aclose)
    lifecycle.shutdown.append(heap.stop)
    if settings.policy.watch:
        _watch_policy(store, lifecycle)
    oidc = OIDC(settings=settings, sink=pipeline) if settings.oidc.issuers else None
    if oidc is not None:
        lifecycle.shutdown.append(oidc.aclose)
        metrics.export(oidc.samples)
    holds = holds_api(settings.audit, sink=pipeline)
    persons = (
        PersonMapFile(path=settings.audit.person_map_file)
        if settings.audit.person_map_file is not None
        else None
    )
    lifecycle.shutdown.append(holds.aclose)  # before the pipeline: shutdown runs in reverse
    console = (
        Console(
            events=events,
            sink=pipeline,
            holds=holds.holds,
            policy=store,
            revocations=oidc.revocations,
            session_lifetime=float(settings.session.absolute_timeout),
            session_keys=[decode_key(key.reveal()) for key in settings.session.keys],
            stats_threshold=settings.audit.stats_min_group_size,
            exporter=SubjectExporter(
                store=events,
                sink=pipeline,
                pseudonymise_staff=settings.audit.export_pseudonymise_staff,
                persons=persons,
            ),
        )
        if oidc is not None
        else None
    )
    lifecycle.startup.append(heap.start)  # last: everything built at start-up is frozen
    app = create_app(
        settings,
        authorizer=store,
        sink=pipeline,
        forward=MutateHeaders(forward, signer=signer, session_cookie=settings.session.cookie_name),
        authenticators=oidc.authenticators if oidc else (),
        routes=[
            jwks_route(signer),
            *([audit_keys_route(keyring)] if keyring is not None else []),
            *(oidc.routes if oidc else ()),
            *holds.routes,
            *audit_routes(
                store=events,
                sink=pipeline,
                cursor_key=cursor_key(settings),
                pseudonymise_staff=settings.audit.export_pseudonymise_staff,
                persons=persons,
                stats_threshold=settings.audit.stats_min_group_size,
            ),
            openapi_route(),
            *(console.routes if console else ()),
        ],
        login_path=oidc.login_path if oidc else None,
        before_authenticate=oidc.stages() if oidc else (),
        readiness={"upstream": upstream_probe(settings.upstream.url), "audit": pipeline.ready},
        personal_data=store.personal_data,
        lifecycle=lifecycle,
        metrics=metrics,
    )
    return Gateway(
        app=app,
        listeners=listeners(settings, app, metrics),
        policy=store,
        audit=pipeline,
        lifecycle=lifecycle,
    )


def _watch_policy(store: PolicyStore, lifecycle: Lifecycle) -> None:
    watcher = PolicyWatcher(store, interval=POLICY_WATCH_INTERVAL)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(watcher.run(stop), name="policy-watcher"))

    async def halt() -> None:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    lifecycle.startup.append(start)
    lifecycle.shutdown.append(halt)


def listeners(settings: Settings, app: GatewayApp, metrics: GatewayMetrics) -> list[Listener]:
    server = settings.server
    found = [_main_listener(settings, app)]
    if server.http_port and not server.allow_plain_http:
        redirect = RedirectTarget(
            public_hosts=server.public_hosts, https_port=settings.redirect_port
        )
        found.append(
            Listener("http-redirect", RedirectApp(redirect=redirect), server.host, server.http_port)
        )
    if server.metrics_port:
        found.append(
            Listener(
                "metrics", MetricsApp(metrics=metrics), server.metrics_host, server.metrics_port
            )
        )
    return found


def _main_listener(settings: Settings, app: GatewayApp) -> Listener:
    server = settings.server
    cert, key = server.tls_cert_file, server.tls_key_file
    if cert is None or key is None:
        return Listener("http", app, server.host, server.https_port, lifespan=True)
    password = server.tls_key_password.reveal() if server.tls_key_password else None
    build_ssl_context(cert, key, password)  # fail now, with a clear message, not in the loop
    return Listener(
        "https",
        app,
        server.host,
        server.https_port,
        ssl=lambda: build_ssl_context(cert, key, password),
        lifespan=True,
    )


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def start(settings: Settings, *, banner: Callable[[Gateway], None] | None = None) -> int:
    _configure_logging()
    for relaxation in settings.relaxations():
        logger.warning("security relaxed by setting: %s", relaxation)
    if settings.server.workers > 1:
        return start_workers(settings)
    try:
        gateway = build(settings)
    except (ValueError, PolicyError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2

    def announce() -> None:
        for listener in gateway.listeners:
            print(f"gateway {listener.name} listener at {listener.url}", flush=True)
        if banner is not None:
            banner(gateway)

    run(
        gateway.listeners,
        graceful_timeout=float(settings.server.graceful_timeout),
        started=announce,
        on_hangup=gateway.reload_policy,
        head_timeout=float(settings.server.request_head_timeout),
    )
    return 0


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own audit spool (``worker-N`` under the spool directory
    for N >= 1; worker 0 keeps the directory itself), its own digest chain (a configured
    ``audit.instance_id`` gets ``-wN``; the default one is kept per spool directory anyway)
    and its own metrics port."""
    if index == 0:
        return settings
    metrics = settings.server.metrics_port
    audit: dict[str, Any] = {"spool_dir": settings.audit.spool_dir / f"worker-{index}"}
    if settings.audit.instance_id:
        audit["instance_id"] = f"{settings.audit.instance_id}-w{index}"
    return with_overrides(
        settings,
        audit=audit,
        server={"metrics_port": metrics + index if metrics else 0},
    )


def orphaned_spools(settings: Settings) -> list[Path]:
    """Spools of workers beyond ``server.workers`` that still hold events (none is lost:
    the gateway refuses to start until enough workers replay them)."""
    found = []
    for path in sorted(settings.audit.spool_dir.glob("worker-*")):
        index = path.name.removeprefix("worker-")
        if not index.isdigit() or int(index) < settings.server.workers:
            continue
        if any(path.glob("*.seg")) and spool_unshipped(path):
            found.append(path)
    return found


def start_workers(settings: Settings) -> int:
    """``server.workers`` processes on SO_REUSEPORT sockets bound here, before any forks."""
    workers = settings.server.workers
    orphans = orphaned_spools(settings)
    if orphans:
        names = ", ".join(str(path) for path in orphans)
        print(
            f"cannot start: unshipped audit events in the spool of a worker beyond "
            f"server.workers = {workers}: {names}; start with more workers once to ship them",
            file=sys.stderr,
        )
        return 2
    sockets: list[dict[str, socket.socket]] = []
    try:
        for index in range(workers):
            addresses = listener_addresses(worker_settings(settings, index))
            sockets.append({})
            for name, (host, port) in addresses.items():
                sockets[-1][name] = bind_reuseport(host, port)
    except OSError as exc:
        _close_all(sockets)
        print(f"cannot start: cannot bind the listeners ({exc})", file=sys.stderr)
        return 2

    def serve_worker(index: int) -> int:
        mine = worker_settings(settings, index)
        try:
            gateway = build(mine)
        except (ValueError, PolicyError) as exc:
            print(f"cannot start worker {index}: {exc}", file=sys.stderr)
            return 2

        def announce() -> None:
            for listener in gateway.listeners:
                print(f"gateway worker {index} {listener.name} at {listener.url}", flush=True)

        run(
            gateway.listeners,
            graceful_timeout=float(settings.server.graceful_timeout),
            started=announce,
            on_hangup=gateway.reload_policy,
            head_timeout=float(settings.server.request_head_timeout),
            sockets=sockets[index],
        )
        return 0

    try:
        return supervise(workers, serve_worker)
    finally:
        _close_all(sockets)


def _close_all(sockets: list[dict[str, socket.socket]]) -> None:
    for mine in sockets:
        for sock in mine.values():
            sock.close()


def listener_addresses(settings: Settings) -> dict[str, tuple[str, int]]:
    """The (host, port) of every listener :func:`listeners` builds, by listener name."""
    server = settings.server
    tls = server.tls_cert_file is not None and server.tls_key_file is not None
    found = {"https" if tls else "http": (server.host, server.https_port)}
    if server.http_port and not server.allow_plain_http:
        found["http-redirect"] = (server.host, server.http_port)
    if server.metrics_port:
        found["metrics"] = (server.metrics_host, server.metrics_port)
    return found


def spool_unshipped(directory: Path) -> bool:
    """Whether the spool in ``directory`` holds records not yet stored (it must be unused)."""
    spool = Spool(directory=directory)
    try:
        return not spool.is_empty()
    finally:
        spool.close()


def run_from_settings(config: Path | None) -> int:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        return 2
    return start(settings)


# --- demo mode --------------------------------------------------------------------------------

DEMO_HOSTS = ("localhost", "127.0.0.1")


def _demo_assertion_key(directory: Path) -> Path:
    path = directory / "assertion-key.pem"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        path.touch(mode=0o600)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def _demo_audit_signing_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


def _demo_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in the demo state directory, made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()


def demo_settings(config: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Demo mode: self-signed TLS for localhost, a generated assertion key, the demo upstream
    on its own port, the dev identity provider (unless issuers are configured), and audit
    events in SQLite, all under ``demo.state_dir``."""
    environ = os.environ if environ is None else environ
    settings = load_settings(config, environ={**environ, "GATEWAY_DEMO__ENABLED": "true"})
    state = settings.demo.state_dir
    hosts = settings.server.public_hosts or DEMO_HOSTS
    cert, key = ensure_self_signed(state / "tls", list(hosts))
    oidc, session = settings.oidc, settings.session
    if not oidc.issuers:
        idp = f"http://127.0.0.1:{settings.demo.idp_port}"
        secret = _demo_secret(state / "devidp-client-secret", lambda: secrets.token_urlsafe(32))
        issuer = IssuerSettings(
            discovery_url=f"{idp}/.well-known/openid-configuration",
            client_id="gateway",
            client_secret=Secret(secret),
            claims="devidp",
            display_name="Demo (dev identity provider)",
            audiences=(DEVIDP_API_AUDIENCE,),
        )
        oidc = replace(oidc, issuers=MappingProxyType({"devidp": issuer}))
    if not session.keys:
        session = replace(session, keys=(Secret(_demo_secret(state / "session.key", new_key)),))
    settings = replace(settings, oidc=oidc, session=session)
    return with_overrides(
        settings,
        server={
            "host": "127.0.0.1",
            "public_hosts": hosts,
            "tls_cert_file": cert,
            "tls_key_file": key,
        },
        upstream={"url": f"http://127.0.0.1:{settings.demo.upstream_port}"},
        assertion={"key_files": settings.assertion.key_files or (_demo_assertion_key(state),)},
        audit={
            "sqlite_path": state / "audit" / "audit.db",
            "spool_dir": state / "audit" / "spool",
            "signing_key": settings.audit.signing_key
            or Secret(_demo_secret(state / "audit-signing-key.pem", _demo_audit_signing_key)),
        },
    )


def _demo_processes(settings: Settings) -> list[subprocess.Popen[bytes]]:
    """The demo upstream, and the dev identity provider when demo mode configured it."""
    python = sys.executable
    host = settings.server.public_hosts[0]
    processes = [
        subprocess.Popen(
            [
                python,
                "-m",
                "demo_upstream",
                "--port",
                str(settings.demo.upstream_port),
                "--jwks-file",
                str(_write_demo_jwks(settings)),
                "--issuer",
                f"https://{host}",
                "--audience",
                settings.assertion.audience,
            ]
        )
    ]
    devidp = settings.oidc.issuers.get("devidp")
    if devidp is not None and devidp.client_secret is not None:
        origins = [
            f"https://{name}:{settings.server.https_port}" for name in settings.server.public_hosts
        ]
        command = [python, "-m", "devidp", "--mode", "demo", "--port", str(settings.demo.idp_port)]
        for origin in origins:
            command += ["--redirect-uri", f"{origin}/_gateway/callback"]
            command += ["--post-logout-redirect-uri", f"{origin}/"]
        environ = {**os.environ, "DEVIDP_CLIENT_SECRET": devidp.client_secret.reveal()}
        processes.append(subprocess.Popen(command, env=environ))
    return processes


def run_demo(config: Path | None) -> int:
    """``make run``: the gateway in front of the demo upstream, with the dev identity provider;
    it starts and stops both."""
    try:
        settings = demo_settings(config)
    except SettingsError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        return 2
    processes = _demo_processes(settings)
    host = settings.server.public_hosts[0]

    def banner(_gateway: Gateway) -> None:
        base = f"https://{host}:{settings.server.https_port}"
        print(
            f"\nOnderwijs & Regio gateway (demo) at {base}/\n"
            f"  log in:    {base}/_gateway/login   (pick a demo person for any role)\n"
            f"  catalogue: {base}/activities        (public)\n"
            f"  your data: {base}/api/me            (as a student)\n"
            f"  health:    {base}/_gateway/health\n"
            f"  metrics:   http://{settings.server.metrics_host}:{settings.server.metrics_port}/metrics\n"
            f"  demo upstream {settings.upstream.url}; audit log {settings.audit.sqlite_path}\n"
            f"  certificate {settings.server.tls_cert_file} is self-signed: expect a warning.\n"
            "Ctrl-C stops it.",
            flush=True,
        )

    try:
        return start(settings, banner=banner)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _write_demo_jwks(settings: Settings) -> Path:
    path = settings.demo.state_dir / "jwks.json"
    path.write_bytes(assertion_signer(settings).jwks_json())
    return path
