"""The demo's data: two schools, two supplier organisations, a handful of activities and pupils.

Fictional throughout. Kept in memory; a restart resets it.
"""

from __future__ import annotations

import copy
from typing import Any

SCHOOLS: dict[str, dict[str, Any]] = {
    "school-a": {"id": "school-a", "name": "Het Regiocollege", "brin": "99XA", "city": "Zwolle"},
    "school-b": {
        "id": "school-b",
        "name": "Lyceum aan de IJssel",
        "brin": "99XB",
        "city": "Deventer",
    },
}

PROVIDERS: dict[str, dict[str, Any]] = {
    "org-techniek": {"id": "org-techniek", "name": "Techniekhuis Oost BV", "sector": "techniek"},
    "org-zorg": {"id": "org-zorg", "name": "Zorggroep De Linde", "sector": "zorg"},
}

ACTIVITIES: dict[str, dict[str, Any]] = {
    "act-1": {
        "id": "act-1",
        "provider": "org-techniek",
        "title": "Bedrijfsbezoek: robots in de fabriek",
        "kind": "company_visit",
        "date": "2027-02-11",
        "places": 24,
    },
    "act-2": {
        "id": "act-2",
        "provider": "org-techniek",
        "title": "Snuffelstage elektrotechniek",
        "kind": "taster_internship",
        "date": "2027-03-04",
        "places": 6,
    },
    "act-3": {
        "id": "act-3",
        "provider": "org-zorg",
        "title": "Gastles: werken in de zorg",
        "kind": "guest_lesson",
        "date": "2027-02-20",
        "places": 30,
    },
}

STUDENTS: dict[str, dict[str, Any]] = {
    "stu-1": {"id": "stu-1", "school": "school-a", "name": "Sanne de Vries", "class": "3H2"},
    "stu-2": {"id": "stu-2", "school": "school-a", "name": "Daan Bakker", "class": "3H2"},
    "stu-3": {"id": "stu-3", "school": "school-b", "name": "Noor Jansen", "class": "4V1"},
}

REGISTRATIONS: dict[str, dict[str, Any]] = {
    "reg-1": {"id": "reg-1", "student": "stu-1", "activity": "act-1", "status": "confirmed"},
    "reg-2": {"id": "reg-2", "student": "stu-2", "activity": "act-3", "status": "waiting"},
    "reg-3": {"id": "reg-3", "student": "stu-3", "activity": "act-2", "status": "confirmed"},
}


class Store:
    """A fresh, mutable copy of the demo data per app."""

    def __init__(self) -> None:
        self.schools = copy.deepcopy(SCHOOLS)
        self.providers = copy.deepcopy(PROVIDERS)
        self.activities = copy.deepcopy(ACTIVITIES)
        self.students = copy.deepcopy(STUDENTS)
        self.registrations = copy.deepcopy(REGISTRATIONS)
        self.newsletters: list[dict[str, Any]] = []
        self._next = 100

    def new_id(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}-{self._next}"
