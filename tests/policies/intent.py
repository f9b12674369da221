"""What each role may do, written from DESIGN.md and the issue, independently of policy.csv.

The generated part of ``policies/policy_tests.csv`` is this intent applied to every role and
every route of resources.toml (own tenant and another tenant). After an intended policy change,
change the intent here too, then regenerate the rows::

    .venv/bin/python -m tests.policies.intent > /tmp/rows.csv

and replace the table's generated section with them (``test_table`` checks they agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from policies._resources import Resources, Route

RESOURCES: Final = Path(__file__).resolve().parents[2] / "policies" / "resources.toml"
ROLES: Final = (
    "anonymous",
    "student",
    "teacher",
    "lob_coordinator",
    "school_admin",
    "supplier",
    "platform_staff",
    "security_officer",
    "incident_responder",
    "compliance_reviewer",
    "platform_admin",
)
TENANT_OF: Final = {
    "student": "school-a",
    "teacher": "school-a",
    "lob_coordinator": "school-a",
    "school_admin": "school-a",
    "supplier": "org-a",
}
PUBLIC: Final = frozenset({"catalogue", "gateway_public", "gateway_login"})
TEACHER_READS: Final = (
    ("GET", "/api/schools/:tenant/students"),
    ("GET", "/api/schools/:tenant/students/:id"),
    ("GET", "/api/schools/:tenant/registrations"),
)
SECURITY_READS: Final = tuple(
    ("GET", p)
    for p in (
        "/_gateway/audit",
        "/_gateway/audit/:id",
        "/_gateway/holds",
        "/_gateway/holds/:id",
        "/_gateway/openapi.json",
    )
)
#: The console pages that show events (security staff everything, school admins their tenant).
CONSOLE_BASE: Final = (("GET", "/_gateway/console"), ("GET", "/_gateway/console/static/:file"))
CONSOLE_AUDIT: Final = tuple(
    ("GET", p)
    for p in (
        "/_gateway/console/audit",
        "/_gateway/console/audit/export",
        "/_gateway/console/audit/events/:id",
        "/_gateway/console/subjects",
        "/_gateway/console/subjects/export",
    )
)
CONSOLE_SECURITY: Final = (*CONSOLE_BASE, *CONSOLE_AUDIT, ("GET", "/_gateway/console/holds"))
CONSOLE_INCIDENT: Final = (
    ("POST", "/_gateway/console/holds/confirm"),
    ("POST", "/_gateway/console/holds"),
    ("POST", "/_gateway/console/holds/:id/release"),
    ("GET", "/_gateway/console/sessions"),
    ("POST", "/_gateway/console/sessions/confirm"),
    ("POST", "/_gateway/console/sessions/revoke"),
)
#: role -> {(method, pattern): scope}; scope: "all", "own" (own tenant) or "tenant" (members).
GRANTS: Final[dict[str, dict[tuple[str, str], str]]] = {
    "student": {},  # filled from the own_* families below
    "teacher": dict.fromkeys(TEACHER_READS, "own"),
    "lob_coordinator": dict.fromkeys(TEACHER_READS, "own")
    | {
        ("POST", "/api/schools/:tenant/registrations/:id"): "own",
        ("PUT", "/api/schools/:tenant/registrations/:id"): "own",
        ("DELETE", "/api/schools/:tenant/registrations/:id"): "own",
        ("GET", "/api/schools/:tenant/reports"): "own",
    },
    "school_admin": dict.fromkeys(TEACHER_READS[:2], "own")
    | dict.fromkeys(
        [
            ("GET", "/_gateway/audit"),
            ("GET", "/_gateway/audit/:id"),
            ("GET", "/_gateway/openapi.json"),
            *CONSOLE_BASE,
            *CONSOLE_AUDIT,
        ],
        "tenant",
    ),
    "supplier": {},  # filled from the provider_* families below
    "platform_staff": dict.fromkeys(
        [
            ("GET", "/api/schools/:tenant/students"),
            ("GET", "/api/schools/:tenant/students/:id"),
            ("GET", "/api/schools/:tenant/registrations"),
            ("GET", "/api/schools/:tenant/reports"),
            ("GET", "/api/providers/:tenant/activities"),
            ("GET", "/api/providers/:tenant/activities/:id/registrations"),
            ("GET", "/api/admin/schools"),
            ("GET", "/api/admin/providers"),
            ("POST", "/api/admin/schools"),
            ("POST", "/api/admin/providers"),
            ("POST", "/api/admin/newsletters"),
        ],
        "all",
    ),
    "security_officer": dict.fromkeys((*SECURITY_READS, *CONSOLE_SECURITY), "all"),
    "incident_responder": dict.fromkeys(
        (*SECURITY_READS, *CONSOLE_SECURITY, *CONSOLE_INCIDENT), "all"
    )
    | {
        ("POST", "/_gateway/holds"): "all",
        ("POST", "/_gateway/holds/:id/release"): "all",
        ("POST", "/_gateway/sessions/revoke"): "all",
    },
    "compliance_reviewer": dict.fromkeys(
        [
            ("GET", "/_gateway/policies"),
            ("GET", "/_gateway/policies/:report"),
            ("GET", "/_gateway/stats"),
            ("GET", "/_gateway/stats/:report"),
            ("GET", "/_gateway/openapi.json"),
            *CONSOLE_BASE,
            ("GET", "/_gateway/console/policies"),
            ("GET", "/_gateway/console/stats"),
        ],
        "all",
    ),
    "platform_admin": dict.fromkeys(CONSOLE_BASE, "all"),
    "anonymous": {},
}


def _grants(role: str, routes: tuple[Route, ...]) -> dict[tuple[str, str], str]:
    grants = {(r.method, r.pattern): "all" for r in routes if r.family.name in PUBLIC}
    for route in routes:
        family = route.family.name
        if role == "student" and family in ("own_profile", "own_registrations"):
            grants[(route.method, route.pattern)] = "all"
        if role == "supplier" and family in ("provider_activities", "provider_registrations"):
            grants[(route.method, route.pattern)] = "own"
    return grants | GRANTS[role]


def _explicit_deny(role: str, method: str, path: str) -> bool:
    if path.startswith("/_gateway/audit") and method in ("DELETE", "PUT", "PATCH"):
        return True
    if role == "student" and path.startswith(("/api/schools/", "/api/providers/", "/api/admin/")):
        return True
    return role == "supplier" and (
        path.startswith(("/api/schools/", "/api/admin/", "/api/me/")) or path == "/api/me"
    )


def rows(resources: Resources) -> list[str]:
    """The table rows the intent implies, as CSV lines."""
    out = []
    for role in ROLES:
        tenant = TENANT_OF.get(role, "")
        grants = _grants(role, resources.routes)
        for route in resources.routes:
            scope = grants.get((route.method, route.pattern))
            kind = (
                "school"
                if route.pattern.startswith("/api/schools")
                else ("org" if route.pattern.startswith("/api/providers") else None)
            )
            if kind is None:
                cases = [(route.sample_path(""), False)]
            else:
                own = tenant if tenant.startswith(kind) else f"{kind}-a"
                cases = [(route.sample_path(own), False), (route.sample_path(f"{kind}-b"), True)]
            for path, cross in cases:
                own_tenant = (
                    kind is not None and not cross and bool(tenant) and path.split("/")[3] == tenant
                )
                if _explicit_deny(role, route.method, path):
                    expect, reason = "deny", "explicit_deny"
                elif (
                    scope == "all"
                    or (scope == "tenant" and tenant)
                    or (scope == "own" and own_tenant)
                ):
                    expect, reason = "allow", "allowed"
                else:
                    expect, reason = "deny", "no_matching_rule"
                out.append(f"{role},{tenant},{route.method},{path},{expect},{reason}")
    return out


if __name__ == "__main__":
    print("\n".join(rows(Resources.from_file(RESOURCES))))
