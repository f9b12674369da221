"""tools/ensure_chromium.py: the version of a browser that runs, a loud failure otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import ensure_chromium
from tools.ensure_chromium import ChromiumUnavailable, ensure, version


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "chromium"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


class TestEnsureChromium:
    def test_version_of_a_browser_that_runs(self, tmp_path: Path) -> None:
        """The browser's --version line is returned."""
        fake = script(tmp_path, 'echo "Chromium 1.2.3 built on Debian"')
        assert ensure(fake) == "Chromium 1.2.3 built on Debian"

    def test_browser_that_fails_is_reported(self, tmp_path: Path) -> None:
        """A browser whose --version fails is an error with its message."""
        fake = script(tmp_path, 'echo "libfoo missing" >&2; exit 3')
        with pytest.raises(ChromiumUnavailable, match="libfoo missing"):
            version(fake)

    def test_missing_without_root_fails_loudly(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without root nothing is installed: the error says how to install it."""
        monkeypatch.setattr("os.geteuid", lambda: 1000)
        with pytest.raises(ChromiumUnavailable, match="apt-get install -y chromium"):
            ensure(tmp_path / "absent")

    def test_missing_without_apt_fails_loudly(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a machine without apt-get the error says so."""
        monkeypatch.setattr("shutil.which", lambda _name: None)
        with pytest.raises(ChromiumUnavailable, match="no apt-get"):
            ensure(tmp_path / "absent")

    def test_main_prints_the_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The command prints the installed browser (this machine has it: make test ran it)."""
        assert ensure_chromium.main() == 0
        assert "Chromium" in capsys.readouterr().out
