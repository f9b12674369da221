"""Make sure Debian's Chromium is installed for the console's browser tests; fail loudly if not.

    python tools/ensure_chromium.py        # prints the browser's path and version

Playwright drives this browser through ``executable_path`` (its own browser download does not
work on our machines). When ``chromium`` is missing and we run as root, it is installed with
``apt-get install -y chromium`` (after ``apt-get update``); without root, or when the install
fails, the exit status is 1 with the reason, and the browser tests fail rather than skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

CHROMIUM: Final = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
INSTALL_TIMEOUT: Final = 900.0
VERSION_TIMEOUT: Final = 60.0


class ChromiumUnavailable(RuntimeError):
    """Chromium is not installed and could not be installed."""


def version(path: Path = CHROMIUM) -> str:
    """The browser's ``--version`` line; raises ChromiumUnavailable when it does not run."""
    try:
        done = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChromiumUnavailable(f"{path} does not run: {exc}") from exc
    if done.returncode != 0:
        raise ChromiumUnavailable(f"{path} --version failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def _install() -> None:
    if shutil.which("apt-get") is None:
        raise ChromiumUnavailable("chromium is missing and this machine has no apt-get")
    if os.geteuid() != 0:
        raise ChromiumUnavailable(
            "chromium is missing; install it as root: apt-get install -y chromium"
        )
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                env=environ,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ChromiumUnavailable(f"{' '.join(command)} failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-2000:]
            raise ChromiumUnavailable(f"{' '.join(command)} failed:\n{tail}")


def ensure(path: Path = CHROMIUM) -> str:
    """Install Chromium when missing (as root); its version line. Raises ChromiumUnavailable."""
    if not path.exists():
        print(f"{path} is missing; installing Debian's chromium", file=sys.stderr, flush=True)
        _install()
        if not path.exists():
            raise ChromiumUnavailable(f"apt-get installed chromium, but {path} does not exist")
    return version(path)


def main() -> int:
    try:
        found = ensure()
    except ChromiumUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{CHROMIUM}: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
