"""The pattern grammar and the regular expressions built from it."""

from __future__ import annotations

import re

import pytest
from casbin import util

from policies._syntax import (
    keyget2_regex,
    keymatch2_regex,
    literal_prefix,
    pattern_problem,
    valid_method,
    valid_path,
    valid_tenant,
)


class TestPatternProblem:
    @pytest.mark.parametrize(
        "pattern",
        ["/", "/activities", "/api/schools/:tenant/students/:id", "/_gateway/audit/*", r"/a\.json"],
    )
    def test_accepts_anchored_segment_bounded_patterns(self, pattern: str) -> None:
        """Literal segments, :name segments and a final * are the whole grammar."""
        assert pattern_problem(pattern) is None

    @pytest.mark.parametrize(
        ("pattern", "problem"),
        [
            ("api/me", "starts with /"),
            ("/api/*/students", "only as the last segment"),
            ("/jwks.json", "literal dot"),
            ("/api/me/", "empty segment"),
            ("/a//b", "empty segment"),
            ("/api/(.*)", "characters outside"),
            ("/x/:id/y/:id", "appears twice"),
            ("/x/:Id", "bad parameter"),
            ("/x*", "characters outside"),
        ],
    )
    def test_refuses_patterns_that_reach_further_than_they_read(
        self, pattern: str, problem: str
    ) -> None:
        """Regex syntax, mid-pattern wildcards and bare dots are refused with a reason."""
        found = pattern_problem(pattern)
        assert found is not None
        assert problem in found


class TestRegexesMatchPycasbin:
    @pytest.mark.parametrize(
        ("pattern", "path"),
        [
            ("/api/schools/:tenant/students", "/api/schools/a/students"),
            ("/api/schools/:tenant/students", "/api/schools/a/b/students"),
            ("/api/schools/:tenant/students", "/api/schools/a/students-export"),
            ("/_gateway/audit/*", "/_gateway/audit"),
            ("/_gateway/audit/*", "/_gateway/audit/"),
            ("/_gateway/audit/*", "/_gateway/audit/a/b"),
            (r"/_gateway/jwks\.json", "/_gateway/jwksXjson"),
            (r"/_gateway/jwks\.json", "/_gateway/jwks.json"),
            ("/", "/"),
            ("/", "//"),
        ],
    )
    def test_keymatch2_regex_decides_like_key_match2(self, pattern: str, path: str) -> None:
        """Our compiled regex and pycasbin's keyMatch2 agree on each path."""
        assert (re.match(keymatch2_regex(pattern), path) is not None) == util.key_match2(
            path, pattern
        )

    def test_keyget2_regex_extracts_what_key_get2_extracts(self) -> None:
        """The tenant group is the segment pycasbin's keyGet2 returns."""
        pattern = "/api/providers/:tenant/activities/:id"
        path = "/api/providers/org-a/activities/7"
        expression, group = keyget2_regex(pattern, "tenant")
        found = re.match(expression, path)
        assert found is not None and group is not None
        assert found.group(group) == util.key_get2(path, pattern, "tenant") == "org-a"

    def test_keyget2_regex_has_no_group_without_the_variable(self) -> None:
        """A pattern without :tenant gives no tenant group."""
        assert keyget2_regex("/api/me", "tenant")[1] is None


class TestLiteralPrefix:
    @pytest.mark.parametrize(
        ("pattern", "prefix"),
        [
            ("/", ()),
            ("/api/me", ("api", "me")),
            ("/api/schools/:tenant/students", ("api", "schools")),
            (r"/_gateway/jwks\.json", ("_gateway", "jwks.json")),
            ("/_gateway/audit/*", ("_gateway", "audit")),
            ("/:id", ()),
        ],
    )
    def test_is_the_literal_leading_segments(self, pattern: str, prefix: tuple[str, ...]) -> None:
        """Every path a pattern matches starts with these segments (the index key)."""
        assert literal_prefix(pattern) == prefix


class TestInputChecks:
    @pytest.mark.parametrize("tenant", ["school-a", "00AA", "school-a.nl", "org_7"])
    def test_plain_tenant_ids_are_valid(self, tenant: str) -> None:
        """Letters, digits, dots, dashes and underscores make a tenant id."""
        assert valid_tenant(tenant)

    @pytest.mark.parametrize(
        "tenant", ["", "*", "a*", ".*", "a/b", ":tenant", "a b", "-a", "a" * 129]
    )
    def test_pattern_characters_make_a_tenant_invalid(self, tenant: str) -> None:
        """No tenant id can act as a pattern (PITFALLS: a * domain grants every tenant)."""
        assert not valid_tenant(tenant)

    @pytest.mark.parametrize("method", ["get", "*", "", "GET POST", "G" * 21])
    def test_methods_are_upper_case_tokens(self, method: str) -> None:
        """Anything but an upper-case token is not a method."""
        assert not valid_method(method)

    @pytest.mark.parametrize("path", ["", "api", "/a\n", "/a\x00b", "/a\x7f", "/" + "a" * 9000])
    def test_paths_are_canonical(self, path: str) -> None:
        """Relative paths, control characters and huge paths are refused."""
        assert not valid_path(path)
