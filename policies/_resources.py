"""The route and role data file (resources.toml): route families, data categories, roles.

``Resources.classify(method, path)`` tells the gateway which route family a canonical path
belongs to, which data categories (a to f of the privacy statement) it exposes, and whether that
is personal data of someone other than the caller, so it can emit personal-data access events.
Route patterns here are literal text except ``:name`` (one segment) and a final ``/*``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from policies._syntax import TENANT_VAR
from policies.errors import ResourcesInvalid

__all__ = ["CATEGORIES", "Family", "Resources", "RoleInfo", "Route", "RouteInfo"]

#: The data categories of the privacy statement (DESIGN.md §1).
CATEGORIES: Final[Mapping[str, str]] = {
    "a": "account and contact data",
    "b": "platform usage (activities, registrations, preferences, progress)",
    "c": "communications",
    "d": "technical data (IP, browser, timestamps)",
    "e": "images (with consent)",
    "f": "cookie data",
}
GRANTED_BY: Final = frozenset({"federation", "local", "builtin"})
TENANT_KINDS: Final = frozenset({"none", "school", "supplier"})
#: Sample values used to turn a route pattern into a concrete path (review and lint).
SAMPLE_TENANT: Final = "tenant-a"
OTHER_TENANT: Final = "tenant-b"
SAMPLE_VALUE: Final = "x1"
#: ``classify`` answers remembered (cleared when full), for paths up to this length.
CLASSIFY_CACHE_SIZE: Final = 16_384
MAX_CLASSIFIED_PATH: Final = 256

_SEGMENT: Final = re.compile(r"[A-Za-z0-9_~.-]+|:[a-z][a-z0-9_]*")
_ROUTE: Final = re.compile(r"([A-Z]{1,20}) (/\S*)")


@dataclass(frozen=True, slots=True)
class RoleInfo:
    """A role as resources.toml describes it."""

    name: str
    description: str
    granted_by: str | None
    tenant: str
    abstract: bool
    cross_tenant: bool
    #: Roles whose reach to others' personal data lint checks against ``others_data_families``.
    limited: bool = False
    others_data_families: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Family:
    """A route family: what it exposes, about whom."""

    name: str
    description: str
    categories: tuple[str, ...]
    others_personal_data: bool
    data_subjects: tuple[str, ...]
    #: The path parameter that names the person whose data a route exposes, if any.
    subject_param: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """One method and path pattern of a family."""

    family: Family
    method: str
    pattern: str

    @property
    def has_tenant(self) -> bool:
        return f"/:{TENANT_VAR}" in self.pattern

    def sample_path(self, tenant: str = SAMPLE_TENANT) -> str:
        """A concrete path of this route, with ``tenant`` in its ``:tenant`` segment."""
        segments = [
            tenant
            if segment == f":{TENANT_VAR}"
            else SAMPLE_VALUE
            if segment.startswith(":") or segment == "*"
            else segment
            for segment in self.pattern.split("/")
        ]
        return "/".join(segments) or "/"

    def regex(self) -> re.Pattern[str]:
        if self.pattern == "/":
            return re.compile("/")
        parts = []
        for segment in self.pattern[1:].split("/"):
            if segment == "*":
                parts.append(".*")
            elif segment.startswith(":"):
                parts.append(f"(?P<{segment[1:]}>[^/]+)")
            else:
                parts.append(re.escape(segment))
        return re.compile("/" + "/".join(parts))


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """What ``classify`` answers: the route's family and what it exposes."""

    family: str
    categories: tuple[str, ...]
    others_personal_data: bool
    data_subjects: tuple[str, ...]
    method: str
    pattern: str
    #: The path's ``:tenant`` segment (whose data it is), ``None`` when the route has none.
    tenant: str | None = None
    #: The path segment naming the data subject (the family's ``subject_param``), if any.
    subject_id: str | None = None


def _problem(pattern: str) -> str | None:
    if pattern == "/":
        return None
    if not pattern.startswith("/"):
        return "starts with /"
    segments = pattern[1:].split("/")
    for position, segment in enumerate(segments):
        if segment == "*" and position == len(segments) - 1:
            continue
        if not _SEGMENT.fullmatch(segment):
            return f"bad segment {segment!r}"
    return None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ResourcesInvalid(f"{where}: expected a list of strings")
    return tuple(value)


