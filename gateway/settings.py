"""One typed settings object, read once at start-up, from a TOML file and the environment.

Sources, later ones winning:

1. the TOML file named by ``--config`` or ``GATEWAY_CONFIG`` (optional);
2. environment variables ``GATEWAY_<SECTION>__<KEY>`` (for example
   ``GATEWAY_SERVER__HTTPS_PORT=8443``), values parsed like the TOML ones (lists as JSON arrays
   or comma-separated);
3. for a secret setting ``<key>``: ``<key>_file`` in the file or ``GATEWAY_<SECTION>__<KEY>_FILE``
   in the environment names a file whose content (trailing newline stripped) is the value.

Unknown sections, unknown keys and unknown ``GATEWAY_`` variables are errors, and every error
names the setting and where its value came from. Durations are strings such as ``500ms``,
``30s``, ``15m``, ``12h``, ``365d`` (or combinations like ``1h30m``). Secrets never appear in
error messages, ``repr`` or logs.

Anything that relaxes security is a setting of its own, off by default, and listed by
:meth:`Settings.relaxations` so start-up can log it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, get_args, get_origin
from urllib.parse import urlsplit

ENV_PREFIX = "GATEWAY_"
#: The policy files shipped with the package (beside ``gateway/``), whatever the working dir.
SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"
ENV_CONFIG_FILE = "GATEWAY_CONFIG"
NESTING = "__"
FILE_SUFFIX = "_file"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting is missing, unknown or invalid; the message names it and its source."""


class Secret:
    """A string that does not show itself in ``repr``, ``str`` or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class HostName(str):
    """A host name as compared by the gateway: see :func:`normalise_host`."""

    __slots__ = ()


class Duration(float):
    """Seconds, parsed from strings such as ``15m`` or ``1h30m``."""

    _PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
    _UNITS: ClassVar[dict[str, float]] = {
        "ms": 0.001,
        "s": 1,
        "m": 60,
        "h": 3600,
        "d": 86400,
        "w": 7 * 86400,
    }

    @classmethod
    def parse(cls, text: str) -> Duration:
        compact = text.strip().lower().replace(" ", "")
        if not compact:
            raise ValueError("empty duration")
        position, total = 0, 0.0
        for match in cls._PART.finditer(compact):
            if match.start() != position:
                break
            total += float(match.group(1)) * cls._UNITS[match.group(2)]
            position = match.end()
        if position != len(compact):
            raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 15m, 12h, 365d)")
        return cls(total)


# --- the settings ---------------------------------------------------------------------------

ONE_YEAR = Duration(365 * 86400)
DEFAULT_GRACEFUL_TIMEOUT = Duration(30)
DEFAULT_HEAD_TIMEOUT = Duration(10)
MAX_WORKERS = 64
DEFAULT_CONNECT_TIMEOUT = Duration(5)
DEFAULT_READ_TIMEOUT = Duration(30)
DEFAULT_ASSERTION_LIFETIME = Duration(60)
DEFAULT_DIGEST_INTERVAL = Duration(300)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Listeners, TLS and the trust boundary."""

    host: str = "0.0.0.0"  # noqa: S104 - a gateway listens publicly by design
    https_port: int = 8443
    #: The plain-HTTP listener that only redirects to HTTPS; 0 turns it off.
    http_port: int = 8080
    #: The port clients use for HTTPS (redirect targets); defaults to https_port.
    public_https_port: int | None = None
    #: The host allow-list; the first one is used in redirects when the request's is unknown.
    public_hosts: tuple[HostName, ...] = ()
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Secret: the password of an encrypted TLS key (or ``tls_key_password_file``).
    tls_key_password: Secret | None = None
    #: Relaxation: accept plain HTTP on the main listener (local development only).
    allow_plain_http: bool = False
    #: Relaxation: peers whose X-Forwarded-*/Forwarded headers are believed. Empty: nobody.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    hsts_max_age: Duration = ONE_YEAR
    hsts_preload: bool = False
    graceful_timeout: Duration = DEFAULT_GRACEFUL_TIMEOUT
    #: A connection must send its complete request head within this (slow clients, CWE-400).
    request_head_timeout: Duration = DEFAULT_HEAD_TIMEOUT
    #: Request header limits (431 above them), as nginx and Envoy have.
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    metrics_host: str = "127.0.0.1"
    #: The Prometheus listener; 0 turns it off. With several workers, worker N serves its own
    #: counters on ``metrics_port + N`` (scrape each).
    metrics_port: int = 9090
    #: Processes serving the same ports (SO_REUSEPORT sockets bound once, at start). Each has
    #: its own audit spool (``audit.spool_dir``, ``worker-N`` under it for N >= 1) and its own
    #: brute-force counters; sessions must then be revoked in a shared store (sqlite).
    workers: int = 1


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """The platform behind the gateway."""

    url: str = "http://127.0.0.1:9000"
    connect_timeout: Duration = DEFAULT_CONNECT_TIMEOUT
    read_timeout: Duration = DEFAULT_READ_TIMEOUT
    #: Relaxation: plain http:// to a host that is not on this machine.
    allow_plain_http_remote: bool = False
    #: The client library: aiohttp (measured fastest here, bench/gateway.py) or httpx.
    client: Literal["aiohttp", "httpx"] = "aiohttp"
    pool_size: int = 100
    #: Methods forwarded; TRACE and CONNECT are refused unless listed.
    methods: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True, slots=True)
