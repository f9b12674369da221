"""Fixtures of the console's page tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console._support import World, person, world


@pytest.fixture
def officer(tmp_path: Path) -> Iterator[World]:
    """The console as a security officer sees it."""
    yield from world(tmp_path, person("security_officer"))


@pytest.fixture
def responder(tmp_path: Path) -> Iterator[World]:
    """The console as an incident responder sees it."""
    yield from world(tmp_path, person("incident_responder", subject="ir-1"))
