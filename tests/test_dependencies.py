"""The environment holds the libraries we rely on, and none that silently replace them."""

from __future__ import annotations

import importlib.metadata

import pytest


class TestDependencies:
    def test_maintained_pycasbin_provides_casbin(self) -> None:
        """`import casbin` comes from pycasbin 2.x, not the abandoned `casbin` 1.x package."""
        assert int(importlib.metadata.version("pycasbin").split(".")[0]) >= 2
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution("casbin")

    def test_httpx2_absent(self) -> None:
        """httpx2 would switch Authlib to it and make respx stop intercepting (PITFALLS.md)."""
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution("httpx2")

    def test_authlib_without_known_advisories(self) -> None:
        """Authlib 1.6.x has critical advisories; we require 1.9 or newer."""
        major, minor = (int(part) for part in importlib.metadata.version("authlib").split(".")[:2])
        assert (major, minor) >= (1, 9)
