"""OIDC login, encrypted cookie sessions and bearer tokens for the authenticate stage.

Build everything with :class:`OIDC` (see ``_component.py`` for how the gateway wires it).
"""

from gateway.oidc._bearer import BearerAuthenticator, BearerThrottleStage
from gateway.oidc._claims import ClaimMapping, Grants, load_claims, load_grants
from gateway.oidc._component import OIDC, revocation_store, shared_state
from gateway.oidc._login import (
    BACKCHANNEL_PATH,
    CALLBACK_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    REVOKE_PATH,
    Login,
)
from gateway.oidc._provider import Metadata, Provider
from gateway.oidc._redirects import safe_next
from gateway.oidc._revocation import MemoryRevocations, RevocationStore, SQLiteRevocations
from gateway.oidc._revocation_opensearch import OpenSearchRevocations
from gateway.oidc._session import Sealer, Session, SessionCodec, decode_key, new_key
from gateway.oidc._sessions_authn import SessionAuthenticator, SessionCookieStage
from gateway.oidc._shared import (
    Block,
    MemoryState,
    OpenSearchState,
    SharedState,
    SQLiteState,
)
from gateway.oidc._throttle import Throttle, ip_key, subject_key
from gateway.oidc._tokens import token_hash

__all__ = [
    "BACKCHANNEL_PATH",
    "CALLBACK_PATH",
    "LOGIN_PATH",
    "LOGOUT_PATH",
    "OIDC",
    "REVOKE_PATH",
    "BearerAuthenticator",
    "BearerThrottleStage",
    "Block",
    "ClaimMapping",
    "Grants",
    "Login",
    "MemoryRevocations",
    "MemoryState",
    "Metadata",
    "OpenSearchRevocations",
    "OpenSearchState",
    "Provider",
    "RevocationStore",
    "SQLiteRevocations",
    "SQLiteState",
    "Sealer",
    "Session",
    "SessionAuthenticator",
    "SessionCodec",
    "SessionCookieStage",
    "SharedState",
    "Throttle",
    "decode_key",
    "ip_key",
    "load_claims",
    "load_grants",
    "new_key",
    "revocation_store",
    "safe_next",
    "shared_state",
    "subject_key",
    "token_hash",
]
