"""The personal-data access event in a compact form: only what varies per request, as a tuple.

The gateway's authorize stage records a ``personal_data_access`` event on nearly every allowed
request. Built as a dict with dotted keys on the request thread, copied into the queue and
written as a JSON object by the flusher thread, it cost the request process about 10 µs of
CPU per request (``bench/PROFILE.md``). In the compact form the request thread queues a
:data:`PersonalDataAccess` tuple (the values it already holds), the flusher writes it as a JSON
array, and the audit worker process expands it with :func:`personal_data_access_event` into
the very dict the gateway built before: the same keys, in the same order, with the same values.

The tuple's fields, in order (``None`` means the event has no such key, except where noted):

=====================  ========================================================================
``method``             ``http.request.method`` (always present, may be ``None``)
``user_agent``         ``user_agent.original`` (already cut to the gateway's limit)
``request_id``         ``trace.id`` (always present)
``client_ip``          ``source.ip``
``path``               ``url.path`` (the canonical path)
``user_id``            ``user.id``: present (even ``None``) whenever ``roles`` is not ``None``
``roles``              ``user.roles`` (sorted); ``None`` for no identity or an anonymous one
``tenant``             ``organization.id`` (only with ``roles``)
``rule``               ``rule.name``
``exposed``            the classifier's fields (``audit.data_categories``, ``labels``,
                       ``user.target.id``...), added last: they win over the fields above
=====================  ========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["PERSONAL_DATA_ACTION", "PersonalDataAccess", "personal_data_access_event"]

PERSONAL_DATA_ACTION: Final = "personal_data_access"

#: method, user agent, request id, client ip, path, user id, roles, tenant, rule, exposed.
PersonalDataAccess = tuple[
    str | None,
    str | None,
    str,
    str | None,
    str | None,
    str | None,
    tuple[str, ...] | None,
    str | None,
    str | None,
    Mapping[str, Any],
]

_FIELDS: Final = 10


def personal_data_access_event(fields: Sequence[Any]) -> dict[str, Any]:
    """The ``personal_data_access`` event of ``fields`` (a :data:`PersonalDataAccess`, or the
    JSON array the flusher wrote of one). Raises ValueError for anything else."""
    if len(fields) != _FIELDS:
        raise ValueError(f"a personal-data access has {_FIELDS} fields, not {len(fields)}")
    method, agent, request_id, client_ip, path, user_id, roles, tenant, rule, exposed = fields
    if not isinstance(exposed, Mapping):
        raise ValueError("a personal-data access's exposed fields are a mapping")
    if roles is not None and not isinstance(roles, list | tuple):
        raise ValueError("a personal-data access's roles are a list")
    event: dict[str, Any] = {
        "event.kind": "event",
        "event.action": PERSONAL_DATA_ACTION,
        "event.category": ["web"],
        "event.type": ["access"],
        "event.outcome": "success",
        "http.request.method": method,
    }
    if agent is not None:
        event["user_agent.original"] = agent
    event["trace.id"] = request_id
    if client_ip is not None:
        event["source.ip"] = client_ip
    if path is not None:
        event["url.path"] = path
    if roles is not None:
        event["user.id"] = user_id
        event["user.roles"] = list(roles)
        if tenant is not None:
            event["organization.id"] = tenant
    if rule is not None:
        event["rule.name"] = rule
    event.update(exposed)
    return event
