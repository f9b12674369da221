"""Compliance review: who can reach what, what changed, and what is risky.

Everything here is computed from decisions of the same evaluator the gateway uses, over the
known routes of resources.toml, so the report says what is enforced, not what a rule seems to
say. Cells of the permission matrix (one role, one route):

``any tenant``     allowed whatever tenant the path names (or with no tenant at all)
``own tenant``     allowed only when the path's tenant is the caller's own
``yes``            allowed (the route names no tenant)
``tenant members`` allowed only to callers who belong to a tenant
``—``              denied
"""

from __future__ import annotations

import csv
import html
import io
import re
import tomllib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from policies._diff import diff_sources
from policies._evaluator import MAX_HIERARCHY_LEVEL, FastEvaluator, role_closure
from policies._resources import CATEGORIES, OTHER_TENANT, SAMPLE_TENANT, Resources, Route
from policies._source import PolicySource, Rule
from policies._syntax import keymatch2_regex

__all__ = [
    "Finding",
    "MatrixRow",
    "claims_findings",
    "effective_changes",
    "lint",
    "matrix",
    "reach_markdown",
    "render_csv",
    "render_html",
    "render_markdown",
    "report_files",
]

ANY: Final = "any tenant"
OWN: Final = "own tenant"
YES: Final = "yes"
MEMBERS: Final = "tenant members"
ONLY_WITHOUT: Final = "only without tenant"
NO: Final = "—"
_AUDIT_PATHS: Final = ("/_gateway/audit", "/_gateway/audit/x1", "/_gateway/audit/x1/x2")
_AUDIT_WRITES: Final = ("DELETE", "PUT", "PATCH")


@dataclass(frozen=True, slots=True)
class MatrixRow:
    """One known route and what each role may do on it."""

    route: Route
    cells: dict[str, str]


def _allowed(
    evaluator: FastEvaluator, role: str, tenant: str | None, method: str, path: str
) -> bool:
    return evaluator.decide(roles={role}, tenant=tenant, method=method, path=path).allowed


def _cell(evaluator: FastEvaluator, role: str, route: Route) -> str:
    method = route.method
    if route.has_tenant:
        own = _allowed(evaluator, role, SAMPLE_TENANT, method, route.sample_path(SAMPLE_TENANT))
        cross = _allowed(evaluator, role, SAMPLE_TENANT, method, route.sample_path(OTHER_TENANT))
        bare = _allowed(evaluator, role, None, method, route.sample_path(SAMPLE_TENANT))
        return ANY if cross or bare else OWN if own else NO
    path = route.sample_path()
    without = _allowed(evaluator, role, None, method, path)
    within = _allowed(evaluator, role, SAMPLE_TENANT, method, path)
    if without and within:
        return YES
    return MEMBERS if within else ONLY_WITHOUT if without else NO


def roles_of(resources: Resources) -> list[str]:
    """The roles a mapping can produce, in the file's order."""
    return [name for name, info in resources.roles.items() if not info.abstract]


def matrix(evaluator: FastEvaluator, resources: Resources) -> list[MatrixRow]:
    """The permission matrix: every known route, every producible role."""
    roles = roles_of(resources)
    return [
        MatrixRow(route=route, cells={role: _cell(evaluator, role, route) for role in roles})
        for route in resources.routes
    ]


def _head(route: Route) -> list[str]:
    family = route.family
    return [
        family.name,
        route.method,
        route.pattern,
        " ".join(family.categories) or "none",
        "yes" if family.others_personal_data else "no",
    ]


_COLUMNS: Final = ["family", "method", "route", "categories", "others' data"]


def render_markdown(rows: Sequence[MatrixRow], roles: Sequence[str], *, title: str) -> str:
    lines = [f"# {title}", "", _legend(), ""]
    header = [*_COLUMNS, *roles]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        head = _head(row.route)
        head[2] = f"`{head[2]}`"
        lines.append("| " + " | ".join([*head, *(row.cells[r] for r in roles)]) + " |")
    return "\n".join(lines) + "\n"


def render_csv(rows: Sequence[MatrixRow], roles: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_COLUMNS, *roles])
    for row in rows:
        writer.writerow([*_head(row.route), *(row.cells[r] for r in roles)])
    return out.getvalue()