class AssertionSettings:
    """The signed identity assertion (``X-Gateway-Assertion``) the upstream can verify."""

    #: PEM private keys (P-256 or Ed25519); the first signs, all are published in the JWKS.
    #: Every gateway instance needs the same keys. Required outside demo mode.
    key_files: tuple[Path, ...] = ()
    #: Defaults to ``https://`` + the first public host.
    issuer: str | None = None
    audience: str = "onderwijs-regio-platform"
    lifetime: Duration = DEFAULT_ASSERTION_LIFETIME


AUDIT_CATEGORIES = ("authentication", "access_denied", "personal_data_access", "errors", "backbone")


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """Where audit events go: the spool on local disk, then the store."""

    store: Literal["sqlite", "opensearch"] = "sqlite"
    sqlite_path: Path = Path("var/audit/audit.db")
    opensearch_urls: tuple[str, ...] = ()
    opensearch_username: str | None = None
    #: Secret (or ``opensearch_password_file``).
    opensearch_password: Secret | None = None
    opensearch_ca_file: Path | None = None
    index_prefix: str = ""
    shards: int = 1
    replicas: int = 1
    spool_dir: Path = Path("var/audit/spool")
    spool_max_bytes: int = 256 * 1024 * 1024
    fsync: Literal["always", "interval", "never"] = "interval"
    #: Overrides of the spool-full policy per category, e.g. ``["authentication=drop"]``.
    spool_full_policy: tuple[str, ...] = ()
    #: Secret of at least 32 bytes (or ``pseudonym_key_file``) for keyed pseudonyms.
    pseudonym_key: Secret | None = None
    pseudonymise_fields: tuple[str, ...] = ()
    #: Secret (or ``signing_key_file``): PEM Ed25519 private key(s) that sign the digest
    #: chain and retention records (tamper evidence); the first signs, all are published at
    #: ``/_gateway/audit-keys.json``. Without it no digests are written (demo mode makes one).
    signing_key: Secret | None = None
    #: A JWK set of retired public keys, still published so older intervals verify.
    verifier_keys_file: Path | None = None
    #: One signed digest per interval (also when nothing happened).
    digest_interval: Duration = DEFAULT_DIGEST_INTERVAL
    #: This shipper's name in the chain (default: host name and a random suffix, kept in the
    #: spool directory). Unique per spool directory: two shippers under one name collide.
    instance_id: str | None = None
    #: Data-subject exports show other staff members by their role only (their id, address,
    #: browser and token hash left out). Turning it off shows them: logged at start-up.
    export_pseudonymise_staff: bool = True
    #: The platform's person map (CSV ``user_id,tenant,platform_id``): which platform person
    #: ids (the ids in paths such as ``/api/schools/T/students/ID``) belong to which
    #: issuer-qualified user. Exports then include others' reads of those ids. Without it an
    #: export covers only the events that name the person's own user id (its cover says so).
    person_map_file: Path | None = None
    #: Statistics hide counts below this many events (small-cell suppression), at least 2.
    stats_min_group_size: int = 10

    def opensearch_access(self) -> dict[str, Any]:
        """The cluster access every OpenSearch-backed store takes as keyword arguments
        (nodes, index prefix, credentials, CA, replicas); the password revealed only here."""
        return {
            "url": list(self.opensearch_urls),
            "index_prefix": self.index_prefix,
            "username": self.opensearch_username,
            "password": self.opensearch_password.reveal() if self.opensearch_password else None,
            "ca_certs": str(self.opensearch_ca_file) if self.opensearch_ca_file else None,
            "replicas": self.replicas,
        }

    def full_policy(self) -> dict[str, str]:
        """The per-category overrides as a mapping (validated at load)."""
        return dict(item.split("=", 1) for item in self.spool_full_policy)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The Casbin files the authorize stage enforces (the shipped ones by default)."""

    model_file: Path | None = None
    policy_file: Path | None = None
    resources_file: Path | None = None
    tests_file: Path | None = None
    #: Reload when a file changes (SIGHUP always reloads).
    watch: bool = True


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """Demo mode (``make run``): self-signed certificate and the demo upstream."""

    enabled: bool = False
    upstream_port: int = 9000
    #: The dev identity provider (``devidp``), started by demo mode when no issuer is set.
    idp_port: int = 9400
    state_dir: Path = Path("var/demo")


DEFAULT_SCOPES = ("openid", "profile", "email")
#: Signature algorithms accepted by default: asymmetric only (never ``none``, never HMAC).
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256")
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SESSION_KEY_BYTES = 32
DEFAULT_LEEWAY = Duration(60)
DEFAULT_REVOCATION_POLL_INTERVAL = Duration(0.5)
DEFAULT_REVOCATION_MAX_STALENESS = Duration(5)
DEFAULT_LOGIN_TIMEOUT = Duration(600)
DEFAULT_METADATA_TTL = Duration(3600)
DEFAULT_JWKS_REFETCH_COOLDOWN = Duration(30)
DEFAULT_OIDC_HTTP_TIMEOUT = Duration(10)
DEFAULT_IDLE_TIMEOUT = Duration(30 * 60)
DEFAULT_ABSOLUTE_TIMEOUT = Duration(12 * 3600)
DEFAULT_REFRESH_INTERVAL = Duration(5 * 60)
DEFAULT_ROLES_MAX_AGE = Duration(3600)
DEFAULT_THROTTLE_WINDOW = Duration(5 * 60)
DEFAULT_THROTTLE_BLOCK = Duration(15 * 60)
DEFAULT_THROTTLE_MAX_BLOCK = Duration(4 * 3600)
DEFAULT_THROTTLE_CHECK_INTERVAL = Duration(1)
_ISSUER_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ORIGIN = re.compile(r"https://[a-z0-9.-]+(:[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    """One OIDC identity provider: ``[oidc.issuers.NAME]``."""

    #: ``https://idp.example/.well-known/openid-configuration`` (http:// only on loopback).
    discovery_url: str = ""
    client_id: str = ""
    #: Secret: the client secret (or ``client_secret_file``); none for public clients.
    client_secret: Secret | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    #: The claim mapping in the claims file to use; defaults to the issuer's name.
    claims: str = ""
    #: Shown on the login chooser.
    display_name: str = ""
    #: Audiences accepted in bearer access tokens; empty: no bearer tokens from this issuer.
    audiences: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    #: Opaque (non-JWT) bearer tokens are checked at this issuer's RFC 7662 introspection
    #: endpoint. At most one issuer may have it: an opaque token names no issuer, and it must
    #: never be shown to another one.
    introspection: bool = False


def _no_issuers() -> Mapping[str, IssuerSettings]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class OIDCSettings:
    """OIDC login and bearer tokens: the issuers, and the files mapping claims to roles."""

    issuers: Mapping[str, IssuerSettings] = field(default_factory=_no_issuers)
    #: Per-issuer mapping of claims to roles and tenant (``policies/claims.toml``).
    claims_file: Path = SHIPPED_POLICIES / "claims.toml"
    #: Locally granted roles keyed on (issuer, subject) and tenant; reloaded on change.
    grants_file: Path = SHIPPED_POLICIES / "grants.toml"
    #: Origins (``https://host[:port]``, exactly) that login and logout may return to besides
    #: this gateway's own paths.
    return_origins: tuple[str, ...] = ()
    #: Clock skew allowed on exp/iat/nbf.
    leeway: Duration = DEFAULT_LEEWAY
    #: How long a login (state, nonce, PKCE verifier) may take.
    login_timeout: Duration = DEFAULT_LOGIN_TIMEOUT
    #: Discovery documents and JWKS are refetched after this long.
    metadata_ttl: Duration = DEFAULT_METADATA_TTL
    #: At most one JWKS refetch per issuer per this interval on an unknown ``kid``.
    jwks_refetch_cooldown: Duration = DEFAULT_JWKS_REFETCH_COOLDOWN
    http_timeout: Duration = DEFAULT_OIDC_HTTP_TIMEOUT
    #: Where the single-use login states and the throttle's counters live: ``audit`` (the
    #: audit store every instance shares: an index in OpenSearch, a table in SQLite) or
    #: ``memory`` (one instance only: each instance would count and accept on its own).
    shared_state: Literal["audit", "memory"] = "audit"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """The encrypted session cookie."""

    cookie_name: str = "__Host-gw_session"
    #: Secret list: base64url AES-256 keys (32 bytes); the first encrypts, all decrypt.
    #: ``keys_file`` names a file with one key per line.
    keys: tuple[Secret, ...] = ()
    idle_timeout: Duration = DEFAULT_IDLE_TIMEOUT
    absolute_timeout: Duration = DEFAULT_ABSOLUTE_TIMEOUT
    #: A session used after this long is re-issued (idle clock reset, grants re-read).
    refresh_interval: Duration = DEFAULT_REFRESH_INTERVAL
    #: Roles and tenant from the identity provider's claims are trusted this long after
    #: login; an older session must log in again (roles recomputed from fresh claims).
    roles_max_age: Duration = DEFAULT_ROLES_MAX_AGE
    #: Where revoked sessions are recorded: ``memory`` (one instance), ``sqlite`` (a file the
    #: instances of one machine share) or ``audit`` (the audit store: an index of the audit
    #: cluster every instance on every machine polls, or the SQLite audit file).
    revocation_store: Literal["memory", "sqlite", "audit"] = "memory"
    #: The SQLite file all instances share (required for ``sqlite``).
    revocation_file: Path | None = None
    #: ``audit`` with OpenSearch: each instance reads new revocations this often...
    revocation_poll_interval: Duration = DEFAULT_REVOCATION_POLL_INTERVAL
    #: ...and answers 503 to session cookies it cannot check once its copy is this old.
    revocation_max_staleness: Duration = DEFAULT_REVOCATION_MAX_STALENESS


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """Brute-force limits on failed logins and rejected tokens, per client IP and per subject."""

    max_failures: int = 10
    window: Duration = DEFAULT_THROTTLE_WINDOW
    block: Duration = DEFAULT_THROTTLE_BLOCK
    #: Backoff: a key blocked again doubles its block time, up to this.
    max_block: Duration = DEFAULT_THROTTLE_MAX_BLOCK
    #: A "not blocked" answer from the shared store is reused this long (0: ask every time).
    check_interval: Duration = DEFAULT_THROTTLE_CHECK_INTERVAL
    #: Counters kept at most with ``oidc.shared_state = "memory"`` (oldest dropped first).
    max_tracked: int = 100_000


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """Retention periods per category, over the defaults of DESIGN.md §4 (``retention``)."""

    #: Overrides ``CATEGORY=FULL_DAYS/DELETE_DAYS`` (FULL ``-``: never minimised),
    #: e.g. ``["errors=30/90"]``.
    rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    assertion: AssertionSettings = field(default_factory=AssertionSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    oidc: OIDCSettings = field(default_factory=OIDCSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    #: Settings whose values are secrets (``section.key``), accepted with a ``_file`` variant.
    #: ``*`` stands for the name of an entry of a table such as ``[oidc.issuers.NAME]``.
    SECRETS: ClassVar[frozenset[str]] = frozenset(
        {
            "server.tls_key_password",
            "audit.opensearch_password",
            "audit.pseudonym_key",
            "audit.signing_key",
            "oidc.issuers.*.client_secret",
            "session.keys",
        }
    )

    def relaxations(self) -> list[str]:
        """Every setting that weakens the closed default, in words for the start-up log."""
        found: list[str] = []
        if self.server.allow_plain_http:
            found.append("server.allow_plain_http: plain HTTP is served without a redirect")
        if self.server.trusted_proxies:
            nets = ", ".join(str(net) for net in self.server.trusted_proxies)
            found.append(f"server.trusted_proxies: forwarding headers believed from {nets}")
        if self.upstream.allow_plain_http_remote and _is_remote_plain_http(self.upstream.url):
            found.append(f"upstream.allow_plain_http_remote: plain HTTP to {self.upstream.url}")
        if self.demo.enabled:
            found.append("demo.enabled: self-signed certificate and demo upstream")
        if not self.audit.export_pseudonymise_staff:
            found.append("audit.export_pseudonymise_staff: exports name other staff members")
        return found

    @property
    def redirect_port(self) -> int:
        return self.server.public_https_port or self.server.https_port


# --- loading --------------------------------------------------------------------------------


def load_settings(
    config_file: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the file and the environment once, check everything, and return the settings."""
    environ = os.environ if environ is None else environ
    path = config_file or environ.get(ENV_CONFIG_FILE)
    raw: dict[str, dict[str, tuple[Any, str]]] = {}
    if path:
        _merge_file(raw, Path(path))
    _merge_environment(raw, environ)
    settings = _build(Settings, raw)
    _validate(settings)
    return settings


