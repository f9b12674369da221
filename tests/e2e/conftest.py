"""Session fixtures of the end-to-end tests: one Keycloak per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._keycloak import Keycloak, KeycloakError, start

_STARTED: list[Keycloak] = []


@pytest.fixture(scope="session")
def keycloak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keycloak]:
    log = Path(tmp_path_factory.mktemp("keycloak")) / "keycloak.log"
    try:
        instance = start(log)
    except KeycloakError as exc:
        pytest.fail(str(exc))
    _STARTED.append(instance)
    yield instance
    instance.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for instance in _STARTED:
        if instance.started_in is None:
            terminalreporter.write_line(f"keycloak: reused at {instance.url}")
        else:
            terminalreporter.write_line(
                f"keycloak: started in {instance.started_in:.1f} s at {instance.url}"
            )
