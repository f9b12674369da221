"""One deployment per test module (a built gateway starts once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security._harness import Deployment, deployed


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(Path(tmp_path_factory.mktemp("security"))) as running:
        yield running