def _merge_file(raw: dict[str, dict[str, tuple[Any, str]]], path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read the settings file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from exc
    for section, values in data.items():
        if not isinstance(values, dict):
            raise SettingsError(f"{section}: expected a [{section}] table in {path}")
        for key, value in _flatten(values):
            raw.setdefault(section, {})[key] = (value, str(path))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Nested tables (``[oidc.issuers.NAME]``) as keys joined by ``__``, like the environment."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}{NESTING}")
        else:
            yield f"{prefix}{key}", value


def _merge_environment(
    raw: dict[str, dict[str, tuple[Any, str]]], environ: Mapping[str, str]
) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, sep, key = rest.partition(NESTING)
        if not sep or not section or not key or "" in key.split(NESTING):
            raise SettingsError(
                f"{name}: unknown setting (expected {ENV_PREFIX}<SECTION>{NESTING}<KEY>)"
            )
        raw.setdefault(section, {})[key] = (_EnvText(value), f"environment variable {name}")


class _EnvText(str):
    """A value from the environment: parsed by the target type, not taken as a string."""

    __slots__ = ()


def _build(cls: type[Settings], raw: dict[str, dict[str, tuple[Any, str]]]) -> Settings:
    hints = typing.get_type_hints(cls)
    sections = {f.name: f for f in fields(cls)}
    for section in raw:
        if section not in sections:
            known = ", ".join(sorted(sections))
            raise SettingsError(f"[{section}]: unknown section (known: {known})")
    built: dict[str, Any] = {}
    for name in sections:
        section_cls = hints[name]
        built[name] = _build_section(name, section_cls, raw.get(name, {}), cls.SECRETS)
    return cls(**built)


