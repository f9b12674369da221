"""Differences between two policies, line by line, in words a reviewer reads.

:mod:`policies._review` adds the effective differences (what each role can reach on each known
route before and after); this module says which lines changed, which is what a reload event
summarises.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from policies._source import Link, PolicySource, Rule

__all__ = ["PolicyDiff", "diff_sources", "rule_in_words"]

_SCOPE_WORDS: Final = {
    "all": "",
    "tenant": " (callers with a tenant)",
    "own": " (own tenant only)",
}


def rule_in_words(rule: Rule) -> str:
    """``teacher may GET /api/schools/:tenant/students (own tenant only)`` and the like."""
    method = "any method on" if rule.method == "*" else rule.method
    verb = "may" if rule.effect == "allow" else "is refused"
    return (
        f"{rule.role} {verb} {method} {rule.pattern.replace(chr(92), '')}{_SCOPE_WORDS[rule.scope]}"
    )


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    """Lines only in the new policy (added) and only in the old one (removed)."""

    added_rules: tuple[Rule, ...]
    removed_rules: tuple[Rule, ...]
    added_links: tuple[Link, ...]
    removed_links: tuple[Link, ...]

    @property
    def empty(self) -> bool:
        return not (
            self.added_rules or self.removed_rules or self.added_links or self.removed_links
        )

    def words(self) -> list[str]:
        """One sentence per changed line: grants first, then revocations, then inheritance."""
        sentences = [
            f"granted: {rule_in_words(r)}" for r in self.added_rules if r.effect == "allow"
        ]
        sentences += [
            f"revoked: {rule_in_words(r)}" for r in self.removed_rules if r.effect == "allow"
        ]
        sentences += [
            f"new refusal: {rule_in_words(r)}" for r in self.added_rules if r.effect == "deny"
        ]
        sentences += [
            f"refusal lifted: {rule_in_words(r)}" for r in self.removed_rules if r.effect == "deny"
        ]
        sentences += [
            f"{link.role} now inherits every permission of {link.inherits}"
            for link in self.added_links
        ]
        sentences += [
            f"{link.role} no longer inherits the permissions of {link.inherits}"
            for link in self.removed_links
        ]
        return sentences

    def summary(self) -> str:
        return (
            f"{len(self.added_rules)} rules added, {len(self.removed_rules)} removed, "
            f"{len(self.added_links)} role links added, {len(self.removed_links)} removed"
        )


def diff_sources(old: PolicySource, new: PolicySource) -> PolicyDiff:
    """The lines that differ (order and spacing are not differences)."""
    old_rules = {rule.text for rule in old.rules}
    new_rules = {rule.text for rule in new.rules}
    old_links = {link.text for link in old.links}
    new_links = {link.text for link in new.links}
    return PolicyDiff(
        added_rules=_unique(r for r in new.rules if r.text not in old_rules),
        removed_rules=_unique(r for r in old.rules if r.text not in new_rules),
        added_links=tuple(link for link in new.links if link.text not in old_links),
        removed_links=tuple(link for link in old.links if link.text not in new_links),
    )


def _unique(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    seen: set[str] = set()
    kept = []
    for rule in rules:
        if rule.text not in seen:
            seen.add(rule.text)
            kept.append(rule)
    return tuple(kept)
