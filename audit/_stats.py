"""Statistics that identify no one: counts with small-cell and complementary suppression.

A table has one row per combination of the row keys (for example week x tenant) and one column
per value of the column key (for example the action), with row totals, column totals and a
grand total. Published counts below ``threshold`` (default 10) but above zero are shown as
``"<10"`` (primary suppression, totals included). Complementary suppression then hides more
entries until no hidden entry can be recovered from the published ones.

Why that holds: every row and every column is one equation (its cells sum to its total; the
totals row and column likewise sum to the grand total). Take the bipartite graph whose nodes are
the rows (plus the totals row) and the columns (plus the totals column) and whose edges are the
hidden entries. A hidden entry is determined by the equations exactly when its edge is a bridge
of that graph (cut it and the sum over one side gives its value); on a cycle it can move up and
down along the cycle without changing any published figure. So we add hidden entries until no
hidden edge is a bridge. Bounds (counts are not negative) can still narrow a hidden value to an
interval; they cannot pin it, because primary cells are at least 1 and complements are chosen
non-zero where possible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from audit._search import ALL_EVENTS_ROLES, Requester, SearchRefused, backbone_event
from audit._sink import AuditSink
from audit._store import COUNT_KEYS, AuditStore, Scope
from audit.events import Action

__all__ = [
    "DEFAULT_COLUMN",
    "DEFAULT_ROWS",
    "DEFAULT_THRESHOLD",
    "STATS_ROLES",
    "Statistics",
    "SuppressedTable",
    "bridges",
    "suppress",
]

DEFAULT_THRESHOLD: Final = 10
#: The funders' table: period x tenant x role (rows) x action (columns).
DEFAULT_ROWS: Final = ("week", "organization.id", "user.roles")
DEFAULT_COLUMN: Final = "event.action"
#: Who may read statistics (the policy decides the route; this is the second check).
STATS_ROLES: Final = frozenset({"compliance_reviewer"}) | ALL_EVENTS_ROLES

Entry = tuple[int, int]  # (row, column); row == len(rows) is the totals row, likewise columns


@dataclass(frozen=True, slots=True)
class SuppressedTable:
    """A count table with every entry, and which entries are hidden."""

    rows: list[tuple[str, ...]]
    columns: list[str]
    values: dict[Entry, int]  # every entry, totals included (the unpublished truth)
    hidden: frozenset[Entry]
    threshold: int

    def shown(self, entry: Entry) -> int | str:
        return f"<{self.threshold}" if entry in self.hidden else self.values[entry]

    def publish(self, row_keys: Sequence[str]) -> dict[str, Any]:
        """The JSON-ready published table: hidden entries as ``"<threshold"``."""
        r_total, c_total = len(self.rows), len(self.columns)
        return {
            "threshold": self.threshold,
            "rows": [
                {
                    "key": dict(zip(row_keys, row, strict=True)),
                    "cells": {c: self.shown((i, j)) for j, c in enumerate(self.columns)},
                    "total": self.shown((i, c_total)),
                }
                for i, row in enumerate(self.rows)
            ],
            "column_totals": {c: self.shown((r_total, j)) for j, c in enumerate(self.columns)},
            "total": self.shown((r_total, c_total)),
        }


def bridges(hidden: frozenset[Entry], n_rows: int, n_cols: int) -> set[Entry]:
    """Hidden entries that the row/column equations determine (bridges of the hidden graph).

    ``n_rows``/``n_cols`` count the totals row/column too. Iterative Tarjan.
    """
    adjacency: dict[int, list[tuple[int, Entry]]] = {}
    for r, c in hidden:
        a, b = r, n_rows + c  # row nodes first, then column nodes
        adjacency.setdefault(a, []).append((b, (r, c)))
        adjacency.setdefault(b, []).append((a, (r, c)))
    order: dict[int, int] = {}
    low: dict[int, int] = {}
    found: set[Entry] = set()
    for root in adjacency:
        if root in order:
            continue
        order[root] = low[root] = len(order)
        stack: list[tuple[int, Entry | None, int]] = [(root, None, 0)]
        while stack:
            node, via, i = stack[-1]
            edges = adjacency[node]
            if i < len(edges):
                stack[-1] = (node, via, i + 1)
                nxt, edge = edges[i]
                if edge == via:
                    continue
                if nxt in order:
                    low[node] = min(low[node], order[nxt])
                else:
                    order[nxt] = low[nxt] = len(order)
                    stack.append((nxt, edge, 0))
                continue
            stack.pop()
            if stack and via is not None:
                parent = stack[-1][0]
                low[parent] = min(low[parent], low[node])
                if low[node] > order[parent]:
                    found.add(via)
    return found


def suppress(
    counts: Mapping[tuple[tuple[str, ...], str], int], *, threshold: int = DEFAULT_THRESHOLD
) -> SuppressedTable:
    """Suppress the table of ``counts`` ((row key, column) -> count; absent means 0)."""
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    rows = sorted({row for row, _ in counts})
    columns = sorted({column for _, column in counts})
    r_total, c_total = len(rows), len(columns)
    values: dict[Entry, int] = {}
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            values[(i, j)] = counts.get((row, column), 0)
    for i in range(r_total):
        values[(i, c_total)] = sum(values[(i, j)] for j in range(c_total))
    for j in range(c_total + 1):
        values[(r_total, j)] = sum(values[(i, j)] for i in range(r_total))
    hidden = {entry for entry, value in values.items() if 0 < value < threshold}
    while True:
        determined = bridges(frozenset(hidden), r_total + 1, c_total + 1)
        if not determined:
            break
        hidden.add(_complement(min(determined), values, hidden, r_total + 1))
    return SuppressedTable(rows, columns, values, frozenset(hidden), threshold)


def _side(start: int, hidden: set[Entry], cut: Entry, n_rows: int) -> set[int]:
    """Nodes reachable from ``start`` over hidden edges other than ``cut``."""
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        for r, c in hidden:
            if (r, c) == cut:
                continue
            a, b = r, n_rows + c
            other = b if node == a else a if node == b else None
            if other is not None and other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def _complement(cut: Entry, values: dict[Entry, int], hidden: set[Entry], n_rows: int) -> Entry:
    """An entry to hide so that ``cut`` lies on a cycle: one joining the two sides the cut
    separates when there is one, else another entry of its row (or column) to grow a side.
    Among those, prefer a non-zero count, then the smallest."""
    r, c = cut
    side_a = _side(r, hidden, cut, n_rows)
    side_b = _side(n_rows + c, hidden, cut, n_rows)
    free = [entry for entry in values if entry not in hidden]
    joining = [
        (i, j)
        for i, j in free
        if (i in side_a and n_rows + j in side_b) or (i in side_b and n_rows + j in side_a)
    ]
    candidates = joining or [e for e in free if e[0] == r] or [e for e in free if e[1] == c]
    if not candidates:  # a complete graph has no bridge: cannot happen
        raise AssertionError("complementary suppression ran out of entries")
    return min(candidates, key=lambda e: (values[e] == 0, values[e], e))


class Statistics:
    """Aggregated, suppressed counts for compliance reviewers; each request is audited."""

    def __init__(
        self, *, store: AuditStore, sink: AuditSink, threshold: int = DEFAULT_THRESHOLD
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._store = store
        self._sink = sink
        self.threshold = threshold

    def table(
        self,
        who: Requester,
        *,
        rows: Sequence[str] = DEFAULT_ROWS,
        column: str = DEFAULT_COLUMN,
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        """The published table; raises SearchRefused for other roles (recorded as a failed
        request), ValueError for keys. Each request is an ``audit_search`` event of kind
        ``statistics``."""
        labels: dict[str, Any] = {"kind": "statistics", "rows": list(rows), "column": column}
        if not who.roles & STATS_ROLES:
            refused = SearchRefused("your roles do not allow statistics")
            self._sink.emit(
                backbone_event(
                    Action.AUDIT_SEARCH,
                    who,
                    outcome="failure",
                    labels={**labels, "refused": str(refused)},
                )
            )
            raise refused
        keys = [*rows, column]
        if len(set(keys)) != len(keys) or not rows:
            raise ValueError("give one or more distinct row keys and a different column key")
        for key in keys:
            if key not in COUNT_KEYS:
                raise ValueError(f"cannot count by {key!r}; choose from {', '.join(COUNT_KEYS)}")
        raw = self._store.counts(scope or Scope(), by=keys)
        counts = {(key[:-1], key[-1]): n for key, n in raw.items()}
        published = suppress(counts, threshold=self.threshold).publish(rows)
        self._sink.emit(backbone_event(Action.AUDIT_SEARCH, who, outcome="success", labels=labels))
        return published