def _build_section(
    section: str, cls: type[Any], values: dict[str, tuple[Any, str]], secrets: frozenset[str]
) -> Any:
    assert is_dataclass(cls)  # noqa: S101 - our own declarations, checked by the tests
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    tables: dict[str, dict[str, dict[str, tuple[Any, str]]]] = {}
    for key, (value, source) in values.items():
        setting = f"{section}.{key}"
        if NESTING in key:
            table, _, rest = key.partition(NESTING)
            entry, _, subkey = rest.partition(NESTING)
            if table not in known or _table_type(hints[table]) is None or not subkey:
                shown = key.replace(NESTING, ".")
                raise SettingsError(f"{section}.{shown}: unknown setting (from {source})")
            tables.setdefault(table, {}).setdefault(entry, {})[subkey] = (value, source)
            continue
        if key.endswith(FILE_SUFFIX) and f"{section}.{key[: -len(FILE_SUFFIX)]}" in secrets:
            target = key[: -len(FILE_SUFFIX)]
            text = _read_secret_file(f"{section}.{target}", value, source)
            if _is_secret_list(hints.get(target)):
                kwargs[target] = tuple(
                    Secret(line.strip()) for line in text.splitlines() if line.strip()
                )
            else:
                kwargs[target] = Secret(text)
            continue
        if key not in known:
            raise SettingsError(f"{setting}: unknown setting (from {source})")
        if setting in secrets:
            kwargs[key] = _secret_value(setting, value, source, hints[key])
            continue
        try:
            kwargs[key] = _convert(value, hints[key])
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{setting}: {exc} (from {source})") from exc
    for table, entries in tables.items():
        entry_cls = _table_type(hints[table])
        assert entry_cls is not None  # noqa: S101 - checked when the keys were grouped
        built = {}
        for entry, entry_values in sorted(entries.items()):
            prefix = f"{section}.{table}.{entry}"
            if not _ISSUER_NAME.fullmatch(entry):
                raise SettingsError(
                    f"{prefix}: a name of lower-case letters, digits and _ is required"
                )
            entry_secrets = frozenset(
                f"{prefix}.{name.rsplit('.', 1)[1]}"
                for name in secrets
                if name.startswith(f"{section}.{table}.*.")
            )
            built[entry] = _build_section(prefix, entry_cls, entry_values, entry_secrets)
        kwargs[table] = MappingProxyType(built)
    return cls(**kwargs)


