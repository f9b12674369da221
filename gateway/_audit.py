"""Audit events about a request, built from what the stages recorded in the gateway state.

:func:`request_event` builds any event. The authorize stage records one event on (nearly) every
allowed request, the personal-data access, with :func:`emit_personal_data`: it takes the
values that vary per request into a :data:`audit.PersonalDataAccess` tuple
(:func:`personal_data_fields`) and hands that to a sink that has ``emit_personal_data`` (the
:class:`audit.AuditWorker`: the event is then built in the audit worker process, off the
request process's CPU), or the expanded event to any other sink's ``emit``. Either way the
stored event is exactly what ``request_event(scope, action="personal_data_access",
category=["web"], event_type=["access"], outcome="success")`` updated with the classifier's
fields yields (same keys, same order, same values; :func:`personal_data_event`). The identity's
fields are remembered per :class:`Identity` (the authenticate stage reuses one object per
session and roles).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from audit import AuditSink, PersonalDataAccess, personal_data_access_event
from audit._access import PERSONAL_DATA_ACTION
from gateway.types import SCOPE_KEY, GatewayState, Identity, Scope

#: The remembered identity fields are forgotten when this many identities were seen.
_IDENTITY_CACHE_LIMIT: Final = 10_000
#: A User-Agent longer than this is cut.
_USER_AGENT_LIMIT: Final = 512

_IdentityFields = tuple[Identity, str | None, tuple[str, ...] | None, str | None]

# id(identity) -> (identity, user.id, sorted roles, organization.id), the last three None for
# an anonymous identity (the event names no user). Keyed on the object's id (hashing a frozen
# dataclass runs Python code); the entry holds the object, so the id is not reused while the
# entry lives, and the ``is`` check makes a stale entry harmless.
_identities: dict[int, _IdentityFields] = {}


def user_agent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            return bytes(value).decode("latin-1")[:_USER_AGENT_LIMIT]
    return None


def _identity_fields(who: Identity) -> _IdentityFields:
    found = _identities.get(id(who))
    if found is not None and found[0] is who:
        return found
    if len(_identities) >= _IDENTITY_CACHE_LIMIT:
        _identities.clear()
    if who.is_anonymous:
        found = (who, None, None, None)
    else:
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
    if who is not None:
        _, user_id, roles, tenant = _identity_fields(who)
        if roles is not None:  # not anonymous
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


def personal_data_fields(scope: Scope, exposed: Mapping[str, Any]) -> PersonalDataAccess | None:
    """The ``personal_data_access`` event of an allowed request in its compact form (see
    :mod:`audit._access`), or None when the scope has no gateway state."""
    state = scope.get(SCOPE_KEY)
    if not isinstance(state, GatewayState):
        return None
    agent = None
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            agent = bytes(value).decode("latin-1")[:_USER_AGENT_LIMIT]
            break
    who = state.identity
    if who is None:
        user_id = roles = tenant = None
    else:
        _, user_id, roles, tenant = _identity_fields(who)
    decision = state.decision
    return (
        "GET" if scope["type"] == "websocket" else scope.get("method"),
        agent,
        state.request_id,
        state.client_ip,
        state.path,
        user_id,
        roles,
        tenant,
        None if decision is None else decision.rule,
        exposed,
    )


def personal_data_event(scope: Scope, exposed: Mapping[str, Any]) -> dict[str, Any]:
    """The ``personal_data_access`` event of an allowed request: :func:`request_event`'s
    event for that action (category web, type access, outcome success) with ``exposed`` (the
    classifier's fields) added."""
    fields = personal_data_fields(scope, exposed)
    if fields is None:
        return _personal_data_request_event(scope, exposed)
    return personal_data_access_event(fields)


def emit_personal_data(sink: AuditSink, scope: Scope, exposed: Mapping[str, Any]) -> None:
    """``sink.emit(personal_data_event(scope, exposed))``; through the sink's
    ``emit_personal_data`` (the compact form, see :class:`audit.PersonalDataSink`) when it has
    one, so the event is built in the audit worker rather than on the request thread."""
    fields = personal_data_fields(scope, exposed)
    if fields is None:
        sink.emit(_personal_data_request_event(scope, exposed))
        return
    fast = getattr(sink, "emit_personal_data", None)
    if fast is None:
        sink.emit(personal_data_access_event(fields))
        return
    fast(fields)


def _personal_data_request_event(scope: Scope, exposed: Mapping[str, Any]) -> dict[str, Any]:
    """Without a gateway state (no request id): the event :func:`request_event` builds."""
    event = request_event(
        scope,
        action=PERSONAL_DATA_ACTION,
        category=["web"],
        event_type=["access"],
        outcome="success",
    )
    event.update(exposed)
    return event
