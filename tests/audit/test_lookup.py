"""audit/lookup.py: staff find a person's pseudonym from a value they know."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.lookup import KEY_FILE_VARIABLE, main
from audit.processors import Pseudonymiser

KEY = b"0123456789abcdef0123456789abcdef"


class TestLookup:
    def test_prints_the_pseudonym_the_chain_stores(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The tool's pseudonym equals the one the audit chain writes for the same key."""
        key_file = tmp_path / "key"
        key_file.write_bytes(KEY + b"\n")
        monkeypatch.setenv(KEY_FILE_VARIABLE, str(key_file))
        assert main(["https://idp|42"]) == 0
        expected = Pseudonymiser(key=KEY).pseudonym("https://idp|42")
        assert capsys.readouterr().out == f"https://idp|42\t{expected}\n"

    def test_missing_key_file_variable_is_a_clear_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the key file variable the tool stops and says what is missing."""
        monkeypatch.delenv(KEY_FILE_VARIABLE, raising=False)
        with pytest.raises(SystemExit, match=KEY_FILE_VARIABLE):
            main(["x"])

    def test_short_key_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A key under 32 bytes is refused."""
        key_file = tmp_path / "key"
        key_file.write_bytes(b"short")
        monkeypatch.setenv(KEY_FILE_VARIABLE, str(key_file))
        with pytest.raises(SystemExit, match="32 bytes"):
            main(["x"])