def _table_type(hint: Any) -> type[Any] | None:
    """The entry class of a ``Mapping[str, SomeSettings]`` field (a table of tables), or None."""
    if get_origin(hint) is not Mapping:
        return None
    entry = get_args(hint)[1]
    return entry if isinstance(entry, type) and is_dataclass(entry) else None


def _is_secret_list(hint: Any) -> bool:
    return get_origin(hint) is tuple and get_args(hint)[0] is Secret


def _secret_value(setting: str, value: Any, source: str, hint: Any) -> Secret | tuple[Secret, ...]:
    if _is_secret_list(hint):
        try:
            items = _as_list(value)
        except (TypeError, ValueError):
            items = []
        if not items or not all(isinstance(item, str) and item for item in items):
            raise SettingsError(f"{setting}: expected a list of non-empty secrets (from {source})")
        return tuple(Secret(item) for item in items)
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{setting}: expected a non-empty secret (from {source})")
    return Secret(value)


def _read_secret_file(setting: str, value: Any, source: str) -> str:
    path = Path(str(value))
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(
            f"{setting}: cannot read the secret file {path} ({exc.strerror}; from {source})"
        ) from exc
    if not secret:
        raise SettingsError(f"{setting}: the secret file {path} is empty (from {source})")
    return secret


def _convert(value: Any, target: Any) -> Any:  # noqa: PLR0911, PLR0912 - one branch per type
    origin = get_origin(target)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in get_args(target) if arg is not type(None)]
        empty = value is None or (isinstance(value, _EnvText) and value == "")
        if empty and type(None) in get_args(target):
            return None
        errors = []
        for option in options:
            try:
                return _convert(value, option)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        item_type = get_args(target)[0]
        return tuple(_convert(item, item_type) for item in _as_list(value))
    if origin is Literal:
        allowed = get_args(target)
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if target is bool:
        return _as_bool(value)
    if target is int:
        return _as_int(value)
    if target is Duration:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Duration(value)
        if isinstance(value, str):
            return Duration.parse(value)
        raise TypeError(f"expected a duration such as '15m', got {value!r}")
    if target is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, _EnvText):
            return float(value)
        raise TypeError(f"expected a number, got {value!r}")
    if target is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return str(value)
    if target is HostName:
        if not isinstance(value, str) or not value.strip():
            raise TypeError(f"expected a host name, got {value!r}")
        return HostName(normalise_host(value))
    if target is Path:
        if not isinstance(value, str) or not value:
            raise TypeError(f"expected a file path, got {value!r}")
        return Path(value)
    if target is IPNetwork or target in (ipaddress.IPv4Network, ipaddress.IPv6Network):
        return ipaddress.ip_network(str(value), strict=True)
    raise TypeError(f"unsupported setting type {target!r}")


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, _EnvText):
        text = value.strip()
        if text.startswith("["):
            parsed = json.loads(text)
            if not isinstance(parsed, list):
                raise TypeError(f"expected a list, got {value!r}")
            return parsed
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(f"expected a list, got {value!r}")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, _EnvText):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise TypeError(f"expected true or false, got {value!r}")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, _EnvText) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


