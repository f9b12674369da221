"""Audit events about a request, built from what the stages recorded in the gateway state.

:func:`request_event` builds any event; :func:`personal_data_event` builds the one event the
authorize stage emits on (nearly) every allowed request, the personal-data access, and yields
exactly what ``request_event(scope, action="personal_data_access", category=["web"],
event_type=["access"], outcome="success", **exposed)`` yields (same keys, same order, same
values), for about 1.5 µs less: the constant head is copied instead of built, the keyword
arguments are not packed, and the identity's fields are remembered per :class:`Identity` (the
authenticate stage reuses one object per session and roles).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.types import SCOPE_KEY, GatewayState, Identity, Scope

#: The remembered identity fields are forgotten when this many identities were seen.
_IDENTITY_CACHE_LIMIT: Final = 10_000
#: A User-Agent longer than this is cut.
_USER_AGENT_LIMIT: Final = 512

# id(identity) -> (identity, user.id, sorted roles, organization.id). Keyed on the object's id
# (hashing a frozen dataclass runs Python code); the entry holds the object, so the id is not
# reused while the entry lives, and the ``is`` check makes a stale entry harmless.
_identities: dict[int, tuple[Identity, str | None, tuple[str, ...], str | None]] = {}

_PERSONAL_DATA_HEAD: Final[dict[str, Any]] = {
    "event.kind": "event",
    "event.action": "personal_data_access",
    "event.category": None,  # a new list per event (set below): events never share a list
    "event.type": None,
    "event.outcome": "success",
}


def user_agent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            return bytes(value).decode("latin-1")[:_USER_AGENT_LIMIT]
    return None


def _identity_fields(who: Identity) -> tuple[Identity, str | None, tuple[str, ...], str | None]:
    found = _identities.get(id(who))
    if found is not None and found[0] is who:
        return found
    if len(_identities) >= _IDENTITY_CACHE_LIMIT:
        _identities.clear()
    found = (who, who.user_id, tuple(sorted(who.roles)), who.tenant)
    _identities[id(who)] = found
    return found


def _add_state(event: dict[str, Any], state: GatewayState) -> None:
    """What the stages know: request id, client address, path, identity, rule."""
    event["trace.id"] = state.request_id
    if state.client_ip is not None:
        event["source.ip"] = state.client_ip
    if state.path is not None:
        event["url.path"] = state.path
    who = state.identity
    if who is not None and not who.is_anonymous:
        _, user_id, roles, tenant = _identity_fields(who)
        event["user.id"] = user_id
        event["user.roles"] = list(roles)
        if tenant is not None:
            event["organization.id"] = tenant
    decision = state.decision
    if decision is not None and decision.rule is not None:
        event["rule.name"] = decision.rule


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
        _add_state(event, state)
    event.update(fields)
    return event


def personal_data_event(scope: Scope, exposed: Mapping[str, Any]) -> dict[str, Any]:
    """The ``personal_data_access`` event of an allowed request: :func:`request_event`'s
    event for that action (category web, type access, outcome success) with ``exposed`` (the
    classifier's fields) added, built faster."""
    event = _PERSONAL_DATA_HEAD.copy()
    event["event.category"] = ["web"]
    event["event.type"] = ["access"]
    event["http.request.method"] = "GET" if scope["type"] == "websocket" else scope.get("method")
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            event["user_agent.original"] = bytes(value).decode("latin-1")[:_USER_AGENT_LIMIT]
            break
    state = scope.get(SCOPE_KEY)
    if isinstance(state, GatewayState):
        _add_state(event, state)
    event.update(exposed)
    return event
