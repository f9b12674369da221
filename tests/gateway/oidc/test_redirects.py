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


ORIGINS = frozenset({"https://app.example.nl", "https://admin.example.nl:8443"})


class TestAllowedOrigins:
    @pytest.mark.parametrize(
        "target",
        [
            "https://app.example.nl",
            "https://app.example.nl/",
            "https://app.example.nl/dashboard?x=1",
            "https://admin.example.nl:8443/x",
        ],
    )
    def test_exact_origin_kept(self, target: str) -> None:
        """A URL on an exactly allow-listed origin is kept."""
        assert safe_next(target, ORIGINS) == target

    @pytest.mark.parametrize(
        "target",
        [
            "http://app.example.nl/",
            "https://app.example.nl.evil.test/",
            "https://app.example.nl@evil.test/",
            "https://evil.test@app.example.nl/",
            "https://app.example.nl:444/",
            "https://admin.example.nl/",
            "https://app%2eexample.nl/",
            "https://app.example.nl\\@evil.test/",
            "https://app.example.nl/a b",
            "https://app.example.nl/\nx",
            "https:app.example.nl",
            "https:",
            "//app.example.nl/",
        ],
    )
    def test_other_urls_refused(self, target: str) -> None:
        """Anything not exactly on an allowed origin becomes /."""
        assert safe_next(target, ORIGINS) == "/"

    def test_absolute_url_refused_without_origins(self) -> None:
        """With no allow-listed origins, absolute URLs are never accepted."""
        assert safe_next("https://app.example.nl/") == "/"


class TestNonAscii:
    @pytest.mark.parametrize(
        ("given", "sent"),
        [
            ("/\uff0fevil.example", "/%EF%BC%8Fevil.example"),
            ("/\u2215x", "/%E2%88%95x"),
            ("/caf\u00e9?q=\u00e9", "/caf%C3%A9?q=%C3%A9"),
            ("/plain/ascii?x=1", "/plain/ascii?x=1"),
        ],
    )
    def test_sent_as_ascii_on_this_site(self, given: str, sent: str) -> None:
        """A non-ASCII return path stays on this site, percent-encoded for Location."""
        assert safe_next(given) == sent
