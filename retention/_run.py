"""The retention job: per category, delete events past retention and minimise events past full
detail, never what an active hold covers.

A run takes the run lock (a lease in the store, renewed while it runs: two runs never
overlap), then **plans** and executes the plan's **steps**:

- the plan lists, per action (delete, then minimise), category and daily index, how many
  events the step would change and how many an active hold keeps; it is computed from the
  store's state at ``now``, so it is idempotent: a run interrupted at any point (killed, lock
  lost, stopped) leaves work that the next run's plan simply contains again;
- each step is one store call over one category's events of one day, with every active hold
  as an ``exclude`` scope, so the stores themselves skip held events (the OpenSearch store
  drops a daily index whole when the scope, holds excluded, selects every event in it, or
  most of them after copying the few it spares, held or not yet due, to the day's ``-kept``
  index under their ids, where search, export and ``verify`` find them as before). A run
  killed between that copy and the drop leaves the spared events twice, and the day's index
  write-blocked: the next run, under the lock and before planning, undoes such a move
  (``OpenSearchStore.undo_interrupted_moves``: the copies removed, the block lifted; its
  report lists the day under ``unblocked``) and its plan moves the day again if still due.

**A hold placed while a run is in progress**: right before each step, and inside each step
right before every change the store makes (each bulk request of deletions or minimisations,
each index drop: the store's ``guard``), the job reads the active holds again, fresh from the
hold store (OpenSearch: a search of the hold index, which ``add`` refreshes before answering),
and compares them with the plan's. If they changed, the step stops before that change, and
the job plans again (counting again, with the new hold) and goes on with the new hold
excluded. So a hold whose placement has completed before the store's next request is sent
protects its events. What remains:

- OpenSearch: a hold stored between the guard's read and the node executing that one request
  (one bulk request of at most ``batch`` events, or one index drop whose spared events were
  already copied to ``-kept``): milliseconds, not a whole step;
- SQLite: none when the holds are in the events' database file (the default): each step is
  one write transaction and the guard reads the holds inside it, holding the write lock, so
  a hold stored concurrently waits until the step is committed (it was placed after).

A dry run plans and changes nothing (and takes no lock). Every run, dry or not, is recorded in
the run store with its report and ends with a ``retention_run`` audit event.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from audit import AuditSink, AuditStore, OpenSearchStore, RetentionRecorder, Scope
from audit.errors import StoreError
from audit.events import Action, Category, index_name
from retention._holds import Hold
from retention._holdstore import HoldStore
from retention._rules import RetentionRule
from retention._runstore import Lease, RunRecord, RunStore
from retention.errors import LockLost, RunLocked

__all__ = [
    "DEFAULT_LEASE",
    "CategoryCounts",
    "HoldCounts",
    "IndexCounts",
    "Plan",
    "RetentionJob",
    "RunReport",
    "Step",
]

#: How long the run lock lasts without renewal; renewed every quarter of it while running.
DEFAULT_LEASE: Final = timedelta(minutes=2)
DAY: Final = timedelta(days=1)
StepAction = Literal["delete", "minimise"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Step:
    """One store call of a plan: ``action`` over ``scope`` (one category, one day)."""

    action: StepAction
    category: Category
    index: str  # the day's index, without the deployment prefix: audit-events-YYYY.MM.DD
    scope: Scope
    selected: int  # events the step changes, as planned
    held: int  # events in the scope that an active hold keeps

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.action, self.category.value, self.index)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run does at ``now`` given the active ``holds``: deletions first, oldest first."""

    now: datetime
    holds: tuple[Hold, ...]
    steps: tuple[Step, ...]

    @property
    def hold_ids(self) -> frozenset[str]:
        return frozenset(h.hold_id for h in self.holds)


@dataclass(frozen=True, slots=True)
class CategoryCounts:
    """What one category's run did (or would do): changed and held back, per action."""

    category: Category
    deleted: int
    held_from_deletion: int
    minimised: int
    held_from_minimisation: int


@dataclass(frozen=True, slots=True)
class IndexCounts:
    """What one action did to one category's events in one daily index."""

    index: str
    category: Category
    action: StepAction
    changed: int
    held: int