def render_html(rows: Sequence[MatrixRow], roles: Sequence[str], *, title: str) -> str:
    def cells(values: Iterable[str], tag: str) -> str:
        return "".join(
            f'<{tag} class="{"deny" if v == NO else "allow"}">{html.escape(v)}</{tag}>'
            if tag == "td"
            else f"<{tag}>{html.escape(v)}</{tag}>"
            for v in values
        )

    body = "\n".join(
        "<tr>"
        + "".join(f"<th>{html.escape(v)}</th>" for v in _head(row.route))
        + cells((row.cells[r] for r in roles), "td")
        + "</tr>"
        for row in rows
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>\n<style>"
        "table{border-collapse:collapse;font:13px sans-serif}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
        "td.allow{background:#fde9c9}td.deny{color:#999}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(_legend())}</p>\n"
        f"<table>\n<thead><tr>{cells([*_COLUMNS, *roles], 'th')}</tr></thead>\n"
        f"<tbody>\n{body}\n</tbody></table>\n</body></html>\n"
    )


def _legend() -> str:
    categories = "; ".join(f"{key}: {text}" for key, text in CATEGORIES.items())
    return (
        f"Cells: '{ANY}', '{OWN}', '{YES}', '{MEMBERS}', or '{NO}' (denied). "
        f"Data categories: {categories}."
    )


def reach_markdown(
    rows: Sequence[MatrixRow],
    resources: Resources,
    *,
    title: str,
    categories: Collection[str] | None = None,
    subjects: Collection[str] | None = None,
) -> str:
    """Who can reach each data category, and who can reach each group's personal data.

    ``categories`` / ``subjects`` narrow the answer (``None``: all of them, unless the other
    one is given); unknown names raise ``ValueError``.
    """
    roles = roles_of(resources)
    known_subjects = sorted(
        {s for family in resources.families.values() for s in family.data_subjects}
    )
    for name, given, known in (
        ("category", categories, list(CATEGORIES)),
        ("data subject", subjects, known_subjects),
    ):
        unknown = sorted(set(given or ()) - set(known))
        if unknown:
            raise ValueError(f"unknown {name} {', '.join(unknown)}; known: {', '.join(known)}")
    if categories is None and subjects is None:
        categories, subjects = list(CATEGORIES), known_subjects
    lines = [f"# {title}", ""]

    def section(heading: str, selected: list[MatrixRow]) -> None:
        lines.extend([f"## {heading}", ""])
        found = False
        for role in roles:
            grants = [
                f"{row.route.method} `{row.route.pattern}` ({row.cells[role]})"
                for row in selected
                if row.cells[role] != NO
            ]
            if grants:
                found = True
                lines.append(f"- **{role}**: " + "; ".join(grants))
        if not found:
            lines.append("- nobody")
        lines.append("")

    for key, text in CATEGORIES.items():
        if key not in (categories or ()):
            continue
        section(
            f"Category {key}: {text}",
            [row for row in rows if key in row.route.family.categories],
        )
    for subject in known_subjects:
        if subject not in (subjects or ()):
            continue
        section(
            f"Personal data of {subject.replace('_', ' ')} (someone other than the caller)",
            [
                row
                for row in rows
                if row.route.family.others_personal_data
                and subject in row.route.family.data_subjects
            ],
        )
    return "\n".join(lines)


def effective_changes(
    old: Sequence[MatrixRow], new: Sequence[MatrixRow], roles: Sequence[str]
) -> list[str]:
    """Matrix cells that differ, in words: ``teacher: GET /x (family; b): — -> own tenant``."""
    before = {(row.route.method, row.route.pattern): row for row in old}
    changes = []
    for row in new:
        was = before.get((row.route.method, row.route.pattern))
        for role in roles:
            old_cell = was.cells.get(role, NO) if was else NO
            if old_cell != row.cells[role]:
                family = row.route.family
                categories = ", ".join(family.categories) or "no personal data"
                changes.append(
                    f"{role}: {row.route.method} {row.route.pattern} ({family.name}; "
                    f"{categories}): {old_cell} -> {row.cells[role]}"
                )
    return changes


