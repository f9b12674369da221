"""Fetch and build oauth2-proxy for the peer benchmark (``bench/peers.py``).

    python -m tools.oauth2_proxy [--version v7.15.6]     prints the binary's path

The binary is built with ``go install github.com/oauth2-proxy/oauth2-proxy/v7@VERSION`` from
the Go module proxy into the same cache as the OpenSearch test distribution
(``OPENSEARCH_CACHE_DIR``, else ``/var/cache/onderwijs-gateway`` as root, else
``~/.cache/onderwijs-gateway``), as ``oauth2-proxy-VERSION/oauth2-proxy``, and reused on later
runs. Needs Go (``go`` on PATH or ``/usr/local/go/bin/go``); the build takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tools.opensearch_node import default_cache_dir

DEFAULT_VERSION = "v7.15.6"
MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
GO_FALLBACK = Path("/usr/local/go/bin/go")
BUILD_TIMEOUT = 1200.0


class FetchError(Exception):
    """oauth2-proxy could not be built (no Go, no module proxy, a failed build)."""


def binary_path(version: str, cache_dir: Path) -> Path:
    """Where the binary of ``version`` is kept in ``cache_dir``."""
    return cache_dir / f"oauth2-proxy-{version}" / "oauth2-proxy"


def find_go() -> Path | None:
    found = shutil.which("go")
    if found:
        return Path(found)
    return GO_FALLBACK if GO_FALLBACK.exists() else None


def install_command(go: Path, version: str) -> list[str]:
    """``go install``, stamping the version as the project's own Makefile does."""
    return [
        str(go),
        "install",
        f"-ldflags=-X {MODULE}/pkg/version.VERSION={version}",
        f"{MODULE}@{version}",
    ]


def ensure(version: str = DEFAULT_VERSION, cache_dir: Path | None = None) -> Path:
    """The oauth2-proxy binary of ``version``, built once and then reused."""
    target = binary_path(version, cache_dir or default_cache_dir())
    if target.is_file() and os.access(target, os.X_OK):
        return target
    go = find_go()
    if go is None:
        raise FetchError(
            "oauth2-proxy is not cached and Go is missing: install Go (https://go.dev/dl/) or "
            f"put an oauth2-proxy {version} binary at {target}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"building oauth2-proxy {version} with {go} (a few minutes, once)", file=sys.stderr)
    env = {**os.environ, "GOBIN": str(target.parent), "CGO_ENABLED": "0"}
    try:
        done = subprocess.run(
            install_command(go, version),
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"go install did not finish within {BUILD_TIMEOUT:.0f} s") from exc
    if done.returncode != 0 or not target.is_file():
        tail = "\n".join((done.stderr or "").splitlines()[-15:])
        raise FetchError(f"go install {MODULE}@{version} failed ({done.returncode}):\n{tail}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    try:
        print(ensure(args.version))
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
