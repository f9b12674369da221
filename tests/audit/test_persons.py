"""audit/_persons.py: the platform's person map (platform ids of each issuer-qualified user)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit import PersonMap, PersonMapFile, PlatformId
from audit.errors import PersonMapInvalid

HEADER = "user_id,tenant,platform_id\n"


class TestPersonMap:
    def test_rows_give_each_user_their_ids(self) -> None:
        """A user with rows under two tenants gets both ids, sorted; others get none."""
        persons = PersonMap.from_csv(
            HEADER + "iss|pupil,school-b,stu-9\niss|pupil,school-a,stu-1\niss|other,,p-7\n"
        )
        assert persons.platform_ids("iss|pupil") == (
            PlatformId("school-a", "stu-1"),
            PlatformId("school-b", "stu-9"),
        )
        assert persons.platform_ids("iss|other") == (PlatformId("", "p-7"),)
        assert persons.platform_ids("iss|nobody") == ()

    def test_one_id_for_two_users_is_refused(self) -> None:
        """One platform id under one tenant belonging to two users would mix their exports."""
        with pytest.raises(PersonMapInvalid, match="belongs to two users"):
            PersonMap.from_csv(HEADER + "iss|a,school-a,stu-1\niss|b,school-a,stu-1\n")

    def test_same_id_under_two_tenants_is_two_people(self) -> None:
        """The same id under two tenants may belong to two users."""
        persons = PersonMap.from_csv(HEADER + "iss|a,school-a,stu-1\niss|b,school-b,stu-1\n")
        assert persons.platform_ids("iss|b") == (PlatformId("school-b", "stu-1"),)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("user,tenant,id\niss|a,t,1\n", "first line"),
            ("", "first line"),
            (HEADER + "iss|a,t\n", "three columns"),
            (HEADER + "pupil-without-issuer,t,1\n", "issuer|subject"),
            (HEADER + "iss|a,t,\n", "platform_id empty"),
            (HEADER + "iss|a,t,1\x00\n", "not printable"),
        ],
    )
    def test_malformed_file_is_refused(self, text: str, message: str) -> None:
        """A malformed map is refused with a message naming what is wrong."""
        with pytest.raises(PersonMapInvalid, match=message):
            PersonMap.from_csv(text)

    def test_blank_lines_are_skipped(self) -> None:
        """Empty lines (a trailing newline, a gap) are no rows."""
        persons = PersonMap.from_csv(HEADER + "\niss|a,t,1\n\n")
        assert len(persons) == 1


class TestPersonMapFile:
    def test_changed_file_is_read_again(self, tmp_path: Path) -> None:
        """A new version of the file is used at the next lookup."""
        path = tmp_path / "persons.csv"
        path.write_text(HEADER + "iss|a,school-a,stu-1\n")
        persons = PersonMapFile(path=path)
        assert persons.platform_ids("iss|a") == (PlatformId("school-a", "stu-1"),)
        path.write_text(HEADER + "iss|a,school-a,stu-1\niss|a,school-a,stu-2\n")
        os.utime(path, ns=(1, 1))  # a different stamp even within one clock tick
        assert len(persons.platform_ids("iss|a")) == 2

    def test_file_turned_invalid_fails_the_lookup(self, tmp_path: Path) -> None:
        """A file that became invalid fails the lookup instead of answering from the old map."""
        path = tmp_path / "persons.csv"
        path.write_text(HEADER + "iss|a,school-a,stu-1\n")
        persons = PersonMapFile(path=path)
        path.write_text("garbage\n")
        os.utime(path, ns=(1, 1))
        with pytest.raises(PersonMapInvalid):
            persons.platform_ids("iss|a")

    def test_missing_file_is_refused_at_start(self, tmp_path: Path) -> None:
        """A map that cannot be read at construction is an error, not an empty map."""
        with pytest.raises(PersonMapInvalid, match="unreadable"):
            PersonMapFile(path=tmp_path / "absent.csv")
