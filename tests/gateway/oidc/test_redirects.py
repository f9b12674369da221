"""gateway/oidc/_redirects.py: return paths only to this gateway."""

from __future__ import annotations

import pytest

from gateway.oidc import safe_next


class TestSafeNext:
    @pytest.mark.parametrize(
        "target",
        [
            "//evil.test",
            "/\\evil.test",
            "\\\\evil.test",
            "https://evil.test",
            "HTTP://evil.test",
            "javascript:alert(1)",
            "data:text/html,x",
            "/%2fevil.test",
            "/%2F%2Fevil.test",
            "%2F%2Fevil.test",
            "/%5cevil.test",
            "/%255cevil.test",
            "/%25252F%25252Fevil.test",
            "/%2525252F%2525252Fevil.test",
            "/a\nb",
            "/a\rb",
            "/a\tb",
            "/a%0aSet-Cookie:x",
            "/a%09b",
            "/a b",
            "/x@evil.test",
            "/%40evil.test",
            "evil.test/x",
            "",
            "/" + "a" * 3000,
        ],
    )
    def test_refused(self, target: str) -> None:
        """Each unsafe or ambiguous target becomes /."""
        assert safe_next(target) == "/"

    @pytest.mark.parametrize(
        "target", ["/", "/home", "/a/b?c=d&e=f", "/a%20b", "/activities/12#top", "/a?next=/b"]
    )
    def test_kept(self, target: str) -> None:
        """Relative paths on this gateway are kept unchanged."""
        assert safe_next(target) == target

    def test_none(self) -> None:
        """No target at all: /."""
        assert safe_next(None) == "/"
