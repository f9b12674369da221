"""Statistics: small cells hidden, and no hidden value recoverable from what is published."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import MemorySink, SQLiteStore
from audit._search import Requester, SearchRefused
from audit._stats import Entry, Statistics, SuppressedTable, suppress
from tests.audit.test_store_contract import record, write

REVIEWER = Requester("iss|cr", frozenset({"compliance_reviewer"}), None)


def recoverable(table: SuppressedTable) -> set[tuple[int, int]]:
    """An attacker: solve the row/column sum equations (Gaussian elimination over the
    rationals) and return every hidden entry whose value they pin down."""
    n_rows, n_cols = len(table.rows), len(table.columns)
    unknowns = sorted(table.hidden)
    index = {entry: k for k, entry in enumerate(unknowns)}
    lines = [[(i, j) for j in range(n_cols + 1)] for i in range(n_rows + 1)]
    lines += [[(i, j) for i in range(n_rows + 1)] for j in range(n_cols + 1)]
    matrix: list[list[Fraction]] = []
    for line in lines:  # cells minus total = 0 (the last entry of a line is its total)
        row = [Fraction(0)] * len(unknowns)
        for entry in line:
            if entry in index:
                row[index[entry]] += -1 if entry == line[-1] else 1
        matrix.append(row)
    pivots: list[int] = []
    r = 0
    for c in range(len(unknowns)):
        pivot = next((k for k in range(r, len(matrix)) if matrix[k][c] != 0), None)
        if pivot is None:
            continue
        matrix[r], matrix[pivot] = matrix[pivot], matrix[r]
        matrix[r] = [v / matrix[r][c] for v in matrix[r]]
        for k in range(len(matrix)):
            if k != r and matrix[k][c] != 0:
                factor = matrix[k][c]
                matrix[k] = [a - factor * b for a, b in zip(matrix[k], matrix[r], strict=True)]
        pivots.append(c)
        r += 1
    found = set()
    for k, c in enumerate(pivots):
        if all(v == 0 for col, v in enumerate(matrix[k]) if col != c):
            found.add(unknowns[c])
    return found


def pinned_by_bounds(table: SuppressedTable) -> set[Entry]:
    """An attacker who also knows that counts are not negative: the hidden entries whose
    value they pin down exactly.

    A change of the hidden values that keeps every published figure is a circulation on the
    graph of hidden entries (rows and columns as nodes); any such change splits into simple
    cycles that each keep the signs, so an entry can move iff some simple cycle through it,
    pushed one way round, takes 1 only from entries that hold at least 1.
    """
    n_rows, n_cols = len(table.rows) + 1, len(table.columns) + 1
    edges: dict[int, list[tuple[int, Entry]]] = {}
    for r, c in table.hidden:
        edges.setdefault(r, []).append((n_rows + c, (r, c)))
        edges.setdefault(n_rows + c, []).append((r, (r, c)))

    def movable(start: Entry) -> bool:
        first, goal = start[0], n_rows + start[1]
        stack: list[tuple[int, list[Entry], set[int]]] = [(first, [start], {first, goal})]
        while stack:
            node, path, seen = stack.pop()
            for nxt, edge in edges.get(node, []):
                if edge in path:
                    continue
                if nxt == goal:
                    if _cycle_can_move([*path, edge], table, (n_rows, n_cols)):
                        return True
                elif nxt not in seen:
                    stack.append((nxt, [*path, edge], seen | {nxt}))
        return False

    return {entry for entry in table.hidden if not movable(entry)}


def _cycle_can_move(cycle: list[Entry], table: SuppressedTable, size: tuple[int, int]) -> bool:
    """Push +1 on the cycle's first entry and balance every node's equation around it."""
    n_rows = size[0]
    change = [1]
    for k in range(1, len(cycle)):
        a, b = cycle[k - 1], cycle[k]
        shared = ({a[0], n_rows + a[1]} & {b[0], n_rows + b[1]}).pop()
        change.append(-_sign(a, shared, size) * _sign(b, shared, size) * change[-1])
    for sign in (1, -1):
        if all(table.values[e] >= 1 for e, d in zip(cycle, change, strict=True) if d * sign < 0):
            return True
    return False


def _sign(entry: Entry, node: int, size: tuple[int, int]) -> int:
    """+1 when ``entry`` is a cell of the line ``node``, -1 when it is that line's total.

    ``size`` counts the totals row and column; row nodes come first, then column nodes."""
    n_rows, n_cols = size
    r, c = entry
    if node < n_rows:
        return -1 if c == n_cols - 1 else 1
    return -1 if r == n_rows - 1 else 1


_TABLES = st.integers(1, 5).flatmap(
    lambda n_rows: st.integers(1, 5).flatmap(
        lambda n_cols: st.lists(
            st.sampled_from([0, 0, 1, 2, 3, 5, 9, 10, 11, 25, 300]),
            min_size=n_rows * n_cols,
            max_size=n_rows * n_cols,
        ).map(
            lambda cells: {((f"r{k // n_cols}",), f"c{k % n_cols}"): v for k, v in enumerate(cells)}
        )
    )
)


class TestSuppressProperties:
    @settings(max_examples=300, deadline=None)
    @given(_TABLES)
    def test_small_cells_hidden(self, counts: dict[tuple[tuple[str, ...], str], int]) -> None:
        """Every published entry (totals included) is 0 or at least the threshold."""
        table = suppress(counts)
        for entry, value in table.values.items():
            assert entry in table.hidden or value == 0 or value >= table.threshold

    @settings(max_examples=300, deadline=None)
    @given(_TABLES)
    def test_no_hidden_entry_solvable(self, counts: dict[tuple[tuple[str, ...], str], int]) -> None:
        """No hidden entry follows from the row, column and grand totals that are published."""
        assert recoverable(suppress(counts)) == set()

    @settings(max_examples=300, deadline=None)
    @given(_TABLES)
    def test_no_hidden_entry_pinned_by_bounds(
        self, counts: dict[tuple[tuple[str, ...], str], int]
    ) -> None:
        """Knowing that counts are not negative pins no hidden count above zero either (a
        hidden zero may be pinned: zeros are published anyway, they identify no one)."""
        table = suppress(counts)
        assert {table.values[entry] for entry in pinned_by_bounds(table)} <= {0}


class TestSuppress:
    def test_small_cell_is_shown_as_below_threshold(self) -> None:
        """A count of 1..9 is published as '<10'."""
        table = suppress(
            {(("w1",), "a"): 3, (("w1",), "b"): 50, (("w2",), "a"): 40, (("w2",), "b"): 60}
        )
        published = table.publish(["week"])
        assert published["rows"][0]["cells"]["a"] == "<10"

    def test_single_small_cell_gets_complements(self) -> None:
        """One hidden cell alone would follow from its row total: more entries are hidden."""
        table = suppress(
            {(("w1",), "a"): 3, (("w1",), "b"): 50, (("w2",), "a"): 40, (("w2",), "b"): 60}
        )
        assert len(table.hidden) >= 4
        assert recoverable(table) == set()

    def test_zero_is_not_suppressed_on_its_own(self) -> None:
        """A zero cell is not a small group and stays published when nothing requires it."""
        table = suppress(
            {(("w1",), "a"): 0, (("w1",), "b"): 50, (("w2",), "a"): 40, (("w2",), "b"): 60}
        )
        assert table.hidden == frozenset()

    def test_bridge_between_two_blocks_is_closed(self) -> None:
        """Two suppressed blocks linked by one hidden entry: that link is not recoverable."""
        counts: dict[tuple[tuple[str, ...], str], int] = {}
        for i in range(4):
            for j in range(4):
                counts[((f"r{i}",), f"c{j}")] = 100
        counts[(("r0",), "c0")] = counts[(("r0",), "c1")] = 2
        counts[(("r1",), "c0")] = counts[(("r1",), "c1")] = 2
        counts[(("r2",), "c2")] = counts[(("r2",), "c3")] = 3
        counts[(("r3",), "c2")] = counts[(("r3",), "c3")] = 3
        counts[(("r1",), "c2")] = 4
        assert recoverable(suppress(counts)) == set()

    @pytest.mark.parametrize("seed", range(25))
    def test_random_tables_leak_nothing(self, seed: int) -> None:
        """On random sparse tables no hidden entry can be solved from the published ones."""
        rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        counts: dict[tuple[tuple[str, ...], str], int] = {
            ((f"r{i}",), f"c{j}"): rng.choice([0, 0, 1, 2, 5, 9, 10, 15, 40, 200])
            for i in range(rng.randint(1, 6))
            for j in range(rng.randint(1, 5))
        }
        table = suppress(counts)
        assert recoverable(table) == set()
        for entry, value in table.values.items():
            if 0 < value < table.threshold:
                assert entry in table.hidden


class TestStatistics:
    def test_counts_by_week_tenant_role_action(self, tmp_path: Path) -> None:
        """By default the table counts by week, tenant and role per action, hiding small cells
        only as needed."""
        store = SQLiteStore(path=tmp_path / "a.db")
        store.ensure_schema()
        plan = {
            ("school-a", "access_denied"): 12,
            ("school-a", "logout"): 15,
            ("school-b", "access_denied"): 20,
            ("school-b", "logout"): 1,
            ("school-c", "access_denied"): 30,
            ("school-c", "logout"): 25,
        }
        minute = 0
        for (tenant, action), n in plan.items():
            for _ in range(n):
                fields = {"organization.id": tenant, "event.action": action}
                write(store, record(minute, **fields, **{"user.roles": ["teacher"]}))
                minute += 1
        table = Statistics(store=store, sink=MemorySink()).table(REVIEWER)
        assert list(table["rows"][0]["key"]) == ["week", "organization.id", "user.roles"]
        cells = {tuple(r["key"].values()): r["cells"] for r in table["rows"]}
        assert cells[("2026-03-09", "school-b", "teacher")]["logout"] == "<10"
        assert cells[("2026-03-09", "school-c", "teacher")] == {"access_denied": 30, "logout": 25}
        assert table["total"] == 103

    def test_no_user_ids_can_be_requested(self, tmp_path: Path) -> None:
        """Grouping by a person's id is refused."""
        store = SQLiteStore(path=tmp_path / "a.db")
        store.ensure_schema()
        with pytest.raises(ValueError, match="cannot count"):
            Statistics(store=store, sink=MemorySink()).table(REVIEWER, rows=["user.id"])

    def test_other_roles_are_refused(self, tmp_path: Path) -> None:
        """A school admin gets no statistics."""
        store = SQLiteStore(path=tmp_path / "a.db")
        store.ensure_schema()
        admin = Requester("iss|a", frozenset({"school_admin"}), "school-a")
        with pytest.raises(SearchRefused):
            Statistics(store=store, sink=MemorySink()).table(admin)

    def test_requests_are_audited_refusals_too(self, tmp_path: Path) -> None:
        """A granted and a refused statistics request are each an audit_search event."""
        store = SQLiteStore(path=tmp_path / "a.db")
        store.ensure_schema()
        sink = MemorySink()
        statistics = Statistics(store=store, sink=sink)
        statistics.table(REVIEWER)
        with pytest.raises(SearchRefused):
            statistics.table(Requester("iss|t", frozenset({"teacher"}), "school-a"))
        assert [(e["event.action"], e["event.outcome"]) for e in sink.events] == [
            ("audit_search", "success"),
            ("audit_search", "failure"),
        ]
        assert sink.events[1]["labels"]["kind"] == "statistics"
