"""Shared helpers for the OIDC tests: a settable clock, keys, codecs."""

from __future__ import annotations

import os
from pathlib import Path

from audit import MemorySink
from gateway.oidc import Grants, Sealer, SessionCodec


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def key() -> bytes:
    return os.urandom(32)


def codec(clock: Clock, *keys: bytes, cookie_name: str = "__Host-gw_session") -> SessionCodec:
    return SessionCodec(
        sealer=Sealer(keys=list(keys) or [key()]),
        cookie_name=cookie_name,
        idle_timeout=1800,
        absolute_timeout=12 * 3600,
        refresh_interval=300,
        clock=clock,
    )


def grants(tmp_path: Path, text: str = "", sink: MemorySink | None = None) -> Grants:
    path = tmp_path / "grants.toml"
    path.write_text(text)
    return Grants(path=path, sink=sink or MemorySink(), clock=Clock())
