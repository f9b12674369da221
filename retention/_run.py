"""The retention job: per category, delete events past retention and minimise events past full
detail, never what an active hold covers.

Each active hold becomes an :class:`audit.Scope` in ``exclude``, so the stores themselves skip
held events (the OpenSearch store drops a daily index whole only when the scope, holds
excluded, selects every event in it). Deletion runs before minimisation, so nothing is
minimised only to be deleted. The active holds are read again right before each store call
(not once per run), which narrows the window for a hold placed during a run to one call;
closing it completely needs the run lock of issue #8 (not built yet).

A dry run counts what would change and changes nothing. Every run, dry or not, ends with a
``retention_run`` audit event carrying the counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit import AuditSink, AuditStore, RetentionRecorder, Scope
from audit.events import Action, Category
from retention._holdstore import HoldStore
from retention._rules import RetentionRule

__all__ = ["CategoryCounts", "RetentionJob", "RunReport"]


@dataclass(frozen=True, slots=True)
class CategoryCounts:
    """What one category's run did (or would do): changed and held back, per action."""

    category: Category
    deleted: int
    held_from_deletion: int
    minimised: int
    held_from_minimisation: int


@dataclass(frozen=True, slots=True)
class RunReport:
    """The outcome of one run."""

    now: datetime
    dry_run: bool
    categories: tuple[CategoryCounts, ...]
    active_holds: tuple[str, ...]

    @property
    def deleted(self) -> int:
        return sum(c.deleted for c in self.categories)

    @property
    def minimised(self) -> int:
        return sum(c.minimised for c in self.categories)

    def text(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            f"retention run at {self.now.isoformat()}{' (dry run)' if self.dry_run else ''};"
            f" {len(self.active_holds)} active hold(s)",
            f"{'category':<22} {verb:>13} {'held':>8} {'minimised':>10} {'held':>8}",
        ]
        for c in self.categories:
            lines.append(
                f"{c.category.value:<22} {c.deleted:>13} {c.held_from_deletion:>8}"
                f" {c.minimised:>10} {c.held_from_minimisation:>8}"
            )
        return "\n".join(lines)

    def event(self) -> dict[str, Any]:
        """The ``retention_run`` audit event (counts as labels)."""
        labels: dict[str, str] = {
            "dry_run": str(self.dry_run).lower(),
            "run_time": self.now.isoformat(),
            "active_holds": str(len(self.active_holds)),
        }
        for c in self.categories:
            labels[f"deleted_{c.category.value}"] = str(c.deleted)
            labels[f"held_from_deletion_{c.category.value}"] = str(c.held_from_deletion)
            labels[f"minimised_{c.category.value}"] = str(c.minimised)
            labels[f"held_from_minimisation_{c.category.value}"] = str(c.held_from_minimisation)
        return {
            "event.action": Action.RETENTION_RUN.value,
            "event.outcome": "success",
            "labels": labels,
        }


class RetentionJob:
    """Applies ``rules`` to ``events``, sparing every active hold of ``holds``."""

    def __init__(
        self,
        *,
        events: AuditStore,
        holds: HoldStore,
        rules: Mapping[Category, RetentionRule],
        sink: AuditSink,
        recorder: RetentionRecorder | None = None,
    ) -> None:
        self._events = events
        self._recorder = recorder  # tamper evidence: signed records of each change (#12)
        self._holds = holds
        self._rules = dict(rules)
        self._sink = sink

    def _excluded(self) -> list[Scope]:
        return [hold.audit_scope() for hold in self._holds.holds(active=True)]

    def run(self, *, now: datetime, dry_run: bool = False) -> RunReport:
        """One run at ``now`` (aware); emits ``retention_run`` with the counts."""
        if now.tzinfo is None:
            raise ValueError("the run time needs a time zone")
        if self._recorder is not None and not dry_run:
            self._recorder.begin(now)
        self._events.refresh()
        counts = tuple(
            self._category(category, rule, now, dry_run) for category, rule in self._rules.items()
        )
        active = tuple(h.hold_id for h in self._holds.holds(active=True))
        report = RunReport(now=now, dry_run=dry_run, categories=counts, active_holds=active)
        self._sink.emit(report.event())
        return report

    def _category(
        self, category: Category, rule: RetentionRule, now: datetime, dry_run: bool
    ) -> CategoryCounts:
        expired = Scope(categories=(category.value,), until=now - rule.delete_after)
        deleted, held_deleted = self._apply(expired, dry_run, self._events.delete)
        minimised = held_minimised = 0
        if rule.full_detail is not None:
            # Past retention only held events remain, and a hold spares them from both.
            aged = Scope(
                categories=(category.value,),
                since=expired.until,
                until=now - rule.full_detail,
                minimised=False,
            )
            minimised, held_minimised = self._apply(aged, dry_run, self._events.minimise)
        return CategoryCounts(category, deleted, held_deleted, minimised, held_minimised)

    def _apply(self, scope: Scope, dry_run: bool, action: Any) -> tuple[int, int]:
        """(changed, held back) for ``action`` over ``scope`` minus the active holds."""
        excluded: Sequence[Scope] = self._excluded()
        if dry_run:
            changed = self._events.count(scope, exclude=excluded)
            return changed, self._events.count(scope) - changed
        if self._recorder is not None:
            changed = self._recorder.apply(action, scope, excluded)
        else:
            changed = int(action(scope, exclude=excluded))
        self._events.refresh()
        return changed, self._events.count(scope)
