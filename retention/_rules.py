"""Retention rules per category (DESIGN.md §4) and the log inventory generated from them.

A rule says how long a category's events keep full detail (then the stores' ``minimise``
truncates the source IP to /24 or /48 and drops the user agent) and when they are deleted.
The backbone's own trail is never minimised (``full_detail=None``: kept whole until deletion).

Configuration overrides defaults per category with entries ``CATEGORY=FULL/DELETE`` in days,
``-`` for "never minimised", e.g. ``errors=30/90`` or ``backbone=-/730``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from audit.events import ACTIONS, FIELDS, Category
from retention.errors import InvalidRule

__all__ = ["DEFAULT_RULES", "RetentionRule", "inventory", "parse_rules", "rules_with"]


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One category's periods: full detail (None: never minimised), then deletion."""

    category: Category
    full_detail: timedelta | None
    delete_after: timedelta

    def __post_init__(self) -> None:
        if self.delete_after <= timedelta(0):
            raise InvalidRule(f"{self.category}: deletion period must be positive")
        if self.full_detail is not None and not (
            timedelta(0) < self.full_detail <= self.delete_after
        ):
            raise InvalidRule(
                f"{self.category}: full detail must be positive and not longer than retention"
            )


def _days(n: int) -> timedelta:
    return timedelta(days=n)


#: DESIGN.md §4: 30 days of full detail, then minimised; deleted after 365/90/730 days.
DEFAULT_RULES: Final[Mapping[Category, RetentionRule]] = {
    Category.AUTHENTICATION: RetentionRule(Category.AUTHENTICATION, _days(30), _days(365)),
    Category.ACCESS_DENIED: RetentionRule(Category.ACCESS_DENIED, _days(30), _days(365)),
    Category.PERSONAL_DATA: RetentionRule(Category.PERSONAL_DATA, _days(30), _days(365)),
    Category.ERRORS: RetentionRule(Category.ERRORS, _days(30), _days(90)),
    Category.BACKBONE: RetentionRule(Category.BACKBONE, None, _days(730)),
}


def _parse_days(text: str, entry: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise InvalidRule(f"{entry!r}: {text!r} is not a whole number of days") from None
    return days


def parse_rules(entries: Iterable[str]) -> dict[Category, RetentionRule]:
    """Overrides ``CATEGORY=FULL/DELETE`` (days; FULL may be ``-``) applied to the defaults."""
    found: dict[Category, RetentionRule] = {}
    names = ", ".join(c.value for c in Category)
    for entry in entries:
        name, sep, periods = entry.partition("=")
        full, slash, delete = periods.partition("/")
        if not sep or not slash:
            raise InvalidRule(f"{entry!r} is not CATEGORY=FULL_DAYS/DELETE_DAYS")
        try:
            category = Category(name.strip())
        except ValueError:
            raise InvalidRule(f"{entry!r}: unknown category (categories: {names})") from None
        if category in found:
            raise InvalidRule(f"{entry!r}: category {category} given twice")
        full = full.strip()
        full_detail = None if full == "-" else _days(_parse_days(full, entry))
        found[category] = RetentionRule(
            category, full_detail, _days(_parse_days(delete.strip(), entry))
        )
    return rules_with(found)


def rules_with(overrides: Mapping[Category, RetentionRule]) -> dict[Category, RetentionRule]:
    """The defaults with ``overrides`` replacing whole categories."""
    return {category: overrides.get(category, rule) for category, rule in DEFAULT_RULES.items()}


def _period(value: timedelta | None) -> str:
    return "kept whole" if value is None else f"{value.days} days"


def inventory(rules: Mapping[Category, RetentionRule]) -> str:
    """The log inventory: per category its actions, the fields it holds, and its periods."""
    fields = ", ".join(
        f.name + (f" (minimised: {f.minimise.replace('_', ' ')})" if f.minimise else "")
        for f in FIELDS
    )
    lines = ["Audit log inventory (retention per category)", ""]
    for category, rule in rules.items():
        actions = sorted(a for a, spec in ACTIONS.items() if spec.category is category)
        lines.append(f"{category.value}")
        lines.append(f"  actions:      {', '.join(actions)}")
        lines.append(f"  fields:       {fields}")
        lines.append(f"  full detail:  {_period(rule.full_detail)}")
        if rule.full_detail is None:
            lines.append("  then:         never minimised")
        else:
            lines.append("  then:         source.ip truncated (/24, /48), user_agent dropped")
        lines.append(f"  deleted after {rule.delete_after.days} days (unless a hold covers it)")
        lines.append("")
    return "\n".join(lines)
