"""The contract every pipeline stage shares, and what stages hand on through the ASGI scope.

A request passes these stages, in this order (``gateway/app.py`` assembles them)::

    https → host → authenticate → authorize → mutate headers → forward

Each stage is a small pure-ASGI class: options in ``__init__`` (validated there, at start-up),
work in ``async __call__(scope, receive, send)``, non-HTTP scopes passed on unchanged. A stage
hands its result on by writing one key of ``scope["gateway"]`` (a :class:`GatewayState`), and
later stages read it through the accessors below, which fail loudly when the stage that should
have set it did not run: a missing stage is a bug, never an anonymous allow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "gateway"

AuthMethod = Literal["anonymous", "session", "bearer"]


class Stage(Protocol):
    """One step of the pipeline; ``name`` appears in logs, metrics and assertion messages."""

    name: ClassVar[str]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: written once by the authenticate stage, never changed afterwards.

    Users are keyed on (issuer, subject); ``tenant`` is the school or supplier organisation
    (a Casbin domain), ``None`` for people who belong to none (platform staff, anonymous).
    """

    issuer: str | None
    subject: str | None
    roles: frozenset[str]
    tenant: str | None
    method: AuthMethod
    session_id: str | None = None

    @property
    def user_id(self) -> str | None:
        """The issuer-qualified subject, as audit events record it."""
        if self.issuer is None or self.subject is None:
            return None
        return f"{self.issuer}|{self.subject}"

    @property
    def is_anonymous(self) -> bool:
        return self.method == "anonymous"


ANONYMOUS = Identity(
    issuer=None, subject=None, roles=frozenset({"anonymous"}), tenant=None, method="anonymous"
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The authorize stage's verdict; ``reason`` is a stable snake_case id for audit and metrics.

    ``rule`` names the policy line that decided (``None`` when no rule matched). It goes to the
    audit event, never to the client.
    """

    allowed: bool
    reason: str
    rule: str | None = None


@dataclass(slots=True)
class GatewayState:
    """Per-request results of the stages, kept under ``scope["gateway"]``.

    Set by: ``request_id``/``client_ip``/``scheme``/``host`` (https and host stages), ``path``
    (the canonical path: the one decided on and the one forwarded), ``identity`` (authenticate),
    ``decision`` (authorize).
    """

    request_id: str
    client_ip: str | None
    scheme: str = "https"
    host: str | None = None
    path: str | None = None
    identity: Identity | None = None
    decision: Decision | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StageMissing(RuntimeError):
    """A stage read a result that an earlier stage should have set: the pipeline is miswired.

    Raised (not asserted: asserts vanish under ``python -O``) and answered with a generic 500.
    """


def state(scope: Scope) -> GatewayState:
    """The request's :class:`GatewayState`; the https stage creates it."""
    found = scope.get(SCOPE_KEY)
    if not isinstance(found, GatewayState):
        raise StageMissing("the https stage must run first (no gateway state)")
    return found


def canonical_path(scope: Scope) -> str:
    path = state(scope).path
    if path is None:
        raise StageMissing("the path stage must run before anything reads the canonical path")
    return path


def identity(scope: Scope) -> Identity:
    found = state(scope).identity
    if found is None:
        raise StageMissing("the authenticate stage must run before anything reads the identity")
    return found


def decision(scope: Scope) -> Decision:
    found = state(scope).decision
    if found is None:
        raise StageMissing("the authorize stage must run before anything reads the decision")
    return found
