"""The policy test table (policy_tests.csv): requests and the decisions the policy must give.

Run by ``make test`` against both engines, and by every reload against the new policy.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from policies._types import Authorizer
from policies.errors import PolicySyntaxError

__all__ = ["Case", "load_table", "parse_table", "run_table"]

_HEADER: Final = ["roles", "tenant", "method", "path", "expect", "reason"]
_ESCAPE: Final = re.compile(r"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True, slots=True)
class Case:
    """One row: a request and its expected decision."""

    line: int
    roles: frozenset[str]
    tenant: str | None
    method: str
    path: str
    allowed: bool
    reason: str

    def describe(self) -> str:
        roles = "+".join(sorted(self.roles))
        return (
            f"line {self.line}: {roles} ({self.tenant or 'no tenant'}) {self.method} {self.path!r}"
        )


def parse_table(text: str, *, name: str = "policy_tests.csv") -> tuple[Case, ...]:
    """Parse the table (raises :class:`PolicySyntaxError` naming the bad line)."""
    cases: list[Case] = []
    header_seen = False
    for number, row in enumerate(csv.reader(text.split("\n")), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        fields = [field.strip() for field in row]
        if not header_seen:
            if fields != _HEADER:
                raise PolicySyntaxError(f"{name}:{number}: the header is {','.join(_HEADER)}")
            header_seen = True
            continue
        if len(fields) != len(_HEADER) or fields[4] not in ("allow", "deny") or not fields[0]:
            raise PolicySyntaxError(f"{name}:{number}: expected {','.join(_HEADER)}")
        roles, tenant, method, path, expect, reason = fields
        cases.append(
            Case(
                line=number,
                roles=frozenset(roles.split("+")),
                tenant=tenant or None,
                method=method,
                path=_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path),
                allowed=expect == "allow",
                reason=reason,
            )
        )
    if not cases:
        raise PolicySyntaxError(f"{name}: holds no test cases")
    return tuple(cases)


def load_table(path: Path) -> tuple[Case, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicySyntaxError(f"{path.name}: cannot be read: {exc}") from exc
    return parse_table(text, name=path.name)


def run_table(authorizer: Authorizer, cases: tuple[Case, ...]) -> list[str]:
    """Every case the authorizer decides differently, described in words (empty: all pass)."""
    failures = []
    for case in cases:
        got = authorizer.decide(
            roles=case.roles, tenant=case.tenant, method=case.method, path=case.path
        )
        if got.allowed != case.allowed or (case.reason and got.reason != case.reason):
            expected = "allow" if case.allowed else "deny"
            actual = "allow" if got.allowed else "deny"
            failures.append(
                f"{case.describe()}: expected {expected} ({case.reason}), "
                f"got {actual} ({got.reason}; {got.rule or 'no rule'})"
            )
    return failures