# --- cross-field checks ---------------------------------------------------------------------


def _is_remote_plain_http(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def normalise_host(host: str) -> str:
    """Lower-case, without a trailing dot; IDNs in their ASCII (punycode) form.

    Raises ValueError for anything that is not a DNS name or an IP literal.
    """
    host = host.strip().lower()
    if host.endswith("."):
        host = host[:-1]
    if host.startswith("[") and host.endswith("]"):
        return f"[{ipaddress.IPv6Address(host[1:-1])}]"
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a valid host name: {host!r}") from exc
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"not a valid host name: {host!r}")
    return ascii_host


def _validate(settings: Settings) -> None:
    _validate_server(settings.server, demo=settings.demo.enabled)
    _validate_upstream(settings.upstream)
    if not settings.assertion.key_files and not settings.demo.enabled:
        raise SettingsError(
            "assertion.key_files: at least one signing key (PEM, P-256 or Ed25519) is required"
        )
    if not 5 <= settings.assertion.lifetime <= 600:
        raise SettingsError("assertion.lifetime: between 5s and 10m")
    _validate_audit(settings.audit)
    _validate_audit_search(settings.audit)
    _validate_oidc(settings.oidc)
    _validate_session(settings.session, needed=bool(settings.oidc.issuers))
    if (
        settings.server.workers > 1
        and settings.oidc.issuers
        and settings.session.revocation_store == "memory"
    ):
        raise SettingsError(
            "server.workers: several workers need session.revocation_store = sqlite or audit "
            "(a session "
            "revoked in one worker's memory would stay valid in the others)"
        )
    _validate_throttle(settings.throttle)
    _validate_retention(settings.retention)


def _validate_server(server: ServerSettings, *, demo: bool) -> None:
    for name in ("https_port", "http_port", "metrics_port"):
        port = getattr(server, name)
        if not 0 <= port <= 65535 or (name == "https_port" and port == 0):
            raise SettingsError(f"server.{name}: {port} is not a valid port")
    if not server.public_hosts and not demo:
        raise SettingsError("server.public_hosts: at least one public host name is required")
    if not demo and not server.allow_plain_http:
        for name in ("tls_cert_file", "tls_key_file"):
            if getattr(server, name) is None:
                raise SettingsError(
                    f"server.{name}: required to serve HTTPS (or set server.allow_plain_http "
                    "for local development)"
                )
    if not 1024 <= server.max_header_bytes <= 1024 * 1024 or not server.max_header_count >= 8:
        raise SettingsError(
            "server.max_header_bytes/max_header_count: 1 KiB to 1 MiB, and at least 8 headers"
        )
    if not 0.5 <= server.request_head_timeout <= 300:
        raise SettingsError("server.request_head_timeout: between 500ms and 5m")
    if server.hsts_max_age < ONE_YEAR:
        raise SettingsError("server.hsts_max_age: must be at least one year (365d)")
    if not 1 <= server.workers <= MAX_WORKERS:
        raise SettingsError(f"server.workers: between 1 and {MAX_WORKERS}")