def diff_in_words(old: PolicySource, new: PolicySource, resources: Resources) -> list[str]:
    """The line changes and the effective access changes between two policies."""
    roles = roles_of(resources)
    lines = diff_sources(old, new).words()
    effective = effective_changes(
        matrix(FastEvaluator(old, cache_size=0), resources),
        matrix(FastEvaluator(new, cache_size=0), resources),
        roles,
    )
    out = ["Lines changed:", *(f"  {line}" for line in lines or ["(none)"])]
    out += ["Effective access changed:", *(f"  {line}" for line in effective or ["(none)"])]
    return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint result; errors make ``review lint`` exit non-zero."""

    level: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.level} {self.code}: {self.message}"


def _rule_routes(rule: Rule, resources: Resources) -> list[Route]:
    regex = re.compile(keymatch2_regex(rule.pattern))
    return [
        route
        for route in resources.routes
        if rule.method in ("*", route.method) and regex.match(route.sample_path()) is not None
    ]


def _rule_findings(source: PolicySource, resources: Resources) -> list[Finding]:
    findings = []
    known = set(resources.roles)
    for rule in source.rules:
        where = f"{source.policy_name}:{rule.line} ({rule.text})"
        if rule.effect == "allow" and rule.method == "*":
            findings.append(Finding("error", "wildcard_grant", f"{where}: allows any method"))
        first = rule.pattern[1:].split("/", 1)[0]
        whole_tree = (first in ("*", "") and rule.pattern != "/") or first.startswith(":")
        if rule.effect == "allow" and whole_tree:
            findings.append(Finding("error", "wildcard_grant", f"{where}: allows a whole tree"))
        elif rule.effect == "allow" and rule.pattern.endswith("/*"):
            findings.append(Finding("warning", "wildcard_path", f"{where}: allows a subtree"))
        role = resources.roles.get(rule.role)
        if (
            rule.effect == "allow"
            and ":tenant" in rule.pattern
            and rule.scope != "own"
            and not (role and role.cross_tenant)
        ):
            findings.append(
                Finding("error", "cross_tenant_reach", f"{where}: any tenant, not only the own")
            )
        if (
            rule.effect == "allow"
            and rule.method in (*_AUDIT_WRITES, "*")
            and any(re.match(keymatch2_regex(rule.pattern), p) for p in _AUDIT_PATHS)
        ):
            findings.append(
                Finding(
                    "error",
                    "audit_deletable",
                    f"{where}: grants {rule.method} on audit events, even if a deny line "
                    "blocks it today",
                )
            )
        if not _rule_routes(rule, resources):
            level = "error" if rule.effect == "allow" else "warning"
            findings.append(Finding(level, "unknown_route", f"{where}: matches no known route"))
        if rule.role not in known:
            findings.append(
                Finding("error", "unknown_role", f"{where}: role {rule.role!r} no mapping produces")
            )
    for link in source.links:
        for name in (link.role, link.inherits):
            if name not in known:
                findings.append(
                    Finding(
                        "error",
                        "unknown_role",
                        f"{source.policy_name}:{link.line} ({link.text}): "
                        f"role {name!r} no mapping produces",
                    )
                )
    return findings


def _cut_off(source: PolicySource, evaluator: FastEvaluator, role: str) -> list[str]:
    """Roles ``role`` inherits through ``g`` lines that pycasbin's depth limit never reaches."""
    parents: dict[str, set[str]] = {}
    for link in source.links:
        parents.setdefault(link.role, set()).add(link.inherits)
    unbounded = role_closure(parents, role, max_level=len(parents) + 2)
    return sorted(unbounded - evaluator.closures.get(role, frozenset({role})))


def _audit_findings(evaluator: FastEvaluator, resources: Resources) -> list[Finding]:
    findings = []
    for name in roles_of(resources):
        for path in _AUDIT_PATHS:
            for method in _AUDIT_WRITES:
                if any(
                    _allowed(evaluator, name, tenant, method, path)
                    for tenant in (SAMPLE_TENANT, None)
                ):
                    findings.append(
                        Finding("error", "audit_deletable", f"{name} may {method} {path}")
                    )
    return findings


def _matrix_findings(rows: Sequence[MatrixRow], resources: Resources) -> list[Finding]:
    findings = []
    for name in roles_of(resources):
        role = resources.roles[name]
        for row in rows:
            cell, route = row.cells[name], row.route
            if cell == ANY and not role.cross_tenant:
                findings.append(
                    Finding(
                        "error",
                        "cross_tenant_reach",
                        f"{name} reaches {route.method} {route.pattern} of any tenant",
                    )
                )
            family = route.family
            if (
                cell != NO
                and role.limited
                and family.others_personal_data
                and family.name not in role.others_data_families
            ):
                findings.append(
                    Finding(
                        "error",
                        "others_personal_data",
                        f"{name} reaches others' personal data: {route.method} "
                        f"{route.pattern} ({family.name})",
                    )
                )
    return findings


