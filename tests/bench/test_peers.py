"""bench/peers.py: the browser's cookie jar and the process measurements (no load)."""

from __future__ import annotations

import os

import httpx

from bench.peers import Browser, cpu_seconds, peak_rss_mib, tree


class TestBrowser:
    def test_keeps_cookies_secure_ones_too(self) -> None:
        """Every cookie set is kept, ``Secure`` and ``__Host-`` ones included (plain HTTP)."""
        browser = Browser()
        response = httpx.Response(
            302,
            headers=[
                ("set-cookie", "__Host-gw_login=abc; Path=/; Secure; HttpOnly; SameSite=Lax"),
                ("set-cookie", "_oauth2_proxy_csrf=xyz; Path=/"),
            ],
        )
        browser._keep(response)
        assert browser.cookies == {"__Host-gw_login": "abc", "_oauth2_proxy_csrf": "xyz"}
        browser.close()

    def test_deleted_cookie_is_dropped(self) -> None:
        """A cookie set empty with Max-Age=0 is removed from the jar."""
        browser = Browser()
        browser.cookies["__Host-gw_login"] = "abc"
        browser._keep(httpx.Response(302, headers={"set-cookie": "__Host-gw_login=; Max-Age=0"}))
        assert browser.cookies == {}
        browser.close()

    def test_sends_the_jar_as_one_header(self) -> None:
        """The kept cookies go out as one Cookie header."""
        browser = Browser()
        browser.cookies.update({"a": "1", "b": "2"})
        assert browser._header() == {"cookie": "a=1; b=2"}
        browser.close()


class TestProcessFigures:
    def test_tree_contains_the_root(self) -> None:
        """The process tree of this process includes it."""
        assert os.getpid() in tree(os.getpid())

    def test_cpu_and_memory_of_this_process(self) -> None:
        """CPU time and peak memory of a live process are positive."""
        assert cpu_seconds([os.getpid()]) > 0
        assert peak_rss_mib([os.getpid()]) > 0