def _validate_upstream(upstream: UpstreamSettings) -> None:
    parts = urlsplit(upstream.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"upstream.url: expected an http(s) URL, got {upstream.url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError("upstream.url: must not carry a query, fragment or credentials")
    if _is_remote_plain_http(upstream.url) and not upstream.allow_plain_http_remote:
        raise SettingsError(
            f"upstream.url: plain http:// to the remote host {parts.hostname!r} is refused; use "
            "https:// or set upstream.allow_plain_http_remote"
        )
    for name in ("connect_timeout", "read_timeout"):
        if getattr(upstream, name) <= 0:
            raise SettingsError(f"upstream.{name}: must be positive")
    if upstream.pool_size < 1:
        raise SettingsError("upstream.pool_size: must be at least 1")
    if not upstream.methods or any(not m.isalpha() or m != m.upper() for m in upstream.methods):
        raise SettingsError("upstream.methods: upper-case HTTP method names, at least one")


def _validate_audit(audit: AuditSettings) -> None:
    if audit.store == "opensearch":
        if not audit.opensearch_urls:
            raise SettingsError("audit.opensearch_urls: required when audit.store is opensearch")
        for url in audit.opensearch_urls:
            if urlsplit(url).scheme not in ("http", "https"):
                raise SettingsError(f"audit.opensearch_urls: not an http(s) URL: {url!r}")
    for item in audit.spool_full_policy:
        category, sep, policy = item.partition("=")
        if not sep or category not in AUDIT_CATEGORIES or policy not in ("block", "drop"):
            raise SettingsError(
                f"audit.spool_full_policy: {item!r} is not CATEGORY=block|drop "
                f"(categories: {', '.join(AUDIT_CATEGORIES)})"
            )
    if audit.pseudonym_key is not None and len(audit.pseudonym_key.reveal().encode()) < 32:
        raise SettingsError("audit.pseudonym_key: must be at least 32 bytes")
    if audit.pseudonymise_fields and audit.pseudonym_key is None:
        raise SettingsError("audit.pseudonymise_fields: needs audit.pseudonym_key")
    if audit.spool_max_bytes < 1024 * 1024:
        raise SettingsError("audit.spool_max_bytes: must be at least 1 MiB")
    if audit.digest_interval < 1:
        raise SettingsError("audit.digest_interval: must be at least 1s")
    if audit.signing_key is not None:
        from audit import Keyring  # noqa: PLC0415 - only when configured

        try:
            Keyring.from_pem(audit.signing_key.reveal().encode())
        except ValueError as exc:
            raise SettingsError(
                f"audit.signing_key: not Ed25519 PEM private keys ({exc})"
            ) from None


def _validate_audit_search(audit: AuditSettings) -> None:
    if audit.stats_min_group_size < 2:
        raise SettingsError("audit.stats_min_group_size: must be at least 2 (1 hides nothing)")
    if audit.person_map_file is not None and not audit.person_map_file.is_file():
        raise SettingsError(f"audit.person_map_file: no such file: {audit.person_map_file}")


def _validate_oidc(oidc: OIDCSettings) -> None:
    for name, issuer in oidc.issuers.items():
        _validate_issuer(f"oidc.issuers.{name}", issuer)
    introspecting = sorted(name for name, i in oidc.issuers.items() if i.introspection)
    if len(introspecting) > 1:
        raise SettingsError(
            f"oidc.issuers.*.introspection: on for {', '.join(introspecting)}; at most one issuer"
        )
    for name in introspecting:
        issuer = oidc.issuers[name]
        if issuer.client_secret is None or not issuer.audiences:
            raise SettingsError(
                f"oidc.issuers.{name}.introspection: needs client_secret and audiences"
            )
    for name in ("leeway", "login_timeout", "metadata_ttl", "jwks_refetch_cooldown"):
        if getattr(oidc, name) < 0:
            raise SettingsError(f"oidc.{name}: must not be negative")
    if oidc.leeway > 300:
        raise SettingsError("oidc.leeway: at most 5m")
    if oidc.http_timeout <= 0:
        raise SettingsError("oidc.http_timeout: must be positive")
    for origin in oidc.return_origins:
        if not _ORIGIN.fullmatch(origin):
            raise SettingsError(
                f"oidc.return_origins: {origin!r} is not an https://host[:port] origin"
            )


def _validate_issuer(prefix: str, issuer: IssuerSettings) -> None:
    parts = urlsplit(issuer.discovery_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{prefix}.discovery_url: expected an https:// URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(f"{prefix}.discovery_url: must not carry a query or credentials")
    if _is_remote_plain_http(issuer.discovery_url):
        raise SettingsError(
            f"{prefix}.discovery_url: plain http:// is refused except on this machine"
        )
    if not issuer.client_id:
        raise SettingsError(f"{prefix}.client_id: required")
    if "openid" not in issuer.scopes:
        raise SettingsError(f"{prefix}.scopes: must include 'openid'")
    if not issuer.algorithms:
        raise SettingsError(f"{prefix}.algorithms: at least one algorithm is required")
    for algorithm in issuer.algorithms:
        if algorithm not in ALLOWED_ALGORITHMS:
            allowed = ", ".join(sorted(ALLOWED_ALGORITHMS))
            raise SettingsError(
                f"{prefix}.algorithms: {algorithm!r} is not allowed (allowed: {allowed})"
            )


def _validate_session(session: SessionSettings, *, needed: bool) -> None:
    if not session.cookie_name.startswith("__Host-") or not re.fullmatch(
        r"[A-Za-z0-9_\-]+", session.cookie_name
    ):
        raise SettingsError(
            "session.cookie_name: must start with __Host- and use letters, digits, _ and -"
        )
    if needed and not session.keys:
        raise SettingsError("session.keys: at least one key is required when issuers are set")
    for position, key in enumerate(session.keys):
        text = key.reveal()
        try:
            # base64url only: ``+``, ``/`` and characters outside the alphabet are refused.
            raw = (
                base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
                if re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", text)
                else b""
            )
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != SESSION_KEY_BYTES:
            raise SettingsError(
                f"session.keys: key {position + 1} is not {SESSION_KEY_BYTES} bytes in base64url"
            )
    if session.idle_timeout <= 0 or session.absolute_timeout <= 0:
        raise SettingsError("session.idle_timeout, absolute_timeout: must be positive")
    if session.idle_timeout > session.absolute_timeout:
        raise SettingsError("session.idle_timeout: must not exceed session.absolute_timeout")
    if not 0 < session.refresh_interval <= session.idle_timeout:
        raise SettingsError("session.refresh_interval: must be positive and at most idle_timeout")
    if not 0 < session.roles_max_age <= session.absolute_timeout:
        raise SettingsError(
            "session.roles_max_age: must be positive and at most session.absolute_timeout"
        )
    if session.revocation_store == "sqlite" and session.revocation_file is None:
        raise SettingsError("session.revocation_file: required for the sqlite revocation store")
    if not 0 < session.revocation_poll_interval < session.revocation_max_staleness:
        raise SettingsError(
            "session.revocation_poll_interval: must be positive and below "
            "session.revocation_max_staleness"
        )


def _validate_throttle(throttle: ThrottleSettings) -> None:
    if throttle.max_failures < 1:
        raise SettingsError("throttle.max_failures: must be at least 1")
    if throttle.window <= 0 or throttle.block <= 0:
        raise SettingsError("throttle.window, block: must be positive")
    if throttle.max_block < throttle.block:
        raise SettingsError("throttle.max_block: must be at least throttle.block")
    if not 0 <= throttle.check_interval <= throttle.block:
        raise SettingsError("throttle.check_interval: between 0 and throttle.block")
    if throttle.max_tracked < 100:
        raise SettingsError("throttle.max_tracked: must be at least 100")


def _validate_retention(retention: RetentionSettings) -> None:
    from retention import parse_rules  # noqa: PLC0415 - retention's CLI imports this module

    try:
        parse_rules(retention.rules)
    except ValueError as exc:
        raise SettingsError(f"retention.rules: {exc}") from exc


def with_overrides(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """A copy with some fields of some sections replaced (for tests and demo mode)."""
    changed = {
        name: replace(getattr(settings, name), **values) for name, values in sections.items()
    }
    return replace(settings, **changed)


def iter_settings(settings: Settings) -> Iterable[tuple[str, Any]]:
    """(``section.key``, value) pairs, secrets masked, for ``check-config`` output."""
    for section in fields(settings):
        value = getattr(settings, section.name)
        for item in fields(value):
            found = getattr(value, item.name)
            if isinstance(found, Mapping):
                for entry, entry_value in found.items():
                    for sub in fields(entry_value):
                        name = f"{section.name}.{item.name}.{entry}.{sub.name}"
                        yield name, getattr(entry_value, sub.name)
                continue
            yield f"{section.name}.{item.name}", found
