"""Audit events of login, logout and tokens (flat ECS keys; never a token, code or cookie).

Action names follow the taxonomy in ``audit/events.py`` (``login_success``, ``login_failure``,
``logout``, ``session_refresh``, ``bearer_token_rejected``, ``role_granted``/``role_revoked``)
so the events land in the authentication retention category.
"""

from __future__ import annotations

from typing import Any

from gateway._audit import request_event
from gateway.types import Scope


def session_event(
    scope: Scope,
    *,
    action: str,
    event_type: list[str],
    outcome: str,
    reason: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An event about a session cookie (``session_rejected``, ``session_refresh``)."""
    return request_event(
        scope,
        action=action,
        category=["authentication", "session"],
        event_type=event_type,
        outcome=outcome,
        reason=reason,
        **fields,
    )


def bearer_rejected_event(scope: Scope, *, reason: str, **fields: Any) -> dict[str, Any]:
    """A ``bearer_token_rejected`` event (refer to the token by its hash in ``labels``)."""
    return request_event(
        scope,
        action="bearer_token_rejected",
        category=["authentication"],
        event_type=["denied"],
        outcome="failure",
        reason=reason,
        **fields,
    )


def login_event(
    scope: Scope,
    *,
    action: str,
    outcome: str,
    reason: str | None = None,
    idp: str | None = None,
    user_id: str | None = None,
    roles: frozenset[str] | None = None,
    tenant: str | None = None,
    detail: str | None = None,
    status: int | None = None,
    kind: str = "event",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    event = request_event(
        scope,
        action=action,
        category=["authentication"],
        event_type=["start"] if outcome == "success" else ["denied"],
        outcome=outcome,
        reason=reason,
    )
    event["event.kind"] = kind
    found = dict(labels or {})
    if idp is not None:
        found["idp"] = idp
    if found:
        event["labels"] = found
    if user_id is not None:
        event["user.id"] = user_id
    if roles is not None:
        event["user.roles"] = sorted(roles)
    if tenant is not None:
        event["organization.id"] = tenant
    if detail is not None and detail != reason:
        event["error.message"] = detail
    if status is not None:
        event["http.response.status_code"] = status
    return event
