"""The policy in force, and its safe hot reload.

:class:`PolicyStore` holds one immutable :class:`PolicyState` (the checked policy, its compiled
evaluator with its decision cache, and the route map). ``decide`` and ``classify`` read the
current state with one attribute read; ``reload`` builds a whole new state from the files,
checks it (strict parse, supported model, route file, the policy test table, and lint errors
unless ``lint_errors_block=False``) and swaps it in
with one assignment. On any failure the old state stays in force. Either way it emits an
audit event: ``policy_reloaded`` (with the new hashes and what changed) or
``policy_reload_failed`` (with a stable reason and the error); the names are those of the
audit taxonomy (``audit.events.Action``), which the issue wrote as ``policy.reloaded``.

``reload`` is synchronous and takes a few milliseconds plus the table (about 850 cases): call it
from a worker thread in async code (``anyio.to_thread.run_sync(store.reload)``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from audit import AuditSink, MemorySink
from gateway.types import Decision
from policies._diff import diff_sources
from policies._evaluator import DEFAULT_CACHE_SIZE, FastEvaluator
from policies._resources import Resources, RouteInfo
from policies._review import lint, report_files
from policies._source import PolicySource, load_source
from policies._table import load_table, run_table
from policies.errors import PolicyError, PolicyLintFailed, PolicyTestsFailed

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_POLICY",
    "DEFAULT_RESOURCES",
    "DEFAULT_TABLE",
    "PolicyState",
    "PolicyStore",
]

_HERE: Final = Path(__file__).resolve().parent
DEFAULT_MODEL: Final = _HERE / "model.conf"
DEFAULT_POLICY: Final = _HERE / "policy.csv"
DEFAULT_RESOURCES: Final = _HERE / "resources.toml"
DEFAULT_TABLE: Final = _HERE / "policy_tests.csv"
#: How many changed lines a reload event spells out (the counts are always complete).
MAX_CHANGES_IN_EVENT: Final = 20
_MAX_ERROR_LENGTH: Final = 2000
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Everything one policy version decides with; replaced whole, never changed."""

    source: PolicySource
    evaluator: FastEvaluator
    resources: Resources
    table_cases: int
    #: Of the resources file's bytes: a reload that changes only the route map still applies.
    resources_sha256: str = ""


def build_state(
    *,
    model: Path,
    policy: Path,
    resources: Path,
    table: Path,
    cache_size: int,
    lint_errors_block: bool = True,
) -> PolicyState:
    """Load and check a complete state (raises :class:`PolicyError`)."""
    source = load_source(model, policy)
    routes = Resources.from_file(resources)
    resources_sha256 = hashlib.sha256(resources.read_bytes()).hexdigest()
    evaluator = FastEvaluator(source, cache_size=cache_size)
    cases = load_table(table)
    failures = run_table(evaluator, cases)
    if failures:
        shown = "; ".join(failures[:5])
        raise PolicyTestsFailed(
            f"{len(failures)} of {len(cases)} policy tests fail: {shown}",
            failures=tuple(failures),
        )
    if lint_errors_block:
        errors = [str(f) for f in lint(source, routes) if f.level == "error"]
        if errors:
            raise PolicyLintFailed(f"{len(errors)} lint errors: {'; '.join(errors[:5])}")
    return PolicyState(
        source=source,
        evaluator=evaluator,
        resources=routes,
        table_cases=len(cases),
        resources_sha256=resources_sha256,
    )


