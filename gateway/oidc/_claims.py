"""Claims to roles and tenant, per issuer, and locally granted roles.

The claims file (``policies/claims.toml``) has one table per mapping::

    [mappings.surfconext]
    roles_claim = "eduperson_affiliation"       # a string or a list of strings
    tenant_claim = "schac_home_organization"
    [mappings.surfconext.roles]                 # claim value -> role
    student = "student"
    employee = "teacher"
    [mappings.surfconext.tenants]               # optional: claim value -> tenant id
    "school-a.example" = "school-a"

Without a ``tenants`` table the claim value itself is the tenant (validated). The grants file
(``policies/grants.toml``) holds roles no federation asserts, keyed on (issuer, subject) and
tenant::

    [[grants]]
    issuer = "surfconext"          # the configured issuer name
    subject = "abc123"
    tenant = "school-a"            # omit for roles without a tenant
    roles = ["lob_coordinator"]

A grant applies when its tenant is the session's tenant or it has none. When the federation
asserts no tenant and the subject's grants name exactly one, that tenant is taken.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit import AuditSink
from gateway.oidc.errors import ConfigError, NoRoleMapping

#: Tenant ids and roles: no Casbin pattern characters, no separators.
TENANT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
ROLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
GRANTS_CHECK_INTERVAL = 1.0
#: What :meth:`Grants.roles_for` answers for a subject without grants (one shared object).
_NO_ROLES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    roles_claim: str
    roles: Mapping[str, str]
    tenant_claim: str | None
    tenants: Mapping[str, str] | None

    def map(self, claims: Mapping[str, Any]) -> tuple[frozenset[str], str | None]:
        """(roles, tenant) asserted by ``claims``; unknown values map to nothing."""
        value = claims.get(self.roles_claim)
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        roles = frozenset(self.roles[v] for v in values if isinstance(v, str) and v in self.roles)
        tenant: str | None = None
        if self.tenant_claim is not None:
            raw = claims.get(self.tenant_claim)
            if isinstance(raw, str):
                if self.tenants is not None:
                    tenant = self.tenants.get(raw)
                elif TENANT_ID.fullmatch(raw.lower()):
                    tenant = raw.lower()
        return roles, tenant


def load_claims(path: Path) -> dict[str, ClaimMapping]:
    """Every mapping in the claims file; raises ConfigError naming the bad entry."""
    data = _read_toml(path)
    mappings = data.get("mappings")
    if not isinstance(mappings, dict):
        raise ConfigError(f"{path}: expected [mappings.NAME] tables")
    return {name: _mapping(path, name, table) for name, table in mappings.items()}


def _mapping(path: Path, name: str, table: Any) -> ClaimMapping:
    where = f"{path}: mappings.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(table) - {"roles_claim", "roles", "tenant_claim", "tenants"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    roles_claim, roles = table.get("roles_claim"), table.get("roles")
    if not isinstance(roles_claim, str) or not isinstance(roles, dict):
        raise ConfigError(f"{where}: roles_claim (a string) and a roles table are required")
    for value, role in roles.items():
        if not isinstance(role, str) or not ROLE_NAME.fullmatch(role):
            raise ConfigError(f"{where}.roles.{value}: not a role name: {role!r}")
    tenant_claim, tenants = table.get("tenant_claim"), table.get("tenants")
    if tenant_claim is not None and not isinstance(tenant_claim, str):
        raise ConfigError(f"{where}.tenant_claim: expected a string")
    if tenants is not None:
        if not isinstance(tenants, dict):
            raise ConfigError(f"{where}.tenants: expected a table")
        for value, tenant in tenants.items():
            if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
                raise ConfigError(f"{where}.tenants.{value}: not a tenant id: {tenant!r}")
    return ClaimMapping(
        roles_claim=roles_claim, roles=dict(roles), tenant_claim=tenant_claim, tenants=tenants
    )


@dataclass(frozen=True, slots=True)
class Grant:
    issuer: str
    subject: str
    tenant: str | None
    roles: frozenset[str]


def load_grants(path: Path) -> frozenset[tuple[str, str, str | None, str]]:
    """Every (issuer, subject, tenant, role) granted; a missing file grants nothing."""
    if not path.exists():
        return frozenset()
    data = _read_toml(path)
    unknown = set(data) - {"grants"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    found: set[tuple[str, str, str | None, str]] = set()
    for position, entry in enumerate(data.get("grants", [])):
        where = f"{path}: grants[{position}]"
        if not isinstance(entry, dict) or set(entry) - {"issuer", "subject", "tenant", "roles"}:
            raise ConfigError(f"{where}: expected issuer, subject, tenant, roles")
        issuer, subject, tenant, roles = (
            entry.get("issuer"),
            entry.get("subject"),
            entry.get("tenant"),
            entry.get("roles"),
        )
        if not isinstance(issuer, str) or not isinstance(subject, str) or not subject:
            raise ConfigError(f"{where}: issuer and subject are required strings")
        if tenant is not None and (not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant)):
            raise ConfigError(f"{where}: not a tenant id: {tenant!r}")
        if not isinstance(roles, list) or not roles:
            raise ConfigError(f"{where}: roles must be a non-empty list")
        for role in roles:
            if not isinstance(role, str) or not ROLE_NAME.fullmatch(role):
                raise ConfigError(f"{where}: not a role name: {role!r}")
            found.add((issuer, subject, tenant, role))
    return frozenset(found)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


class Grants:
    """The grants file, re-read when it changes (checked at most once a second).

    Every change is an audit event per (issuer, subject, tenant, role): ``role_granted`` or
    ``role_revoked``. A file that fails to parse keeps the previous grants and is reported as
    a ``grants_reload_failed`` event; it never drops everyone's grants.
    """

    def __init__(
        self, *, path: Path, sink: AuditSink, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path = path
        self._sink = sink
        self._clock = clock
        self._stamp = self._file_stamp()
        self._grants = load_grants(path)  # a broken file at start-up is fatal
        self._index = _index(self._grants)
        self._roles = _roles(self._index)
        self._checked = clock()

    def roles_for(self, issuer: str, subject: str, tenant: str | None) -> frozenset[str]:
        """The roles granted to the subject in ``tenant`` (and everywhere): the same frozenset
        object at every call until the grants change (the session authenticator relies on
        ``is`` to reuse what it built from them)."""
        self._maybe_reload()
        found = self._roles.get((issuer, subject))
        if found is None:
            return _NO_ROLES
        return found[1].get(tenant, found[0])

    def tenants_for(self, issuer: str, subject: str) -> frozenset[str]:
        self._maybe_reload()
        return frozenset(t for t in self._index.get((issuer, subject), {}) if t is not None)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked < GRANTS_CHECK_INTERVAL:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self.reload(stamp)

    def reload(self, stamp: tuple[int, int] | None = None) -> None:
        """Re-read the file now; emit one event per grant added or removed."""
        try:
            new = load_grants(self._path)
        except ConfigError as exc:
            self._sink.emit(
                {
                    "event.kind": "event",
                    "event.action": "grants_reload_failed",
                    "event.category": ["configuration", "iam"],
                    "event.type": ["change"],
                    "event.outcome": "failure",
                    "error.message": str(exc),
                }
            )
            self._stamp = stamp
            return
        self._emit_changes(new - self._grants, "role_granted", "creation")
        self._emit_changes(self._grants - new, "role_revoked", "deletion")
        index = _index(new)
        self._grants, self._index, self._roles = new, index, _roles(index)
        self._stamp = stamp or self._file_stamp()

    def _emit_changes(
        self, changes: Iterable[tuple[str, str, str | None, str]], action: str, kind: str
    ) -> None:
        for issuer, subject, tenant, role in sorted(changes, key=str):
            event: dict[str, Any] = {
                "event.kind": "event",
                "event.action": action,
                "event.category": ["iam"],
                "event.type": [kind, "group"],
                "event.outcome": "success",
                "user.target.id": f"{issuer}|{subject}",
                "user.target.roles": [role],
                "labels": {"issuer": issuer, "source": str(self._path)},
            }
            if tenant is not None:
                event["organization.id"] = tenant
            self._sink.emit(event)


def _index(
    grants: frozenset[tuple[str, str, str | None, str]],
) -> dict[tuple[str, str], dict[str | None, frozenset[str]]]:
    index: dict[tuple[str, str], dict[str | None, set[str]]] = {}
    for issuer, subject, tenant, role in grants:
        index.setdefault((issuer, subject), {}).setdefault(tenant, set()).add(role)
    return {
        key: {tenant: frozenset(roles) for tenant, roles in by_tenant.items()}
        for key, by_tenant in index.items()
    }


def _roles(
    index: dict[tuple[str, str], dict[str | None, frozenset[str]]],
) -> dict[tuple[str, str], tuple[frozenset[str], dict[str | None, frozenset[str]]]]:
    """Per (issuer, subject): the roles granted everywhere, and per tenant those plus the
    tenant's own (what :meth:`Grants.roles_for` answers, built once per grants file)."""
    merged: dict[tuple[str, str], tuple[frozenset[str], dict[str | None, frozenset[str]]]] = {}
    for key, by_tenant in index.items():
        everywhere = by_tenant.get(None, _NO_ROLES)
        merged[key] = (
            everywhere,
            {tenant: everywhere | roles for tenant, roles in by_tenant.items()},
        )
    return merged


def resolve_roles(
    *,
    mapping: ClaimMapping,
    grants: Grants,
    idp: str,
    subject: str,
    claims: Mapping[str, Any],
) -> tuple[frozenset[str], frozenset[str], str | None]:
    """(federated roles, all roles, tenant) at login; raises NoRoleMapping when none apply."""
    federated, tenant = mapping.map(claims)
    if tenant is None:
        granted_tenants = grants.tenants_for(idp, subject)
        if len(granted_tenants) == 1:
            tenant = next(iter(granted_tenants))
    roles = federated | grants.roles_for(idp, subject, tenant)
    if not roles:
        raise NoRoleMapping(f"no role for {mapping.roles_claim} and no grant")
    return federated, roles, tenant