@dataclass(frozen=True, slots=True)
class HoldCounts:
    """How many events past their period one hold keeps (holds may overlap)."""

    hold_id: str
    incident_id: str
    held_from_deletion: int
    held_from_minimisation: int


@dataclass(frozen=True, slots=True)
class RunReport:
    """The outcome of one run."""

    now: datetime
    dry_run: bool
    categories: tuple[CategoryCounts, ...]
    active_holds: tuple[str, ...]
    run_id: str = ""
    indices: tuple[IndexCounts, ...] = ()
    holds: tuple[HoldCounts, ...] = ()
    complete: bool = True  # False: stopped early; the next run does the rest
    completes: tuple[str, ...] = ()  # interrupted runs whose work this one finished
    replans: int = 0  # plans made again because the active holds changed mid-run
    unblocked: tuple[str, ...] = ()  # write blocks an interrupted run had left

    @property
    def deleted(self) -> int:
        return sum(c.deleted for c in self.categories)

    @property
    def minimised(self) -> int:
        return sum(c.minimised for c in self.categories)

    def text(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        state = " (dry run)" if self.dry_run else "" if self.complete else " (stopped early)"
        lines = [
            f"retention run {self.run_id} at {self.now.isoformat()}{state};"
            f" {len(self.active_holds)} active hold(s)",
        ]
        if self.completes:
            lines.append(f"completes interrupted run(s): {', '.join(self.completes)}")
        if self.replans:
            lines.append(f"planned again {self.replans} time(s): the active holds changed")
        if self.unblocked:
            lines.append(f"lifted stale write blocks: {', '.join(self.unblocked)}")
        lines += [
            "",
            f"{'category':<22} {verb:>13} {'held':>8} {'minimised':>10} {'held':>8}",
        ]
        for c in self.categories:
            lines.append(
                f"{c.category.value:<22} {c.deleted:>13} {c.held_from_deletion:>8}"
                f" {c.minimised:>10} {c.held_from_minimisation:>8}"
            )
        if self.indices:
            head = f"{'index':<30} {'category':<22} {'action':<9} {'changed':>9} {'held':>8}"
            lines += ["", head]
            for i in self.indices:
                lines.append(
                    f"{i.index:<30} {i.category.value:<22} {i.action:<9} {i.changed:>9} {i.held:>8}"
                )
        if self.holds:
            lines += ["", f"{'hold':<34} {'incident':<20} {'kept whole':>10} {'unminimised':>12}"]
            for h in self.holds:
                lines.append(
                    f"{h.hold_id:<34} {h.incident_id:<20} {h.held_from_deletion:>10}"
                    f" {h.held_from_minimisation:>12}"
                )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as stored in the run store."""
        return {
            "run_id": self.run_id,
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "complete": self.complete,
            "completes": list(self.completes),
            "replans": self.replans,
            "unblocked": list(self.unblocked),
            "active_holds": list(self.active_holds),
            "categories": [
                {
                    "category": c.category.value,
                    "deleted": c.deleted,
                    "held_from_deletion": c.held_from_deletion,
                    "minimised": c.minimised,
                    "held_from_minimisation": c.held_from_minimisation,
                }
                for c in self.categories
            ],
            "indices": [
                {
                    "index": i.index,
                    "category": i.category.value,
                    "action": i.action,
                    "changed": i.changed,
                    "held": i.held,
                }
                for i in self.indices
            ],
            "holds": [
                {
                    "hold_id": h.hold_id,
                    "incident_id": h.incident_id,
                    "held_from_deletion": h.held_from_deletion,
                    "held_from_minimisation": h.held_from_minimisation,
                }
                for h in self.holds
            ],
        }

    def event(self) -> dict[str, Any]:
        """The ``retention_run`` audit event (totals as labels; the whole report is stored)."""
        labels: dict[str, str] = {
            "run_id": self.run_id,
            "dry_run": str(self.dry_run).lower(),
            "complete": str(self.complete).lower(),
            "run_time": self.now.isoformat(),
            "active_holds": str(len(self.active_holds)),
        }
        for c in self.categories:
            labels[f"deleted_{c.category.value}"] = str(c.deleted)
            labels[f"held_from_deletion_{c.category.value}"] = str(c.held_from_deletion)
            labels[f"minimised_{c.category.value}"] = str(c.minimised)
            labels[f"held_from_minimisation_{c.category.value}"] = str(c.held_from_minimisation)
        for h in self.holds:
            labels[f"held_by_{h.hold_id}"] = str(h.held_from_deletion + h.held_from_minimisation)
        if self.completes:
            labels["completes"] = ",".join(self.completes)
        return {
            "event.action": Action.RETENTION_RUN.value,
            "event.outcome": "success" if self.complete else "unknown",
            "labels": labels,
        }


class _LeaseKeeper:
    """Renews the lease in a thread; :meth:`check` raises once it is lost or nearly out."""

    def __init__(
        self, store: RunStore, lease: Lease, duration: timedelta, clock: Callable[[], datetime]
    ) -> None:
        self.lease = lease
        self._store = store
        self._duration = duration
        self._clock = clock
        self._error: LockLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention-lease", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._duration.total_seconds() / 4):
            try:
                self.lease = self._store.renew(
                    self.lease, now=self._clock(), duration=self._duration
                )
            except LockLost as exc:
                self._error = exc
                return
            except StoreError:  # transient: try again; check() stops the run if it lasts
                continue

    def check(self) -> None:
        """Raise :class:`LockLost` when another run took over or half the lease has gone
        without a renewal (so a step never starts on a lease that may run out under it)."""
        if self._error is not None:
            raise self._error
        if self.lease.expires_at - self._clock() < self._duration / 2:
            raise LockLost("the lease could not be renewed; stopping before the next step")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _HoldGuard:
    """The store's guard for one step: before each change, the lease is checked and the
    active holds read again; a change of holds stops the step (and is kept for the replan)."""

    def __init__(self, holds: HoldStore, planned: frozenset[str], keeper: _LeaseKeeper) -> None:
        self._holds = holds
        self._planned = planned
        self._keeper = keeper
        self.changed: list[Hold] | None = None

    def __call__(self) -> bool:
        self._keeper.check()
        active = self._holds.holds(active=True)
        if frozenset(h.hold_id for h in active) != self._planned:
            self.changed = active
            return False
        return True


class RetentionJob:
    """Applies ``rules`` to ``events``, sparing every active hold of ``holds``.

    ``runs`` keeps the run lock and the reports. ``after_plan`` and ``after_step`` are called
    after each plan and each executed step (with the number changed): for tests and for
    recording what a run does.
    """

    def __init__(
        self,
        *,
        events: AuditStore,
        holds: HoldStore,
        rules: Mapping[Category, RetentionRule],
        sink: AuditSink,
        runs: RunStore,
        owner: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
        clock: Callable[[], datetime] = _utcnow,
        after_plan: Callable[[Plan], None] | None = None,
        after_step: Callable[[Step, int], None] | None = None,
        recorder: RetentionRecorder | None = None,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        self._events = events
        self._recorder = recorder  # tamper evidence: signed records of each change (#12)
        self._holds = holds
        self._rules = dict(rules)
        self._sink = sink
        self._runs = runs
        self._owner = owner or _default_owner()
        self._lease = lease
        self._clock = clock
        self._after_plan = after_plan
        self._after_step = after_step

    # --- planning ---------------------------------------------------------------------------

    def _action_scopes(self, now: datetime) -> list[tuple[StepAction, Category, Scope]]:
        """Per category: what is past retention, then what is past full detail only."""
        found: list[tuple[StepAction, Category, Scope]] = []
        for category, rule in self._rules.items():
            expired = Scope(categories=(category.value,), until=now - rule.delete_after)
            found.append(("delete", category, expired))
        for category, rule in self._rules.items():
            if rule.full_detail is not None:
                found.append(
                    (
                        "minimise",
                        category,
                        Scope(
                            categories=(category.value,),
                            since=now - rule.delete_after,
                            until=now - rule.full_detail,
                            minimised=False,
                        ),
                    )
                )
        return found

    def _days(self, scope: Scope) -> list[datetime]:
        """The UTC days (midnight) on which ``scope`` selects events, oldest first."""
        days = []
        for (week,), _count in sorted(self._events.counts(scope, by=["week"]).items()):
            monday = datetime.fromisoformat(week).replace(tzinfo=UTC)
            for offset in range(7):
                day = monday + offset * DAY
                if (scope.until is None or day < scope.until) and (
                    scope.since is None or day + DAY > scope.since
                ):
                    days.append(day)
        return days

    def plan(self, now: datetime, holds: Sequence[Hold] | None = None) -> Plan:
        """The steps of a run at ``now`` with the active ``holds`` (read when not given)."""
        if now.tzinfo is None:
            raise ValueError("the run time needs a time zone")
        active = tuple(self._holds.holds(active=True) if holds is None else holds)
        excluded = [h.audit_scope() for h in active]
        steps: list[Step] = []
        for action, category, scope in self._action_scopes(now):
            for day in self._days(scope):
                since = day if scope.since is None else max(day, scope.since)
                until = day + DAY if scope.until is None else min(day + DAY, scope.until)
                day_scope = replace(scope, since=since, until=until)
                total = self._events.count(day_scope)
                if total == 0:
                    continue
                selected = self._events.count(day_scope, exclude=excluded) if excluded else total
                steps.append(
                    Step(
                        action=action,
                        category=category,
                        index=index_name("", day.isoformat()),
                        scope=day_scope,
                        selected=selected,
                        held=total - selected,
                    )
                )
        plan = Plan(now=now, holds=active, steps=tuple(steps))
        if self._after_plan is not None:
            self._after_plan(plan)
        return plan

    def _held_by_hold(self, now: datetime, holds: Sequence[Hold]) -> tuple[HoldCounts, ...]:
        counts = []
        for hold in holds:
            kept = {"delete": 0, "minimise": 0}
            for action, _category, scope in self._action_scopes(now):
                both = _intersect(scope, hold.audit_scope())
                if both is not None:
                    kept[action] += self._events.count(both)
            counts.append(
                HoldCounts(hold.hold_id, hold.incident_id, kept["delete"], kept["minimise"])
            )
        return tuple(counts)

    # --- running ----------------------------------------------------------------------------

    def run(
        self, *, now: datetime, dry_run: bool = False, stop: threading.Event | None = None
    ) -> RunReport:
        """One run at ``now`` (aware): lock, plan, steps; stores the report and emits
        ``retention_run``. Raises :class:`RunLocked` while another run holds the lock, and
        :class:`LockLost` (before a step) if the lease is lost. ``stop`` ends it early
        between two steps (the report says so; the next run does the rest)."""
        if now.tzinfo is None:
            raise ValueError("the run time needs a time zone")
        run_id = uuid.uuid4().hex
        if dry_run:
            self._events.refresh()
            plan = self.plan(now)
            changed = {s.key: s.selected for s in plan.steps}
            report = self._report(run_id, plan, changed, dry_run=True)
            self._runs.start_run(RunRecord(run_id, self._owner, self._clock(), "dry_run"))
            self._runs.end_run(run_id, state="dry_run", report=report.to_json())
            self._sink.emit(report.event())
            return report
        lease = self._runs.acquire(owner=self._owner, now=self._clock(), duration=self._lease)
        if lease is None:
            holder = self._runs.holder()
            who = "another run" if holder is None else holder.owner
            until = "" if holder is None else f" (lease until {holder.expires_at.isoformat()})"
            raise RunLocked(f"{who} holds the retention run lock{until}")
        keeper = _LeaseKeeper(self._runs, lease, self._lease, self._clock)
        try:
            report = self._locked_run(run_id, now, keeper, stop)
        finally:
            keeper.stop()
            with contextlib.suppress(StoreError):  # unreleased, the lease simply runs out
                self._runs.release(keeper.lease)
        return report

    def _locked_run(
        self, run_id: str, now: datetime, keeper: _LeaseKeeper, stop: threading.Event | None
    ) -> RunReport:
        completes = tuple(r.run_id for r in self._runs.runs(state="started"))
        for earlier in completes:
            self._runs.end_run(earlier, state="interrupted", report={"completed_by": run_id})
        self._runs.start_run(RunRecord(run_id, self._owner, self._clock(), "started"))
        if self._recorder is not None:
            self._recorder.begin(now, run_id=run_id)
        # a move to ``-kept`` killed before its drop: undone first (copies gone, block lifted)
        undone = (
            self._events.undo_interrupted_moves()
            if isinstance(self._events, OpenSearchStore)
            else []
        )
        unblocked = tuple(sorted({*undone, *self._runs.clear_stale_blocks()}))
        self._events.refresh()
        plan = self.plan(now)
        changed: dict[tuple[str, str, str], int] = {}
        replans, complete = 0, True
        pending = list(plan.steps)
        while pending:
            step = pending.pop(0)
            if step.selected == 0:
                continue
            if stop is not None and stop.is_set():
                complete = False
                break
            keeper.check()
            holds = self._holds.holds(active=True)
            if frozenset(h.hold_id for h in holds) != plan.hold_ids:
                plan = self.plan(now, holds)
                replans += 1
                pending = list(plan.steps)
                continue
            guard = _HoldGuard(self._holds, plan.hold_ids, keeper)
            excluded = [h.audit_scope() for h in holds]
            act = self._events.delete if step.action == "delete" else self._events.minimise
            if self._recorder is not None:  # signed record of what the step changes (#12)
                done = int(self._recorder.apply(act, step.scope, excluded, guard=guard))
            else:
                done = int(act(step.scope, exclude=excluded, guard=guard))
            changed[step.key] = changed.get(step.key, 0) + done
            if self._after_step is not None:
                self._after_step(step, done)
            if guard.changed is not None:  # a hold came or went mid-step: count again
                plan = self.plan(now, guard.changed)
                replans += 1
                pending = list(plan.steps)
        report = self._report(
            run_id,
            plan,
            changed,
            dry_run=False,
            complete=complete,
            completes=completes,
            replans=replans,
            unblocked=unblocked,
        )
        self._runs.end_run(
            run_id, state="finished" if complete else "stopped", report=report.to_json()
        )
        self._sink.emit(report.event())
        return report

    def _report(
        self,
        run_id: str,
        plan: Plan,
        changed: Mapping[tuple[str, str, str], int],
        *,
        dry_run: bool,
        complete: bool = True,
        completes: tuple[str, ...] = (),
        replans: int = 0,
        unblocked: tuple[str, ...] = (),
    ) -> RunReport:
        held = {s.key: s.held for s in plan.steps}
        keys = sorted(set(held) | set(changed), key=lambda k: (k[0] != "delete", k[2], k[1]))
        indices = tuple(
            IndexCounts(
                index=index,
                category=Category(category),
                action="delete" if action == "delete" else "minimise",
                changed=changed.get((action, category, index), 0),
                held=held.get((action, category, index), 0),
            )
            for action, category, index in keys
        )
        categories = tuple(
            CategoryCounts(
                category,
                sum(i.changed for i in indices if i.category is category and i.action == "delete"),
                sum(i.held for i in indices if i.category is category and i.action == "delete"),
                sum(
                    i.changed for i in indices if i.category is category and i.action == "minimise"
                ),
                sum(i.held for i in indices if i.category is category and i.action == "minimise"),
            )
            for category in self._rules
        )
        return RunReport(
            now=plan.now,
            dry_run=dry_run,
            categories=categories,
            active_holds=tuple(sorted(plan.hold_ids)),
            run_id=run_id,
            indices=indices,
            holds=self._held_by_hold(plan.now, plan.holds),
            complete=complete,
            completes=completes,
            replans=replans,
            unblocked=unblocked,
        )


def _intersect(scope: Scope, held: Scope) -> Scope | None:
    """The events both select (a retention scope and a hold's), or None when none can be."""
    categories = tuple(scope.categories)
    if held.categories:
        categories = tuple(c for c in categories if c in held.categories)
        if not categories:
            return None
    bounds = [m for m in (scope.since, held.since) if m is not None]
    since = max(bounds) if bounds else None
    ends = [m for m in (scope.until, held.until) if m is not None]
    until = min(ends) if ends else None
    if since is not None and until is not None and since >= until:
        return None
    return replace(
        scope,
        categories=categories,
        since=since,
        until=until,
        user_ids=held.user_ids,
        source_ips=held.source_ips,
        organization_ids=held.organization_ids,
    )
