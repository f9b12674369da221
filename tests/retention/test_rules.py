"""retention/_rules.py: per-category periods, configuration overrides, the inventory."""

from __future__ import annotations

from datetime import timedelta

import pytest

from audit.events import FIELDS, Category
from retention import DEFAULT_RULES, InvalidRule, RetentionRule, inventory, parse_rules


class TestDefaults:
    @pytest.mark.parametrize(
        ("category", "full", "delete"),
        [
            (Category.AUTHENTICATION, 30, 365),
            (Category.ACCESS_DENIED, 30, 365),
            (Category.PERSONAL_DATA, 30, 365),
            (Category.ERRORS, 30, 90),
            (Category.BACKBONE, None, 730),
        ],
    )
    def test_design_periods(self, category: Category, full: int | None, delete: int) -> None:
        """Each category has the periods of DESIGN.md §4."""
        rule = DEFAULT_RULES[category]
        assert rule.full_detail == (None if full is None else timedelta(days=full))
        assert rule.delete_after == timedelta(days=delete)

    def test_every_category_has_a_rule(self) -> None:
        """No category is left without a retention period."""
        assert set(DEFAULT_RULES) == set(Category)


class TestParse:
    def test_no_entries_are_the_defaults(self) -> None:
        """Without overrides the defaults apply."""
        assert parse_rules([]) == dict(DEFAULT_RULES)

    def test_override_replaces_one_category(self) -> None:
        """An entry replaces its category's periods and leaves the others."""
        rules = parse_rules(["errors=7/60"])
        assert rules[Category.ERRORS] == RetentionRule(
            Category.ERRORS, timedelta(days=7), timedelta(days=60)
        )
        assert rules[Category.AUTHENTICATION] == DEFAULT_RULES[Category.AUTHENTICATION]

    def test_dash_means_never_minimised(self) -> None:
        """``-`` for full detail keeps events whole until deletion."""
        assert parse_rules(["authentication=-/100"])[Category.AUTHENTICATION].full_detail is None

    @pytest.mark.parametrize(
        "entry",
        [
            "errors",  # no periods
            "errors=30",  # no deletion period
            "logins=30/90",  # unknown category
            "errors=91/90",  # minimised after deletion
            "errors=0/90",  # no full detail at all
            "errors=30/0",  # deleted at once
            "errors=thirty/90",
        ],
    )
    def test_malformed_entry_refused(self, entry: str) -> None:
        """A malformed entry is refused with a message naming it."""
        with pytest.raises(InvalidRule, match=r"errors|logins"):
            parse_rules([entry])

    def test_category_twice_refused(self) -> None:
        """A category overridden twice is ambiguous and refused."""
        with pytest.raises(InvalidRule, match="twice"):
            parse_rules(["errors=7/60", "errors=8/60"])


class TestInventory:
    def test_lists_every_category_with_its_periods(self) -> None:
        """Each category appears with its full-detail and deletion periods."""
        text = inventory(parse_rules(["errors=7/60"]))
        blocks = {block.split("\n", 1)[0]: block for block in text.split("\n\n")[1:] if block}
        assert set(blocks) == {c.value for c in Category}
        assert "full detail:  7 days" in blocks["errors"]
        assert "deleted after 60 days" in blocks["errors"]
        assert "deleted after 365 days" in blocks["authentication"]
        assert "never minimised" in blocks["backbone"]
        assert "deleted after 730 days" in blocks["backbone"]

    def test_names_the_fields_and_their_minimisation(self) -> None:
        """The fields come from the event schema, with how each is minimised."""
        text = inventory(DEFAULT_RULES)
        for f in FIELDS:
            assert f.name in text
        assert "source.ip (minimised: truncate ip)" in text
        assert "user_agent.original (minimised: drop)" in text

    def test_names_the_actions_of_each_category(self) -> None:
        """A category's block lists the actions recorded under it."""
        text = inventory(DEFAULT_RULES)
        backbone = text.split("\nbackbone\n", 1)[1]
        assert "hold_placed" in backbone
        assert "retention_run" in backbone
