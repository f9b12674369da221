"""python -m audit: search, export and stats from the command line, each audited."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from audit import Scope, SQLiteStore
from audit.__main__ import main
from tests.audit.test_store_contract import record, write

OFFICER = ["--user", "iss|sec", "--role", "security_officer"]


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "audit.db"
    store = SQLiteStore(path=path)
    store.ensure_schema()
    write(store, record(0, **{"user.id": "iss|p", "organization.id": "school-a"}))
    store.close()
    return str(path)


def actions(db: str) -> list[str]:
    store = SQLiteStore(path=db)
    try:
        return [str(e["event.action"]) for e in store.search(Scope())]
    finally:
        store.close()


class TestMain:
    def test_search_prints_events_and_is_audited(
        self, db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """search prints the page as JSON and records an audit_search event in the store."""
        assert main(["--sqlite", db, *OFFICER, "search", "--filter", "subject=iss|p"]) == 0
        out = orjson.loads(capsys.readouterr().out)
        assert out["total"] == {"value": 1, "relation": "eq"}
        assert "audit_search" in actions(db)

    def test_export_csv(self, db: str, capsys: pytest.CaptureFixture[str]) -> None:
        """export writes the CSV form and records an audit_export event."""
        assert main(["--sqlite", db, *OFFICER, "export", "iss|p", "--format", "csv"]) == 0
        assert capsys.readouterr().out.startswith("cover,subject,iss|p")
        assert "audit_export" in actions(db)

    def test_stats(self, db: str, capsys: pytest.CaptureFixture[str]) -> None:
        """stats prints the suppressed table."""
        args = ["--sqlite", db, "--user", "iss|cr", "--role", "compliance_reviewer", "stats"]
        assert main(args) == 0
        assert orjson.loads(capsys.readouterr().out)["total"] == "<10"

    def test_stats_with_a_smaller_minimum_group(
        self, db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--min-group-size sets the threshold of the table."""
        args = ["--sqlite", db, "--user", "iss|cr", "--role", "compliance_reviewer"]
        assert main([*args, "stats", "--min-group-size", "2"]) == 0
        assert orjson.loads(capsys.readouterr().out)["threshold"] == 2

    def test_export_with_person_map_finds_reads_by_platform_id(
        self, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--person-map adds the reads of the person's platform ids to the export."""
        store = SQLiteStore(path=db)
        fields = {
            "event.action": "personal_data_access",
            "user.id": "iss|t",
            "user.target.id": "stu-1",
            "labels": {"data_tenant": "school-a"},
        }
        write(store, record(3, **fields))
        store.close()
        persons = tmp_path / "persons.csv"
        persons.write_text("user_id,tenant,platform_id\niss|p,school-a,stu-1\n")
        assert (
            main(["--sqlite", db, *OFFICER, "export", "iss|p", "--person-map", str(persons)]) == 0
        )
        export = orjson.loads(capsys.readouterr().out)
        assert [e["user.target.id"] for e in export["events"] if "user.target.id" in e] == ["stu-1"]

    def test_unreadable_person_map_exits_2(self, db: str, tmp_path: Path) -> None:
        """A person map that cannot be read exits with status 2."""
        absent = str(tmp_path / "absent.csv")
        assert main(["--sqlite", db, *OFFICER, "export", "iss|p", "--person-map", absent]) == 2

    def test_bad_filter_exits_2(self, db: str) -> None:
        """A malformed filter exits with status 2."""
        assert main(["--sqlite", db, *OFFICER, "search", "--filter", "status=abc"]) == 2

    def test_refusal_exits_3(self, db: str) -> None:
        """A role without search rights exits with status 3, and the refusal is recorded."""
        args = ["--sqlite", db, "--user", "iss|t", "--role", "teacher", "search"]
        assert main(args) == 3
        assert "audit_search" in actions(db)