def _limited_grant_findings(
    source: PolicySource, evaluator: FastEvaluator, resources: Resources
) -> list[Finding]:
    """Grants of others' personal data to limited roles, even when a deny blocks them today."""
    findings = []
    for rule in source.rules:
        if rule.effect != "allow":
            continue
        for name, role in resources.roles.items():
            if not role.limited or rule.role not in evaluator.closures.get(name, {name}):
                continue
            for route in _rule_routes(rule, resources):
                family = route.family
                if family.others_personal_data and family.name not in role.others_data_families:
                    findings.append(
                        Finding(
                            "error",
                            "others_personal_data",
                            f"{source.policy_name}:{rule.line} ({rule.text}) grants {name} "
                            f"others' personal data: {route.method} {route.pattern}, even if "
                            "a deny line blocks it today",
                        )
                    )
    return findings


def claims_findings(claims_text: str, resources: Resources) -> list[Finding]:
    """Check the OIDC claims mapping (policies/claims.toml) against the roles of resources.toml.

    Every federation role must come from some production mapping (one not named in
    resources.toml's ``test_mappings``); no production mapping may assert a locally granted
    or built-in role; every role a mapping asserts must be a known role.
    """
    try:
        data = tomllib.loads(claims_text)
        mappings = {
            name: {str(v): str(role) for v, role in table.get("roles", {}).items()}
            for name, table in data.get("mappings", {}).items()
        }
    except (tomllib.TOMLDecodeError, AttributeError) as exc:
        return [Finding("error", "claims_unreadable", f"claims file: {exc}")]
    findings = []
    production = {
        name: roles for name, roles in mappings.items() if name not in resources.test_mappings
    }
    produced = {role for roles in production.values() for role in roles.values()}
    for name, info in resources.roles.items():
        if info.granted_by == "federation" and name not in produced:
            findings.append(
                Finding(
                    "error",
                    "unproducible_role",
                    f"{name} is granted by federation, but no production claims mapping asserts it",
                )
            )
    for mapping, roles in mappings.items():
        for value, name in sorted(roles.items()):
            known = resources.roles.get(name)
            where = f"claims mapping {mapping}: {value} -> {name}"
            if known is None or known.abstract:
                findings.append(Finding("error", "unknown_role", f"{where}: not a known role"))
            elif mapping in production and known.granted_by != "federation":
                findings.append(
                    Finding(
                        "error",
                        "federated_local_role",
                        f"{where}: {name} is granted {known.granted_by}, never by a federation",
                    )
                )
    return findings


def lint(
    source: PolicySource, resources: Resources, *, claims_text: str | None = None
) -> list[Finding]:
    """Risky grants and inconsistencies; the shipped policy has no errors.

    With ``claims_text`` (policies/claims.toml), also checks which roles a mapping produces.
    """
    evaluator = FastEvaluator(source, cache_size=0)
    findings = _rule_findings(source, resources)
    findings += _audit_findings(evaluator, resources)
    findings += _matrix_findings(matrix(evaluator, resources), resources)
    findings += _limited_grant_findings(source, evaluator, resources)
    for name in roles_of(resources):
        cut_off = _cut_off(source, evaluator, name)
        if cut_off:
            findings.append(
                Finding(
                    "error",
                    "inheritance_too_deep",
                    f"{name} inherits {', '.join(cut_off[:5])} through more than "
                    f"{MAX_HIERARCHY_LEVEL - 1} links; pycasbin never follows them",
                )
            )
    if claims_text is not None:
        findings += claims_findings(claims_text, resources)
    used = {rule.role for rule in source.rules} | {link.role for link in source.links}
    findings += [
        Finding("warning", "role_unused", f"{name} appears in no policy line")
        for name in roles_of(resources)
        if name not in used
    ]
    return findings


def report_files(
    source: PolicySource, resources: Resources, *, claims_text: str | None = None
) -> dict[str, str]:
    """The committed review outputs for a policy: file name -> content."""
    rows = matrix(FastEvaluator(source, cache_size=0), resources)
    roles = roles_of(resources)
    stamp = f"policy.csv sha256 {source.policy_sha256[:16]}"
    findings = lint(source, resources, claims_text=claims_text)
    errors = sum(f.level == "error" for f in findings)
    lint_text = "".join(f"{finding}\n" for finding in findings)
    return {
        "matrix.md": render_markdown(rows, roles, title=f"Permission matrix ({stamp})"),
        "matrix.csv": render_csv(rows, roles),
        "matrix.html": render_html(rows, roles, title=f"Permission matrix ({stamp})"),
        "reach.md": reach_markdown(rows, resources, title=f"Who can reach what ({stamp})"),
        "lint.txt": f"# lint of {stamp}: {errors} errors\n{lint_text}",
    }
