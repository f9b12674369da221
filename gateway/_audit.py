"""Audit events about a request, built from what the stages recorded in the gateway state."""

from __future__ import annotations

from typing import Any

from gateway.types import SCOPE_KEY, GatewayState, Scope


def user_agent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            return bytes(value).decode("latin-1")[:512]
    return None


def request_event(
    scope: Scope,
    *,
    action: str,
    category: list[str],
    event_type: list[str],
    outcome: str,
    reason: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An ECS event (flat dotted keys) for ``scope``, with whatever the stages know so far."""
    event: dict[str, Any] = {
        "event.kind": "event",
        "event.action": action,
        "event.category": category,
        "event.type": event_type,
        "event.outcome": outcome,
        "http.request.method": "GET" if scope["type"] == "websocket" else scope.get("method"),
    }
    if reason is not None:
        event["event.reason"] = reason
    agent = user_agent(scope)
    if agent is not None:
        event["user_agent.original"] = agent
    state = scope.get(SCOPE_KEY)
    if isinstance(state, GatewayState):
        event["trace.id"] = state.request_id
        if state.client_ip is not None:
            event["source.ip"] = state.client_ip
        if state.path is not None:
            event["url.path"] = state.path
        who = state.identity
        if who is not None and not who.is_anonymous:
            event["user.id"] = who.user_id
            event["user.roles"] = sorted(who.roles)
            if who.tenant is not None:
                event["organization.id"] = who.tenant
        if state.decision is not None and state.decision.rule is not None:
            event["rule.name"] = state.decision.rule
    event.update(fields)
    return event
