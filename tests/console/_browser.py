"""Playwright (sync API) driving Debian's Chromium against the gateway as deployed.

The deployment is ``tests.security._harness.deployed``: ``build(demo_settings(...))`` served by
uvicorn with TLS, the dev identity provider and an echo upstream, all on 127.0.0.1. Chromium is
installed by ``tools/ensure_chromium.py`` when missing; if that fails the tests fail, they
never skip. The sync API runs in plain (non-async) tests, so it never meets pytest-asyncio's
event loop. Screenshots go to ``var/test-artifacts/console/`` (``CONSOLE_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

from devidp import Person
from tests.security._harness import Deployment
from tools.ensure_chromium import CHROMIUM

ROOT: Final = Path(__file__).resolve().parents[2]
ARTIFACTS: Final = Path(
    os.environ.get("CONSOLE_ARTIFACTS", ROOT / "var" / "test-artifacts" / "console")
)
LAUNCH_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS: Final = 20_000


def launch(playwright_chromium: object) -> Browser:
    browser: Browser = playwright_chromium.launch(  # type: ignore[attr-defined]
        executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
    )
    return browser


class Session:
    """One browser context (its own cookies) with what the page reported about CSP."""

    def __init__(self, browser: Browser, deployment: Deployment) -> None:
        self.deployment = deployment
        self.context: BrowserContext = browser.new_context(
            ignore_https_errors=True, locale="nl-NL", base_url=deployment.base
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.violations: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.violations.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.violations.append(text)

    def log_in(self, person: Person, next_path: str = "/_gateway/console") -> None:
        """Through the dev identity provider's chooser, by clicking the person's button."""
        self.page.goto(f"/_gateway/login?next={next_path}")
        assert self.page.url.startswith(self.deployment.idp_url), self.page.url
        self.page.click(f'button[value="{person.subject}"]')
        self.page.wait_for_url(f"{self.deployment.base}{next_path}*")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def eventually(check: Callable[[], bool], *, timeout: float = 20.0, what: str) -> None:
    """Poll ``check`` (the audit pipeline ships in the background) until true, or fail."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
