"""The demo people: one for each role (and tenant where the role has one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Person:
    subject: str
    name: str
    roles: tuple[str, ...]
    tenant: str | None

    def claims(self) -> dict[str, object]:
        found: dict[str, object] = {
            "sub": self.subject,
            "name": self.name,
            "roles": list(self.roles),
        }
        if self.tenant is not None:
            found["tenant"] = self.tenant
        return found


def _person(role: str, tenant: str | None, name: str) -> Person:
    subject = f"demo-{role.replace('_', '-')}" + (f"-{tenant}" if tenant else "")
    return Person(subject=subject, name=name, roles=(role,), tenant=tenant)


PEOPLE: tuple[Person, ...] = (
    _person("student", "school-a", "Sanne Leerling (school A)"),
    _person("student", "school-b", "Bram Leerling (school B)"),
    _person("teacher", "school-a", "Tom Docent (school A)"),
    _person("teacher", "school-b", "Tessa Docent (school B)"),
    _person("lob_coordinator", "school-a", "Lotte LOB-coördinator (school A)"),
    _person("school_admin", "school-a", "Sam Schoolbeheerder (school A)"),
    _person("supplier", "org-techniek", "Sven Aanbieder (Techniek BV)"),
    _person("platform_staff", None, "Petra Coördinatiepunt"),
    _person("security_officer", None, "Sarah Security"),
    _person("incident_responder", None, "Ivo Incident"),
    _person("compliance_reviewer", None, "Carla Compliance"),
    _person("platform_admin", None, "Arjen Beheer"),
)


def by_subject(subject: str) -> Person | None:
    return next((person for person in PEOPLE if person.subject == subject), None)