class PolicyStore:
    """The authorizer the gateway calls, with ``reload()`` for SIGHUP and file changes."""

    def __init__(
        self,
        *,
        model_path: Path = DEFAULT_MODEL,
        policy_path: Path = DEFAULT_POLICY,
        resources_path: Path = DEFAULT_RESOURCES,
        table_path: Path = DEFAULT_TABLE,
        sink: AuditSink | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        lint_errors_block: bool = True,
    ) -> None:
        self.paths = {
            "model": Path(model_path),
            "policy": Path(policy_path),
            "resources": Path(resources_path),
            "table": Path(table_path),
        }
        self._sink: AuditSink = sink if sink is not None else MemorySink()
        self._cache_size = cache_size
        self._lint_errors_block = lint_errors_block
        self._lock = threading.Lock()
        #: Counters for the gateway's metrics.
        self.reloads_succeeded = 0
        self.reloads_failed = 0
        # At start-up a broken policy is fatal: raise, so the gateway refuses to start.
        self._state = self._build()

    @classmethod
    def from_files(
        cls,
        model_path: Path = DEFAULT_MODEL,
        policy_path: Path = DEFAULT_POLICY,
        *,
        resources_path: Path = DEFAULT_RESOURCES,
        table_path: Path = DEFAULT_TABLE,
        sink: AuditSink | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        lint_errors_block: bool = True,
    ) -> PolicyStore:
        """Load the policy in force from files; raises :class:`PolicyError` if it is unusable."""
        return cls(
            model_path=model_path,
            policy_path=policy_path,
            resources_path=resources_path,
            table_path=table_path,
            sink=sink,
            cache_size=cache_size,
            lint_errors_block=lint_errors_block,
        )

    def _build(self) -> PolicyState:
        return build_state(
            model=self.paths["model"],
            policy=self.paths["policy"],
            resources=self.paths["resources"],
            table=self.paths["table"],
            cache_size=self._cache_size,
            lint_errors_block=self._lint_errors_block,
        )

    @property
    def state(self) -> PolicyState:
        return self._state

    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision:
        """The current policy's decision (see :mod:`policies._decision`); never raises."""
        return self._state.evaluator.decide(roles=roles, tenant=tenant, method=method, path=path)

    def classify(self, method: str, path: str) -> RouteInfo | None:
        """The route family of a canonical path (see :mod:`policies._resources`)."""
        return self._state.resources.classify(method, path)

    def personal_data(self, method: str, path: str) -> dict[str, Any] | None:
        """Audit fields for a route exposing someone else's personal data, else ``None``.

        Fits the gateway's ``PersonalDataClassifier``: ``audit.data_categories`` plus
        ``labels`` naming the route family, whose data it is (``data_subjects``), the tenant
        the data belongs to, and ``user.target.id`` when the route names the data subject.
        """
        route = self._state.resources.classify(method, path)
        if route is None or not route.others_personal_data:
            return None
        labels: dict[str, Any] = {
            "route_family": route.family,
            "data_subjects": ",".join(route.data_subjects),
        }
        if route.tenant is not None:
            labels["data_tenant"] = route.tenant
        fields: dict[str, Any] = {
            "audit.data_categories": list(route.categories),
            "labels": labels,
        }
        if route.subject_id is not None:
            fields["user.target.id"] = route.subject_id
        return fields

    def review_report(self, *, claims_text: str | None = None) -> dict[str, str]:
        """The review outputs of the policy in force (file name -> text), for /_gateway/policies.

        Names: matrix.md, matrix.csv, matrix.html, reach.md, lint.txt; pass the claims
        file's text to include its checks in lint.txt. Takes tens of milliseconds: cache it per
        ``state.source.policy_sha256``.
        """
        state = self._state
        return report_files(state.source, state.resources, claims_text=claims_text)

    def reload(self) -> bool:
        """Load, check and swap in the files' current policy; keep the old one on any failure.

        Returns whether the new policy is in force. Emits ``policy_reloaded`` or
        ``policy_reload_failed``; never raises for a bad policy (an audit sink that refuses
        the event may raise :class:`audit.AuditUnavailable`).
        """
        with self._lock:
            old = self._state
            try:
                new = self._build()
            except PolicyError as exc:
                self.reloads_failed += 1
                self._emit_failure(old, exc.code, type(exc).__name__, str(exc))
                return False
            except Exception as exc:  # a bug must not take the policy in force down with it
                self.reloads_failed += 1
                self._emit_failure(old, "policy_reload_error", type(exc).__name__, str(exc))
                return False
            unchanged = (
                new.source.policy_sha256 == old.source.policy_sha256
                and new.source.model_sha256 == old.source.model_sha256
                and new.resources_sha256 == old.resources_sha256
            )
            if not unchanged:
                self._state = new
            self.reloads_succeeded += 1
            self._emit_success(old, new, unchanged=unchanged)
            return True

    def _labels(self, state: PolicyState) -> dict[str, Any]:
        return {
            "policy_sha256": state.source.policy_sha256,
            "model_sha256": state.source.model_sha256,
            "policy_rules": len(state.source.rules),
            "policy_role_links": len(state.source.links),
        }

    def _emit_success(self, old: PolicyState, new: PolicyState, *, unchanged: bool) -> None:
        diff = diff_sources(old.source, new.source)
        logger.info("policy reloaded (%s): %s", new.source.policy_sha256[:16], diff.summary())
        words = diff.words()
        shown = words[:MAX_CHANGES_IN_EVENT]
        more = len(words) - len(shown)
        changes = "no change" if unchanged else diff.summary()
        if shown:
            changes += ". " + "; ".join(shown) + (f"; and {more} more" if more else "")
        labels = self._labels(new) | {
            "previous_policy_sha256": old.source.policy_sha256,
            "previous_model_sha256": old.source.model_sha256,
            "rules_added": len(diff.added_rules),
            "rules_removed": len(diff.removed_rules),
            "role_links_added": len(diff.added_links),
            "role_links_removed": len(diff.removed_links),
            "policy_tests": new.table_cases,
            "policy_changes": changes,
        }
        self._sink.emit(
            {
                "event.kind": "event",
                "event.category": ["configuration"],
                "event.type": ["change"],
                "event.action": "policy_reloaded",
                "event.outcome": "success",
                "event.reason": "policy_unchanged" if unchanged else "policy_changed",
                "labels": labels,
            }
        )

    def _emit_failure(self, old: PolicyState, reason: str, error_type: str, error: str) -> None:
        logger.warning("policy reload refused (%s), keeping the policy in force: %s", reason, error)
        self._sink.emit(
            {
                "event.kind": "event",
                "event.category": ["configuration"],
                "event.type": ["error"],
                "event.action": "policy_reload_failed",
                "event.outcome": "failure",
                "event.reason": reason,
                "error.type": error_type,
                "error.message": error[:_MAX_ERROR_LENGTH],
                "labels": self._labels(old),
            }
        )
