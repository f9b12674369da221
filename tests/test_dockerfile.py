"""Dockerfile: no engine runs here, so what can be checked by reading is checked."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


class TestDockerfile:
    def test_every_installed_package_is_copied(self) -> None:
        """Each package pyproject installs is copied into the build stage (a package added
        later and forgotten here would be missing from the image)."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        packages = {
            name.rstrip("*")
            for name in project["tool"]["setuptools"]["packages"]["find"]["include"]
        }
        copied = set(re.findall(r"^COPY (\w+) \./\1$", _dockerfile(), flags=re.M))
        assert packages == copied

    def test_runs_as_non_root(self) -> None:
        """The final stage switches to an unprivileged user before its command."""
        final = _dockerfile().rsplit("\nFROM ", 1)[1]
        user = re.search(r"^USER (\S+)", final, flags=re.M)
        assert user is not None and not user.group(1).startswith(("root", "0"))
        assert final.index("\nUSER ") < final.index("\nCMD ")
