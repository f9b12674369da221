"""The console's words: every key in both languages, every template key known."""

from __future__ import annotations

import re
from importlib import resources

from console import errors
from console._i18n import LANG_COOKIE, MESSAGES, chosen_language, translate
from policies import CATEGORIES

_KEY = re.compile(r"""\bt\(\s*["']([a-z0-9_]+)["']\s*[,)]""")


def _template_keys() -> set[str]:
    found: set[str] = set()
    for item in (resources.files("console") / "templates").iterdir():
        found |= set(_KEY.findall(item.read_text(encoding="utf-8")))
    return found


class TestMessages:
    def test_every_message_in_both_languages(self) -> None:
        """No key has an empty Dutch or English text."""
        assert all(nl.strip() and en.strip() for nl, en in MESSAGES.values())

    def test_every_template_key_is_known(self) -> None:
        """Every ``t("key")`` in a template has a message."""
        keys = _template_keys()
        assert keys, "the scan found no keys: the pattern is wrong"
        assert keys - set(MESSAGES) == set()

    def test_every_error_code_has_a_message(self) -> None:
        """The error page's ``t("error_" + code)`` finds a message for every console error."""
        codes = {
            cls.code
            for cls in vars(errors).values()
            if isinstance(cls, type) and issubclass(cls, errors.ConsoleError)
        }
        codes.discard("console_error")
        assert {"bad_form", "csrf_rejected", "not_found"} <= codes
        assert {f"error_{code}" for code in codes | {"console_error"}} <= set(MESSAGES)

    def test_every_data_category_has_a_message(self) -> None:
        """The category view's ``t("cat_" + key)`` finds a message for a to f."""
        assert {f"cat_{key}" for key in CATEGORIES} <= set(MESSAGES)

    def test_dutch_first(self) -> None:
        """translate gives Dutch for nl and English for en."""
        assert translate("nl", "search") == "Zoeken"
        assert translate("en", "search") == "Search"


class TestChosenLanguage:
    def test_dutch_by_default(self) -> None:
        """Without a choice the console is Dutch."""
        assert chosen_language({"headers": []}, None) == ("nl", False)

    def test_query_switches_and_sets_cookie(self) -> None:
        """``?lang=en`` chooses English and asks for the cookie."""
        assert chosen_language({"headers": []}, "en") == ("en", True)

    def test_cookie_remembers(self) -> None:
        """The cookie keeps English on later pages."""
        scope = {"headers": [(b"cookie", f"a=b; {LANG_COOKIE}=en".encode())]}
        assert chosen_language(scope, None) == ("en", False)

    def test_unknown_language_ignored(self) -> None:
        """``?lang=xx`` is no choice at all."""
        assert chosen_language({"headers": []}, "xx") == ("nl", False)
