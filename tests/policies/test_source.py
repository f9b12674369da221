"""Reading model.conf and policy.csv strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies._source import load_source, parse_policy, source_from_text
from policies.errors import ModelUnsupported, PolicyInvalid, PolicySyntaxError
from tests.policies.conftest import MODEL, POLICY

MODEL_TEXT = MODEL.read_text(encoding="utf-8")


class TestParsePolicy:
    def test_reads_rules_and_links_with_line_numbers(self) -> None:
        """Comments and blank lines are skipped; each rule keeps its line number and order."""
        rules, links = parse_policy(
            "# c\n\np, teacher, own, /api/schools/:tenant/students, GET, allow\ng, a, b\n"
        )
        assert [(r.index, r.line, r.role, r.scope) for r in rules] == [(0, 3, "teacher", "own")]
        assert [(link.line, link.role, link.inherits) for link in links] == [(4, "a", "b")]

    @pytest.mark.parametrize(
        ("line", "error", "message"),
        [
            ("x, a, b", PolicySyntaxError, "starts with p or g"),
            ("p, a, all, /x, GET", PolicySyntaxError, "5 fields"),
            ("g, a", PolicySyntaxError, "2 fields"),
            ("p, a, all, /x(y), GET, allow", PolicySyntaxError, "brackets"),
            ("p, a, any, /x, GET, allow", PolicyInvalid, "scope"),
            ("p, a, all, /x/*/y, GET, allow", PolicyInvalid, "pattern"),
            ("p, a, all, /x, get, allow", PolicyInvalid, "method"),
            ("p, a, all, /x, HEAD, allow", PolicyInvalid, "decided as GET"),
            ("p, a, all, /x, GET, permit", PolicyInvalid, "effect"),
            ("p, a, own, /x/:id, GET, allow", PolicyInvalid, ":tenant"),
            ("p, , all, /x, GET, allow", PolicyInvalid, "empty role"),
        ],
    )
    def test_refuses_what_pycasbin_would_ignore_or_misread(
        self, line: str, error: type[Exception], message: str
    ) -> None:
        """Each malformed line is an error naming the file and line."""
        with pytest.raises(error, match=message) as caught:
            parse_policy(f"# header\n{line}\n")
        assert "policy.csv:2" in str(caught.value)


class TestCheckModel:
    def test_the_shipped_model_is_supported(self) -> None:
        """model.conf is the model the fast evaluator implements."""
        source_from_text(MODEL_TEXT, "p, a, all, /, GET, allow\n")

    def test_allow_unless_denied_effect_is_refused(self) -> None:
        """The effect that allows everything unmatched (PITFALLS) is not our model."""
        bad = MODEL_TEXT.replace(
            "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))",
            "e = !some(where (p.eft == deny))",
        )
        with pytest.raises(ModelUnsupported, match="policy_effect::e"):
            source_from_text(bad, "p, a, all, /, GET, allow\n")

    def test_an_extra_matcher_term_is_refused(self) -> None:
        """Any change to the matcher is refused rather than silently evaluated differently."""
        bad = MODEL_TEXT.replace("keyMatch2(r.obj, p.obj)", "regexMatch(r.obj, p.obj)")
        with pytest.raises(ModelUnsupported, match="matchers::m"):
            source_from_text(bad, "p, a, all, /, GET, allow\n")

    def test_an_extra_section_is_refused(self) -> None:
        """A second role definition would be ignored by the evaluator: refused."""
        bad = MODEL_TEXT.replace("g = _, _", "g = _, _\ng2 = _, _")
        with pytest.raises(ModelUnsupported, match="role_definition::g2"):
            source_from_text(bad, "p, a, all, /, GET, allow\n")


class TestLoadSource:
    def test_hashes_identify_the_file_contents(self, tmp_path: Path) -> None:
        """The policy hash changes with the policy's bytes and only with them."""
        first = load_source(MODEL, POLICY)
        copy = tmp_path / "policy.csv"
        copy.write_text(POLICY.read_text(encoding="utf-8"), encoding="utf-8")
        assert load_source(MODEL, copy).policy_sha256 == first.policy_sha256
        copy.write_text(POLICY.read_text(encoding="utf-8") + "g, a, b\n", encoding="utf-8")
        assert load_source(MODEL, copy).policy_sha256 != first.policy_sha256

    def test_a_missing_file_is_a_syntax_error_naming_it(self, tmp_path: Path) -> None:
        """An unreadable file is reported by its name, not its full path."""
        with pytest.raises(PolicySyntaxError, match=r"^nothing\.csv: cannot be read"):
            load_source(MODEL, tmp_path / "nothing.csv")

    def test_non_utf8_is_refused(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are an error, not a guess."""
        bad = tmp_path / "policy.csv"
        bad.write_bytes(b"p, \xff, all, /, GET, allow\n")
        with pytest.raises(PolicySyntaxError, match="not UTF-8"):
            load_source(MODEL, bad)
