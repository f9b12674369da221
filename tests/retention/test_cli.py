"""retention/_cli.py: ``python -m retention`` subcommands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from retention._cli import main

CONFIG = """
[server]
public_hosts = ["platform.example.nl"]
tls_cert_file = "/etc/gateway/cert.pem"
tls_key_file = "/etc/gateway/key.pem"

[assertion]
key_files = ["/etc/gateway/assertion-key.pem"]

[retention]
rules = ["errors=14/60"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    return path


class TestInventory:
    def test_prints_configured_periods(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The inventory shows the periods of the settings file, not only the defaults."""
        assert main(["--config", str(config), "inventory"]) == 0
        out = capsys.readouterr().out
        errors = out.split("\nerrors\n", 1)[1].split("\n\n", 1)[0]
        assert "full detail:  14 days" in errors
        assert "deleted after 60 days" in errors

    def test_bad_setting_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A malformed rule stops the command with a message, exit status 2."""
        path = tmp_path / "gateway.toml"
        path.write_text(CONFIG.replace("errors=14/60", "errors=99/60"))
        assert main(["--config", str(path), "inventory"]) == 2
        assert "retention.rules" in capsys.readouterr().err

    def test_defaults_without_settings(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without a settings file the inventory shows the defaults and says so."""
        monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
        assert main(["inventory"]) == 0
        captured = capsys.readouterr()
        assert "defaults" in captured.err
        assert "deleted after 90 days" in captured.out

    def test_module_runs(self, config: Path) -> None:
        """``python -m retention inventory`` runs as a program."""
        done = subprocess.run(
            [sys.executable, "-m", "retention", "--config", str(config), "inventory"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "personal_data_access" in done.stdout