def _optional_name(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", value):
        raise ResourcesInvalid(f"{where}: expected a parameter name")
    return value


def _role(name: str, data: Any) -> RoleInfo:
    where = f"roles.{name}"
    if not isinstance(data, dict):
        raise ResourcesInvalid(f"{where}: expected a table")
    abstract = data.get("abstract", False)
    granted_by = data.get("granted_by")
    tenant = data.get("tenant", "none")
    if not isinstance(abstract, bool) or not isinstance(data.get("cross_tenant", False), bool):
        raise ResourcesInvalid(f"{where}: abstract and cross_tenant are true or false")
    if not abstract and granted_by not in GRANTED_BY:
        raise ResourcesInvalid(f"{where}: granted_by is one of {sorted(GRANTED_BY)}")
    if tenant not in TENANT_KINDS:
        raise ResourcesInvalid(f"{where}: tenant is one of {sorted(TENANT_KINDS)}")
    return RoleInfo(
        name=name,
        description=str(data.get("description", "")),
        granted_by=None if abstract else granted_by,
        tenant=tenant,
        abstract=abstract,
        cross_tenant=data.get("cross_tenant", False),
        limited=bool(data.get("limited", False)),
        others_data_families=_strings(
            data.get("others_data_families", []), f"{where}.others_data_families"
        ),
    )


def _family(name: str, data: Any) -> tuple[Family, list[Route]]:
    where = f"families.{name}"
    if not isinstance(data, dict):
        raise ResourcesInvalid(f"{where}: expected a table")
    categories = _strings(data.get("categories"), f"{where}.categories")
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise ResourcesInvalid(f"{where}: unknown data categories {unknown}")
    others = data.get("others_personal_data")
    if not isinstance(others, bool):
        raise ResourcesInvalid(f"{where}: others_personal_data is true or false")
    family = Family(
        name=name,
        description=str(data.get("description", "")),
        categories=categories,
        others_personal_data=others,
        data_subjects=_strings(data.get("data_subjects", []), f"{where}.data_subjects"),
        subject_param=_optional_name(data.get("subject_param"), f"{where}.subject_param"),
    )
    routes = []
    for text in _strings(data.get("routes"), f"{where}.routes"):
        found = _ROUTE.fullmatch(text)
        problem = "not 'METHOD /path'" if found is None else _problem(found.group(2))
        if found is None or problem is not None:
            raise ResourcesInvalid(f"{where}: route {text!r}: {problem}")
        routes.append(Route(family=family, method=found.group(1), pattern=found.group(2)))
    return family, routes


class Resources:
    """The parsed resources file, with a route classifier."""

    def __init__(
        self,
        *,
        roles: Mapping[str, RoleInfo],
        families: Mapping[str, Family],
        routes: list[Route],
        test_mappings: tuple[str, ...] = (),
    ) -> None:
        self.roles = dict(roles)
        #: Claims mappings used only by test and demo identity providers (lint ignores them).
        self.test_mappings = test_mappings
        self.families = dict(families)
        self.routes = tuple(routes)
        self._by_method: dict[str, list[tuple[re.Pattern[str], Route, RouteInfo]]] = {}
        self._classified: dict[tuple[str, str], RouteInfo | None] = {}
        #: (method, first path segment) -> candidates; routes starting with :name go under None.
        self._index: dict[tuple[str, str | None], list[tuple[re.Pattern[str], RouteInfo]]] = {}
        for route in self.routes:
            info = RouteInfo(
                family=route.family.name,
                categories=route.family.categories,
                others_personal_data=route.family.others_personal_data,
                data_subjects=route.family.data_subjects,
                method=route.method,
                pattern=route.pattern,
            )
            self._by_method.setdefault(route.method, []).append((route.regex(), route, info))
            first = route.pattern[1:].split("/", 1)[0]
            segment = None if first.startswith(":") or first == "*" else first
            self._index.setdefault((route.method, segment), []).append((route.regex(), info))
        for (method, segment), candidates in self._index.items():
            if segment is not None:
                candidates.extend(self._index.get((method, None), ()))
        for route in self.routes:
            path = route.sample_path()
            claimed = [
                other
                for _, other, _ in self._by_method[route.method]
                if other.regex().fullmatch(path)
            ]
            if claimed != [route]:
                names = ", ".join(f"{r.method} {r.pattern}" for r in claimed)
                raise ResourcesInvalid(f"routes overlap: {path} is claimed by {names}")

    @classmethod
    def from_file(cls, path: Path) -> Resources:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ResourcesInvalid(f"{path.name}: cannot be read: {exc}") from exc
        roles_data = data.get("roles", {})
        families_data = data.get("families", {})
        if not isinstance(roles_data, dict) or not isinstance(families_data, dict):
            raise ResourcesInvalid(f"{path.name}: [roles] and [families] are tables")
        roles = {name: _role(name, value) for name, value in roles_data.items()}
        families: dict[str, Family] = {}
        routes: list[Route] = []
        for name, value in families_data.items():
            family, family_routes = _family(name, value)
            families[name] = family
            routes.extend(family_routes)
        claims = data.get("claims", {})
        if not isinstance(claims, dict):
            raise ResourcesInvalid(f"{path.name}: [claims] is a table")
        test_mappings = _strings(claims.get("test_mappings", []), "claims.test_mappings")
        return cls(roles=roles, families=families, routes=routes, test_mappings=test_mappings)

    def classify(self, method: str, path: str) -> RouteInfo | None:
        """The route a canonical path belongs to, or ``None`` for an unknown route.

        ``HEAD`` is classified as ``GET`` (it is decided as GET too). Answers for short paths
        are remembered (bounded): the object is never changed after it is built, and a reload
        builds a new one, so a remembered answer is always this file's.
        """
        key = (method, path)
        cache = self._classified
        if key in cache:
            return cache[key]
        found = self._classify(method, path)
        if len(path) <= MAX_CLASSIFIED_PATH:
            if len(cache) >= CLASSIFY_CACHE_SIZE:
                cache.clear()
            cache[key] = found
        return found

    def _classify(self, method: str, path: str) -> RouteInfo | None:
        if method == "HEAD":
            method = "GET"
        end = path.find("/", 1)
        segment = path[1:] if end < 0 else path[1:end]
        candidates = self._index.get((method, segment)) or self._index.get((method, None)) or ()
        for regex, info in candidates:
            found = regex.fullmatch(path)
            if found is not None:
                params = found.groupdict()
                if not params:
                    return info
                subject = self.families[info.family].subject_param
                return RouteInfo(
                    family=info.family,
                    categories=info.categories,
                    others_personal_data=info.others_personal_data,
                    data_subjects=info.data_subjects,
                    method=info.method,
                    pattern=info.pattern,
                    tenant=params.get(TENANT_VAR),
                    subject_id=params.get(subject) if subject else None,
                )
        return None
