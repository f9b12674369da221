"""The route and role data file and the route classifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies._resources import CLASSIFY_CACHE_SIZE, Resources
from policies.errors import ResourcesInvalid


class TestClassify:
    def test_names_the_family_categories_and_whose_data(self, resources: Resources) -> None:
        """A pupil's record is school_students, categories a and b, others' data of school-a."""
        info = resources.classify("GET", "/api/schools/school-a/students/42")
        assert info is not None
        assert (info.family, info.categories, info.others_personal_data, info.tenant) == (
            "school_students",
            ("a", "b"),
            True,
            "school-a",
        )
        assert info.data_subjects == ("pupils",)
        assert info.subject_id == "42"

    def test_own_data_is_not_someone_elses(self, resources: Resources) -> None:
        """/api/me exposes account data, but only the caller's own."""
        info = resources.classify("GET", "/api/me")
        assert info is not None
        assert info.family == "own_profile" and not info.others_personal_data

    def test_the_root_path_is_the_catalogue(self, resources: Resources) -> None:
        """GET / is the public catalogue's front page, with no personal data."""
        info = resources.classify("GET", "/")
        assert info is not None
        assert (info.family, info.categories, info.others_personal_data) == ("catalogue", (), False)

    def test_head_is_classified_as_get(self, resources: Resources) -> None:
        """HEAD of a pupil's record is the same route as GET (it is decided as GET too)."""
        info = resources.classify("HEAD", "/api/schools/school-a/students/42")
        assert info is not None and info.family == "school_students"

    def test_method_is_part_of_the_route(self, resources: Resources) -> None:
        """A method the route does not serve is an unknown route."""
        assert resources.classify("PATCH", "/api/me") is None

    @pytest.mark.parametrize(
        "path",
        ["/api/schools/school-a/students/42/x", "/_gateway/jwksXjson", "/api/me/", "/nothing"],
    )
    def test_near_misses_are_unknown(self, resources: Resources, path: str) -> None:
        """Routes match whole segments and literal dots only."""
        assert resources.classify("GET", path) is None

    def test_remembered_answers_are_the_same(self, resources: Resources) -> None:
        """Asking twice gives the same route info (remembered), per method and path."""
        first = resources.classify("GET", "/api/schools/school-a/students/42")
        assert resources.classify("GET", "/api/schools/school-a/students/42") is first
        other = resources.classify("GET", "/api/schools/school-b/students/7")
        assert other is not None and (other.tenant, other.subject_id) == ("school-b", "7")
        assert resources.classify("PATCH", "/api/schools/school-a/students/42") is None

    def test_memory_is_bounded(self, resources: Resources) -> None:
        """The memory is emptied when full; long paths are classified but not remembered."""
        for n in range(CLASSIFY_CACHE_SIZE + 1):
            resources.classify("GET", f"/nothing/{n}")
        assert len(resources._classified) <= CLASSIFY_CACHE_SIZE
        long_path = "/api/schools/school-a/students/" + "x" * 300
        info = resources.classify("GET", long_path)
        assert info is not None and info.subject_id == "x" * 300
        assert ("GET", long_path) not in resources._classified

    def test_roles_of_design_md_are_described(self, resources: Resources) -> None:
        """Every role of DESIGN.md is in the file, with how it is granted."""
        assert {n for n, r in resources.roles.items() if not r.abstract} == {
            "anonymous",
            "student",
            "teacher",
            "lob_coordinator",
            "school_admin",
            "supplier",
            "platform_staff",
            "security_officer",
            "incident_responder",
            "compliance_reviewer",
            "platform_admin",
        }


class TestFromFile:
    def _write(self, tmp_path: Path, text: str) -> Path:
        path = tmp_path / "resources.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def test_overlapping_routes_are_refused(self, tmp_path: Path) -> None:
        """Two routes claiming the same path would make classification order-dependent."""
        path = self._write(
            tmp_path,
            '[families.a]\ncategories = []\nothers_personal_data = false\nroutes = ["GET /x/:id"]\n'
            '[families.b]\ncategories = []\nothers_personal_data = false\nroutes = ["GET /x/y"]\n',
        )
        with pytest.raises(ResourcesInvalid, match="overlap"):
            Resources.from_file(path)

    def test_unknown_categories_are_refused(self, tmp_path: Path) -> None:
        """Only the privacy statement's categories a to f exist."""
        path = self._write(
            tmp_path,
            '[families.a]\ncategories = ["g"]\nothers_personal_data = false\nroutes = ["GET /x"]\n',
        )
        with pytest.raises(ResourcesInvalid, match="unknown data categories"):
            Resources.from_file(path)

    def test_a_role_needs_to_say_how_it_is_granted(self, tmp_path: Path) -> None:
        """A role no mapping produces must be marked abstract."""
        path = self._write(tmp_path, '[roles.ghost]\ndescription = "?"\n')
        with pytest.raises(ResourcesInvalid, match="granted_by"):
            Resources.from_file(path)

    def test_broken_toml_is_refused(self, tmp_path: Path) -> None:
        """A syntax error is reported, not half-read."""
        with pytest.raises(ResourcesInvalid, match="cannot be read"):
            Resources.from_file(self._write(tmp_path, "[families\n"))
