"""The authorize stage's view of the policy engine."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from gateway.types import Decision


class Authorizer(Protocol):
    """Decides one request from the identity's roles and tenant, the method and the path.

    ``path`` is the gateway's canonical path (decoded once, dot segments resolved, no query
    string). ``tenant`` is ``None`` for identities without one. Deny by default: anything no
    rule allows is ``Decision(allowed=False, reason="no_matching_rule")``; an explicit deny
    wins over any allow (``reason="explicit_deny"``, ``rule`` naming the deny line).
    Must be cheap and must not raise for any input.
    """

    def decide(
        self, *, roles: Collection[str], tenant: str | None, method: str, path: str
    ) -> Decision: ...
