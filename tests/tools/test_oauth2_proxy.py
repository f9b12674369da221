"""tools/oauth2_proxy.py: the cached binary is reused, and a missing Go is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import oauth2_proxy
from tools.oauth2_proxy import FetchError, binary_path, ensure, install_command


class TestPaths:
    def test_binary_kept_per_version(self, tmp_path: Path) -> None:
        """Each version has its own directory in the cache."""
        assert binary_path("v7.15.6", tmp_path) == tmp_path / "oauth2-proxy-v7.15.6/oauth2-proxy"

    def test_install_command_pins_and_stamps_the_version(self) -> None:
        """go install of the exact version, with the version stamped as upstream's build does."""
        command = install_command(Path("/go/bin/go"), "v7.15.6")
        assert command[:2] == ["/go/bin/go", "install"]
        assert command[-1] == "github.com/oauth2-proxy/oauth2-proxy/v7@v7.15.6"
        assert (
            "-ldflags=-X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=v7.15.6"
            in command
        )


class TestEnsure:
    def test_cached_binary_is_reused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A cached executable is returned without looking for Go."""
        target = binary_path("v7.15.6", tmp_path)
        target.parent.mkdir(parents=True)
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
        monkeypatch.setattr(oauth2_proxy, "find_go", lambda: pytest.fail("Go was looked for"))
        assert ensure("v7.15.6", tmp_path) == target

    def test_no_go_is_a_clear_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a cached binary and without Go, the error says what to install and where."""
        monkeypatch.setattr(oauth2_proxy, "find_go", lambda: None)
        with pytest.raises(FetchError, match="Go is missing"):
            ensure("v7.15.6", tmp_path)

    def test_failed_build_is_reported(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A go install that fails raises with its exit code and output."""
        fake_go = tmp_path / "go"
        fake_go.write_text("#!/bin/sh\necho 'module lookup failed' >&2\nexit 1\n")
        fake_go.chmod(0o755)
        monkeypatch.setattr(oauth2_proxy, "find_go", lambda: fake_go)
        with pytest.raises(FetchError, match="module lookup failed"):
            ensure("v7.15.6", tmp_path / "cache")
