"""The OpenAPI 3.1 document of the gateway's own JSON APIs, built from one description in code.

:data:`OPERATIONS` describes every JSON endpoint the gateway mounts under ``/_gateway`` (its
parameters, request body and answers); :func:`openapi_document` turns that description into
the document, and :func:`openapi_route` serves it at ``GET /_gateway/openapi.json``. Whatever
can be taken from the code that does the work is taken from there rather than written twice:
the search filters from :mod:`audit._search`, the event schema from ``audit.events.FIELDS``
(which also generates the stores' schema), the grouping keys of statistics from
``audit._store.COUNT_KEYS``, the categories and actions from the event taxonomy.

Routes that are not JSON APIs (the OIDC browser flow) are listed in :data:`NOT_DESCRIBED` with
the reason. ``tests/gateway/test_openapi.py`` compares every route the built gateway mounts
under ``/_gateway`` with this document (both ways), and validates real answers against its
schemas, so the document cannot drift from the code unnoticed.

The policy decides who may read the document (``policies/policy.csv``: the roles that call
these APIs). It holds no secret, but it maps the attack surface, so it is not public.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from audit._search import LIST_PARAMS, MAX_PAGE_SIZE, MAX_VALUES, OUTCOMES
from audit._stats import DEFAULT_COLUMN, DEFAULT_ROWS, DEFAULT_THRESHOLD
from audit._store import COUNT_KEYS
from audit.events import ACTIONS, FIELDS, Category, Field

__all__ = [
    "NOT_DESCRIBED",
    "OPENAPI_PATH",
    "OPERATIONS",
    "Operation",
    "openapi_document",
    "openapi_route",
]

OPENAPI_PATH: Final = "/_gateway/openapi.json"
OPENAPI_VERSION: Final = "3.1.0"
API_VERSION: Final = "1"

#: Mounted ``/_gateway`` routes that are deliberately not in the document, and why.
NOT_DESCRIBED: Final[Mapping[tuple[str, str], str]] = {
    ("GET", "/_gateway/login"): "OIDC browser flow: redirects and HTML, not a JSON API",
    ("GET", "/_gateway/callback"): "OIDC browser flow: redirects and HTML, not a JSON API",
    ("GET", "/_gateway/logout"): "OIDC browser flow: redirects and HTML, not a JSON API",
    ("POST", "/_gateway/logout"): "OIDC browser flow: redirects and HTML, not a JSON API",
    ("POST", "/_gateway/backchannel-logout"): "OIDC Back-Channel Logout 1.0 (form-encoded)",
    **{
        (method, "/_gateway/console" + page): "security console: server-rendered HTML pages"
        for method, page in (
            ("GET", ""),
            ("GET", "/audit"),
            ("GET", "/audit/events/{event_id}"),
            ("GET", "/audit/export"),
            ("GET", "/holds"),
            ("POST", "/holds"),
            ("POST", "/holds/confirm"),
            ("POST", "/holds/{hold_id}/release"),
            ("GET", "/policies"),
            ("GET", "/sessions"),
            ("POST", "/sessions/confirm"),
            ("POST", "/sessions/revoke"),
            ("GET", "/static/console.css"),
            ("GET", "/stats"),
            ("GET", "/subjects"),
            ("GET", "/subjects/export"),
        )
    },
}

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented answer: status, description, media type and schema."""

    description: str
    schema: Mapping[str, Any] | None = None
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Operation:
    """One endpoint: method, path (OpenAPI template), what it takes and what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    description: str
    answers: Mapping[int, Answer]
    parameters: Sequence[Mapping[str, Any]] = ()
    body: Mapping[str, Any] | None = None
    public: bool = False
    tags: tuple[str, ...] = field(default=("audit",))

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "operationId": self.operation_id,
            "summary": self.summary,
            "description": self.description,
            "tags": list(self.tags),
            "responses": {
                str(status): _answer(answer) for status, answer in sorted(self.answers.items())
            },
        }
        if self.parameters:
            out["parameters"] = [dict(p) for p in self.parameters]
        if self.body is not None:
            out["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": dict(self.body)}},
            }
        out["security"] = [] if self.public else [{"bearer": []}, {"session": []}]
        return out


def _answer(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.schema is not None:
        out["content"] = {answer.media_type: {"schema": dict(answer.schema)}}
    return out


# --- schemas ----------------------------------------------------------------------------------


def _field_schema(f: Field) -> dict[str, Any]:
    if f.multi:
        return {"type": "array", "items": {"type": "string"}}
    if f.type == "object":
        return {"type": "object", "additionalProperties": {"type": "string"}}
    if f.type == "long":
        return {"type": "integer"}
    if f.type == "boolean":
        return {"type": "boolean"}
    if f.type == "date":
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}


def _event_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "One audit event: flat ECS field names (audit/events.py FIELDS).",
        "properties": {f.name: _field_schema(f) for f in FIELDS},
        "required": [f.name for f in FIELDS if f.required],
        "additionalProperties": False,
    }


_COUNT: Final = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^<"}]}

SCHEMAS: Final[dict[str, Any]] = {
    "Event": _event_schema(),
    "SearchResult": {
        "type": "object",
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "total": {
                "type": "object",
                "description": "exact (eq) up to 10,000 matches, then at least (gte) 10,000",
                "properties": {
                    "value": {"type": "integer", "minimum": 0, "maximum": 10_000},
                    "relation": {"enum": ["eq", "gte"]},
                },
                "required": ["value", "relation"],
                "additionalProperties": False,
            },
            "next_cursor": {
                "type": ["string", "null"],
                "description": "opaque; pass as cursor for the next page (null: last page)",
            },
        },
        "required": ["events", "total", "next_cursor"],
        "additionalProperties": False,
    },
    "SubjectExport": {
        "type": "object",
        "properties": {
            "cover": {
                "type": "object",
                "properties": {
                    "subject": {"type": "string"},
                    "generated_at": {"type": "string", "format": "date-time"},
                    "period": {
                        "type": "object",
                        "properties": {
                            "first": {"type": ["string", "null"]},
                            "last": {"type": ["string", "null"]},
                        },
                        "required": ["first", "last"],
                    },
                    "events": {"type": "integer", "minimum": 0},
                    "counts_by_category": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                    },
                    "consultations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "date": {"type": "string"},
                                "by": {"type": ["string", "null"]},
                                "purposes": {"type": "string"},
                                "data_categories": {"type": "array", "items": {"type": "string"}},
                            },
                            "required": ["date", "by", "purposes", "data_categories"],
                        },
                    },
                    "platform_ids": {
                        "type": "object",
                        "description": "the person's platform ids (from the platform's person "
                        "map) whose reads by others are included; a note when no map is set",
                        "properties": {
                            "source": {"type": ["string", "null"]},
                            "ids": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "tenant": {"type": ["string", "null"]},
                                        "id": {"type": "string"},
                                    },
                                    "required": ["tenant", "id"],
                                },
                            },
                            "note": {"type": "string"},
                        },
                        "required": ["source", "ids"],
                    },
                },
                "required": [
                    "subject",
                    "generated_at",
                    "period",
                    "events",
                    "counts_by_category",
                    "consultations",
                    "platform_ids",
                ],
            },
            "events": {"type": "array", "items": _ref("Event")},
        },
        "required": ["cover", "events"],
        "additionalProperties": False,
    },
    "StatisticsTable": {
        "type": "object",
        "description": "counts below the threshold (and their complements) read '<threshold'",
        "properties": {
            "threshold": {"type": "integer", "minimum": 1},
            "rows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "key": {"type": "object", "additionalProperties": {"type": "string"}},
                        "cells": {"type": "object", "additionalProperties": _COUNT},
                        "total": _COUNT,
                    },
                    "required": ["key", "cells", "total"],
                    "additionalProperties": False,
                },
            },
            "column_totals": {"type": "object", "additionalProperties": _COUNT},
            "total": _COUNT,
        },
        "required": ["threshold", "rows", "column_totals", "total"],
        "additionalProperties": False,
    },
    "HoldScope": {
        "type": "object",
        "properties": {
            "user_ids": {"type": "array", "items": {"type": "string"}},
            "source_ips": {"type": "array", "items": {"type": "string"}},
            "organization_ids": {"type": "array", "items": {"type": "string"}},
            "categories": {"type": "array", "items": {"enum": sorted(Category)}},
            "since": {"type": ["string", "null"], "format": "date-time"},
            "until": {"type": ["string", "null"], "format": "date-time"},
        },
        "additionalProperties": False,
    },
    "Hold": {
        "type": "object",
        "properties": {
            "hold_id": {"type": "string"},
            "incident_id": {"type": "string"},
            "reason": {"type": "string"},
            "scope": _ref("HoldScope"),
            "placed_by": {"type": "string"},
            "placed_at": {"type": "string", "format": "date-time"},
            "review_at": {"type": ["string", "null"]},
            "released_by": {"type": ["string", "null"]},
            "released_at": {"type": ["string", "null"]},
            "release_reason": {"type": ["string", "null"]},
            "active": {"type": "boolean"},
        },
        "required": ["hold_id", "incident_id", "reason", "scope", "placed_by", "placed_at"],
        "additionalProperties": False,
    },
    "HoldRequest": {
        "type": "object",
        "properties": {
            "incident_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "scope": _ref("HoldScope"),
            "review_at": {"type": "string", "format": "date-time"},
        },
        "required": ["incident_id", "reason", "scope"],
        "additionalProperties": False,
    },
    "GatewayError": {
        "type": "object",
        "description": "an error the gateway's stages answer (policy, authentication, paths)",
        "properties": {
            "error": {"type": "string"},
            "status": {"type": "integer"},
            "message": {"type": "string"},
            "bericht": {"type": "string"},
            "request_id": {"type": "string"},
        },
        "required": ["error", "status", "message", "bericht", "request_id"],
        "additionalProperties": False,
    },
    "ApiError": {
        "type": "object",
        "description": "an error of the audit API (the detail names the bad parameter)",
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        "required": ["error", "detail"],
        "additionalProperties": False,
    },
    "HoldsError": {
        "type": "object",
        "properties": {"error": {"type": "string"}, "description": {"type": "string"}},
        "required": ["error", "description"],
        "additionalProperties": False,
    },
    "Error": {
        "anyOf": [_ref("GatewayError"), _ref("ApiError"), _ref("HoldsError")],
    },
}

_ERRORS: Final = {
    400: "malformed request (the answer names the parameter)",
    401: "not authenticated",
    403: "the policy or the search scope refuses the caller",
    404: "no such resource",
    409: "conflict with the resource's state",
    413: "request body too large",
    503: "the audit store (or the audit log) cannot be reached; try again later",
}
#: What any authenticated operation may answer besides its own answers (the stages).
_STAGE_ERRORS: Final = (400, 401, 403, 503)


def _errors(*statuses: int) -> dict[int, Answer]:
    return {s: Answer(_ERRORS[s], _ref("Error")) for s in sorted({*_STAGE_ERRORS, *statuses})}


# --- parameters -------------------------------------------------------------------------------


def _query(
    name: str, schema: Mapping[str, Any], description: str, *, required: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "in": "query",
        "description": description,
        "schema": dict(schema),
    }
    if required:
        out["required"] = True
    if schema.get("type") == "array":
        out["style"], out["explode"] = "form", True
    return out


_TEXT: Final = {"type": "string", "minLength": 1, "maxLength": 512}
_LIST_ITEMS: Final[dict[str, dict[str, Any]]] = {
    "category": {"enum": sorted(Category)},
    "action": {"enum": sorted(ACTIONS)},
    "outcome": {"enum": sorted(OUTCOMES)},
    "status": {"type": "integer", "minimum": 100, "maximum": 599},
}
_LIST_HELP: Final = {
    "subject": "the person, as actor (user.id) or as the one whose data was read",
    "target": "the person whose data was read (user.target.id)",
    "tenant": "organisation (organization.id) or whose data it is; school admins: their own",
    "source_ip": "address or CIDR",
    "category": "retention category (audit.category)",
    "action": "event.action",
    "outcome": "event.outcome",
    "status": "HTTP status code",
    "request_id": "the request id (trace.id)",
    "rule": "the deciding policy line (rule.name)",
}


def _search_parameters() -> list[dict[str, Any]]:
    params = [
        _query(
            name,
            {"type": "array", "items": _LIST_ITEMS.get(name, _TEXT), "maxItems": MAX_VALUES},
            _LIST_HELP[name] + "; repeat for several values (any of them)",
        )
        for name in LIST_PARAMS
    ]
    params += [
        _query("since", {"type": "string", "format": "date-time"}, "from (inclusive), with zone"),
        _query("until", {"type": "string", "format": "date-time"}, "until (exclusive), with zone"),
        _query(
            "q",
            {"type": "string", "minLength": 1, "maxLength": 256},
            "free text: part of the path, reason, error type or user agent; a word of the error",
        ),
        _query(
            "size",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 100},
            "page size",
        ),
        _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        _query("order", {"enum": ["asc", "desc"], "default": "asc"}, "by time"),
    ]
    return params


_STATS_KEYS: Final = {"enum": list(COUNT_KEYS)}
_ONE_HOLD: Final = {
    "type": "object",
    "properties": {"hold": _ref("Hold")},
    "required": ["hold"],
    "additionalProperties": False,
}
_READINESS: Final = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ready", "not_ready"]},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
    "required": ["status", "checks"],
    "additionalProperties": False,
}

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "GET",
        "/_gateway/audit",
        "searchAuditEvents",
        "Search audit events",
        "Security officers and incident responders search every event, school admins their "
        "own tenant's (enforced in the query); every search is itself an audit event.",
        {200: Answer("one page of events", _ref("SearchResult")), **_errors()},
        parameters=_search_parameters(),
    ),
    Operation(
        "GET",
        "/_gateway/audit/export",
        "exportSubject",
        "Export every event about one person (access request)",
        "Everything about the subject (as actor, and as the person whose data was read: by "
        "their user id or, through the platform's person map, by their platform ids) that the "
        "caller may see, oldest first, with a cover summary; other staff appear by role "
        "unless configured otherwise.",
        {
            200: Answer("the export", _ref("SubjectExport")),
            **_errors(),
        },
        parameters=[
            _query(
                "subject",
                {**_TEXT, "pattern": "^.+\\|.+$"},
                "issuer-qualified user id (issuer|subject), matched exactly",
                required=True,
            ),
            _query("format", {"enum": ["json", "csv"], "default": "json"}, "json or csv"),
        ],
    ),
    Operation(
        "GET",
        "/_gateway/stats",
        "auditStatistics",
        "Aggregated, suppressed counts",
        f"Counts by {' x '.join(DEFAULT_ROWS)} (rows) and {DEFAULT_COLUMN} (columns) unless "
        f"asked otherwise; cells below {DEFAULT_THRESHOLD} and their complements are hidden.",
        {200: Answer("the table", _ref("StatisticsTable")), **_errors()},
        parameters=[
            _query(
                "row",
                {"type": "array", "items": _STATS_KEYS, "maxItems": len(COUNT_KEYS)},
                "row keys, in order",
            ),
            _query("column", _STATS_KEYS, "the column key"),
            _query("since", {"type": "string", "format": "date-time"}, "from (inclusive)"),
            _query("until", {"type": "string", "format": "date-time"}, "until (exclusive)"),
        ],
    ),
    Operation(
        "GET",
        "/_gateway/holds",
        "listHolds",
        "List incident holds",
        "Holds protect the events in their scope from retention until released.",
        {
            200: Answer(
                "the holds",
                {
                    "type": "object",
                    "properties": {"holds": {"type": "array", "items": _ref("Hold")}},
                    "required": ["holds"],
                    "additionalProperties": False,
                },
            ),
            **_errors(),
        },
        parameters=[
            _query("state", {"enum": ["active", "released", "all"], "default": "all"}, "filter")
        ],
        tags=("holds",),
    ),
    Operation(
        "POST",
        "/_gateway/holds",
        "placeHold",
        "Place an incident hold",
        "Incident responders only; placing is an audit event.",
        {
            201: Answer("the hold placed", _ONE_HOLD),
            **_errors(413),
        },
        body=_ref("HoldRequest"),
        tags=("holds",),
    ),
    Operation(
        "POST",
        "/_gateway/holds/{hold_id}/release",
        "releaseHold",
        "Release an incident hold",
        "Incident responders only; a hold is released once, never deleted.",
        {200: Answer("the hold released", _ONE_HOLD), **_errors(404, 409, 413)},
        parameters=[
            {"name": "hold_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        body={
            "type": "object",
            "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 1000}},
            "required": ["reason"],
            "additionalProperties": False,
        },
        tags=("holds",),
    ),
    Operation(
        "POST",
        "/_gateway/sessions/revoke",
        "revokeSessions",
        "End every session of one user",
        "Incident responders only; an audit event.",
        {
            200: Answer(
                "revoked",
                {
                    "type": "object",
                    "properties": {"revoked": {"type": "string"}},
                    "required": ["revoked"],
                    "additionalProperties": False,
                },
            ),
            **_errors(),
        },
        body={
            "type": "object",
            "properties": {"user_id": {"type": "string", "pattern": "\\|", "maxLength": 1024}},
            "required": ["user_id"],
        },
        tags=("sessions",),
    ),
    Operation(
        "GET",
        "/_gateway/health",
        "health",
        "Liveness",
        "The process runs and its event loop answers.",
        {
            200: Answer(
                "alive",
                {
                    "type": "object",
                    "properties": {"status": {"const": "ok"}},
                    "required": ["status"],
                    "additionalProperties": False,
                },
            )
        },
        public=True,
        tags=("operations",),
    ),
    Operation(
        "GET",
        "/_gateway/ready",
        "ready",
        "Readiness",
        "Every dependency (upstream, audit store) answers.",
        {
            200: Answer("ready", _READINESS),
            503: Answer("not ready", _READINESS),
        },
        public=True,
        tags=("operations",),
    ),
    Operation(
        "GET",
        "/_gateway/audit-keys.json",
        "auditKeys",
        "Public keys of the audit digest chain",
        "Ed25519 keys that sign the audit log's digests and retention records (mounted when"
        " a signing or verifier key is configured); `python -m audit verify` checks with them.",
        {
            200: Answer(
                "a JWK set",
                {
                    "type": "object",
                    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                    "required": ["keys"],
                },
                media_type="application/jwk-set+json",
            ),
            404: Answer("no signing or verifier key is configured", _ref("Error")),
        },
        public=True,
        tags=("operations",),
    ),
    Operation(
        "GET",
        "/_gateway/jwks.json",
        "assertionKeys",
        "Public keys of the identity assertion",
        "The upstream verifies X-Gateway-Assertion with these keys.",
        {
            200: Answer(
                "a JWK set",
                {
                    "type": "object",
                    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                    "required": ["keys"],
                },
                media_type="application/jwk-set+json",
            )
        },
        public=True,
        tags=("operations",),
    ),
    Operation(
        "GET",
        OPENAPI_PATH,
        "openapi",
        "This document",
        "For the roles that call these APIs.",
        {200: Answer("the OpenAPI document", {"type": "object"}), **_errors()},
        tags=("operations",),
    ),
)


def _export_csv_answer(document: dict[str, Any]) -> None:
    """The export also answers CSV (format=csv)."""
    ok = document["paths"]["/_gateway/audit/export"]["get"]["responses"]["200"]
    ok["content"]["text/csv"] = {"schema": {"type": "string"}}


def openapi_document(operations: Sequence[Operation] = OPERATIONS) -> dict[str, Any]:
    """The whole document (a fresh dict) for ``operations``."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = op.document()
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Onderwijs & Regio gateway: own JSON APIs",
            "version": API_VERSION,
            "description": "Audit search, export and statistics; incident holds; session "
            "revocation; health. Who may call what is decided by the gateway's policy.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": orjson.loads(orjson.dumps(SCHEMAS)),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-gw_session"},
            },
        },
    }
    if "/_gateway/audit/export" in paths:
        _export_csv_answer(document)
    return document


def openapi_route(operations: Sequence[Operation] = OPERATIONS) -> Route:
    """``GET /_gateway/openapi.json``: the document, rendered once."""
    body = orjson.dumps(openapi_document(operations))

    async def openapi(_request: Request) -> Response:
        return Response(
            body,
            media_type="application/json",
            headers={"cache-control": "no-store"},
        )

    return Route(OPENAPI_PATH, openapi, methods=["GET"])
