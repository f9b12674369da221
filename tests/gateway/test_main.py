"""gateway/__main__.py: check-config validates and names the bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.__main__ import main


class TestCheckConfig:
    def test_valid_settings_are_shown_with_secrets_masked(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A valid file is accepted, its settings listed, secrets masked, relaxations named."""
        config = tmp_path / "gateway.toml"
        config.write_text(
            '[server]\npublic_hosts = ["platform.example.nl"]\nallow_plain_http = true\n'
            'tls_key_password = "pa55word-value"\n[assertion]\nkey_files = ["/k.pem"]\n'
        )
        monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
        assert main(["check-config", "--config", str(config)]) == 0
        out, err = capsys.readouterr()
        assert "server.public_hosts = platform.example.nl" in out
        assert "pa55word-value" not in out + err
        assert "relaxed: server.allow_plain_http" in err

    def test_invalid_setting_is_named_with_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad value exits 2 and names the setting."""
        config = tmp_path / "gateway.toml"
        config.write_text('[server]\npublic_hosts = ["a.example"]\nhttps_port = "x"\n')
        assert main(["check-config", "--config", str(config)]) == 2
        assert "server.https_port: expected an integer" in capsys.readouterr().err
