"""The authorize stage: one policy decision per request, deny by default.

The decision comes from an :class:`~policies.Authorizer` given the identity's roles and tenant,
the method and the canonical path (never the query string). It is recorded in the gateway
state. A denial is an ``access_denied`` audit event carrying the decision's stable reason and
the rule that decided; the client sees only a generic page and the request id. An anonymous
caller who is denied gets 401 (with ``WWW-Authenticate``), or is sent to log in when it is a
browser and a login page is configured. Allowed requests to routes that expose other people's
personal data are recorded as ``personal_data_access`` events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode

from audit import AuditSink
from gateway._audit import emit_personal_data, request_event
from gateway.errors import AccessDenied, AuthenticationRequired
from gateway.pages import send_error, wants_json
from gateway.paths import encode_path
from gateway.types import ASGIApp, Decision, Receive, Scope, Send, StageMissing, state

#: Given (method, canonical path): the audit fields describing what the route exposes when it
#: exposes personal data of someone other than the caller (``audit.data_categories``...),
#: else None.
PersonalDataClassifier = Callable[[str, str], Mapping[str, Any] | None]

if TYPE_CHECKING:
    from policies import Authorizer

LOGIN_NEXT_PARAM = "next"
logger = logging.getLogger(__name__)


class AuthorizeStage:
    """Lets a request through only when the policy allows it."""

    name: ClassVar[str] = "authorize"

    def __init__(
        self,
        app: ASGIApp,
        *,
        authorizer: Authorizer,
        sink: AuditSink,
        login_path: str | None = None,
        personal_data: PersonalDataClassifier | None = None,
    ) -> None:
        self.app = app
        self._authorizer = authorizer
        self._sink = sink
        self._login_path = login_path
        self._personal_data = personal_data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        gateway = state(scope)
        who = gateway.identity
        path = gateway.path
        if who is None or path is None:
            # A miswired pipeline must never allow: raise, and the error stage answers 500.
            raise StageMissing("authenticate and path stages must run before authorize")
        method = "GET" if scope["type"] == "websocket" else str(scope["method"])
        try:
            verdict = self._authorizer.decide(
                roles=who.roles, tenant=who.tenant, method=method, path=path
            )
        except Exception:  # an evaluator failure is a denial, never an allow
            logger.exception("policy evaluation failed; denying")
            verdict = Decision(allowed=False, reason="policy_error")
        gateway.decision = verdict
        if verdict.allowed:
            self._record_personal_data_access(scope, method, path)
            await self.app(scope, receive, send)
            return
        await self._deny(scope, send, verdict)

    def _record_personal_data_access(self, scope: Scope, method: str, path: str) -> None:
        if self._personal_data is None:
            return
        exposed = self._personal_data(method, path)
        if exposed:
            emit_personal_data(self._sink, scope, exposed)

    async def _deny(self, scope: Scope, send: Send, verdict: Decision) -> None:
        gateway = state(scope)
        anonymous = gateway.identity is not None and gateway.identity.is_anonymous
        status = 401 if anonymous else 403
        self._sink.emit(
            request_event(
                scope,
                action="access_denied",
                category=["web"],
                event_type=["denied"],
                outcome="failure",
                reason=verdict.reason,
                **{
                    "http.response.status_code": status,
                    "rule.name": verdict.rule or verdict.reason,
                },
            )
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if not anonymous:
            await send_error(scope, send, AccessDenied(verdict.reason), gateway.request_id)
            return
        if self._login_path is not None and not wants_json(scope) and scope["method"] == "GET":
            await self._send_to_login(scope, send)
            return
        await send_error(
            scope,
            send,
            AuthenticationRequired(verdict.reason),
            gateway.request_id,
            extra_headers=((b"www-authenticate", b'Bearer realm="gateway"'),),
        )

    async def _send_to_login(self, scope: Scope, send: Send) -> None:
        gateway = state(scope)
        target = encode_path(gateway.path or "/")
        query = scope.get("query_string", b"")
        if query:
            target += "?" + query.decode("latin-1")
        location = f"{self._login_path}?{urlencode({LOGIN_NEXT_PARAM: target})}"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("ascii", "replace")),
                    (b"content-length", b"0"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
