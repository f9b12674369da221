"""The Onderwijs & Regio access gateway: an HTTPS reverse proxy that authenticates,
authorizes and audits every request before forwarding it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.types import ANONYMOUS, Decision, Identity

if TYPE_CHECKING:
    from gateway.app import create_app

__all__ = ["ANONYMOUS", "Decision", "Identity", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: gateway.app imports the policy package, which imports gateway.types.
    if name == "create_app":
        from gateway.app import create_app  # noqa: PLC0415

        return create_app
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
