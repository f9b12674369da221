"""Policy review and statistics: for compliance reviewers, read only.

* ``/policies``: the permission matrix and the data-category view of the policy in force
  (computed by :mod:`policies._review` from the same evaluator the gateway decides with), the
  lint findings, and the difference with an earlier version: a git revision of the policy
  file (when it lives in a git work tree) or a version this gateway ran earlier since it
  started.
* ``/stats``: counts with small-cell and complementary suppression (:mod:`audit._stats`).
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from audit import COUNT_KEYS, AuditSink, AuditStore, Scope, Statistics
from audit import parse_filters as _parse_filters
from console._audit_pages import requester
from console._render import Page, Renderer
from console.errors import BadForm, NotFound
from policies import (
    CATEGORIES,
    NO,
    FastEvaluator,
    PolicySource,
    PolicyStore,
    diff_in_words,
    lint,
    matrix,
    roles_of,
    source_from_text,
)
from policies.errors import PolicyError

__all__ = ["GIT_TIMEOUT", "PolicyHistory", "ReviewPages"]

GIT_TIMEOUT: Final = 5.0
MAX_GIT_VERSIONS: Final = 20
MAX_SEEN_VERSIONS: Final = 20
_GIT_ID: Final = re.compile(r"git:([0-9a-f]{40})")
_SEEN_ID: Final = re.compile(r"seen:([0-9a-f]{64})")
VIEWS: Final = ("matrix", "categories", "diff", "lint")


@dataclass(frozen=True, slots=True)
class Version:
    """An earlier policy version a reviewer may compare with."""

    id: str
    label: str


class PolicyHistory:
    """Earlier versions of the policy: git revisions of the file, and versions seen running."""

    def __init__(self, *, policy_path: Path) -> None:
        self._path = policy_path.resolve()
        self._seen: OrderedDict[str, tuple[str, PolicySource]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, source: PolicySource) -> None:
        """Record the version in force (called on every review page view)."""
        with self._lock:
            if source.policy_sha256 not in self._seen:
                stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
                self._seen[source.policy_sha256] = (stamp, source)
                while len(self._seen) > MAX_SEEN_VERSIONS:
                    self._seen.popitem(last=False)

    def _git(self, *args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(self._path.parent), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    def versions(self, current: PolicySource) -> list[Version]:
        with self._lock:
            seen = [
                Version(f"seen:{sha}", f"{stamp} (sha256 {sha[:12]}, ran here)")
                for sha, (stamp, _source) in reversed(self._seen.items())
                if sha != current.policy_sha256
            ]
        log = self._git(
            "log", f"-n{MAX_GIT_VERSIONS}", "--format=%H%x09%cs%x09%s", "--", self._path.name
        )
        found = []
        for line in (log or "").splitlines():
            commit, _, rest = line.partition("\t")
            day, _, subject = rest.partition("\t")
            if re.fullmatch(r"[0-9a-f]{40}", commit):
                found.append(Version(f"git:{commit}", f"{day} {commit[:10]} {subject[:80]}"))
        return seen + found

    def source(self, version_id: str, model_text: str) -> PolicySource:
        """The policy of ``version_id``; NotFound when unknown or unreadable."""
        seen = _SEEN_ID.fullmatch(version_id)
        if seen:
            with self._lock:
                entry = self._seen.get(seen.group(1))
            if entry is None:
                raise NotFound()
            return entry[1]
        commit = _GIT_ID.fullmatch(version_id)
        if commit is None:
            raise NotFound()
        top = self._git("rev-parse", "--show-toplevel")
        if top is None:
            raise NotFound()
        try:
            relative = self._path.relative_to(Path(top.strip()).resolve()).as_posix()
        except ValueError:  # the policy file lies outside that work tree
            raise NotFound() from None
        text = self._git("show", f"{commit.group(1)}:{relative}")
        if text is None:
            raise NotFound()
        try:
            return source_from_text(model_text, text)
        except PolicyError as exc:
            raise BadForm(f"that version of the policy does not load: {exc}") from exc


class ReviewPages:
    """Policy review over ``policy`` and statistics over ``store``."""

    def __init__(
        self,
        *,
        policy: PolicyStore,
        history: PolicyHistory,
        store: AuditStore,
        sink: AuditSink,
        renderer: Renderer,
        stats_threshold: int = 10,
    ) -> None:
        self._policy = policy
        self._history = history
        self._statistics = Statistics(store=store, sink=sink, threshold=stats_threshold)
        self._renderer = renderer

    def policies(self, request: Request, page: Page) -> Response:
        view = request.query_params.get("view", "matrix")
        if view not in VIEWS:
            raise BadForm(f"view: one of {', '.join(VIEWS)}")
        state = self._policy.state
        self._history.remember(state.source)
        roles = roles_of(state.resources)
        values: dict[str, Any] = {"view": view, "views": VIEWS, "roles": roles}
        if view in ("matrix", "categories"):
            rows = matrix(FastEvaluator(state.source, cache_size=0), state.resources)
            values["rows"] = rows
            values["reach"] = {
                key: {
                    role: sorted(
                        {
                            r.route.family.name
                            for r in rows
                            if key in r.route.family.categories and r.cells[role] != NO
                        }
                    )
                    for role in roles
                }
                for key in CATEGORIES
            }
        elif view == "lint":
            values["findings"] = lint(state.source, state.resources)
        else:
            values["versions"] = self._history.versions(state.source)
            against = request.query_params.get("against")
            values["against"] = against
            values["diff"] = (
                diff_in_words(
                    self._history.source(against, state.source.model_text),
                    state.source,
                    state.resources,
                )
                if against
                else None
            )
        return self._renderer.render(
            page, "policies.html", sha=state.source.policy_sha256, **values
        )

    def stats(self, request: Request, page: Page) -> Response:
        rows = [r for r in request.query_params.getlist("row") if r] or ["week", "organization.id"]
        column = request.query_params.get("column") or "event.action"
        period = _parse_filters(
            {
                k: [v for v in request.query_params.getlist(k) if v.strip()]
                for k in ("since", "until")
                if any(v.strip() for v in request.query_params.getlist(k))
            }
        )
        try:
            table = self._statistics.table(
                requester(page),
                rows=rows,
                column=column,
                scope=Scope(since=period.since, until=period.until),
            )
        except ValueError as exc:
            raise BadForm(str(exc)) from exc
        return self._renderer.render(
            page,
            "stats.html",
            table=table,
            row_keys=rows,
            column=column,
            keys=COUNT_KEYS,
            since=request.query_params.get("since", ""),
            until=request.query_params.get("until", ""),
        )
