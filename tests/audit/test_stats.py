"""Statistics: small cells hidden, and no hidden value recoverable from what is published."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest

from audit import MemorySink, SQLiteStore
from audit._search import Requester, SearchRefused
from audit._stats import Statistics, SuppressedTable, suppress
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
    def test_counts_by_week_tenant_action(self, tmp_path: Path) -> None:
        """The table counts by week and tenant per action, hiding small cells only as needed."""
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
                write(store, record(minute, **{"organization.id": tenant, "event.action": action}))
                minute += 1
        table = Statistics(store=store, sink=MemorySink()).table(REVIEWER)
        cells = {tuple(r["key"].values()): r["cells"] for r in table["rows"]}
        assert cells[("2026-03-09", "school-b")]["logout"] == "<10"
        assert cells[("2026-03-09", "school-c")] == {"access_denied": 30, "logout": 25}
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
