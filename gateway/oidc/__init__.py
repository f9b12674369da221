"""OIDC login, encrypted cookie sessions and bearer tokens for the authenticate stage."""

from gateway.oidc._claims import ClaimMapping, Grants, load_claims, load_grants
from gateway.oidc._revocation import MemoryRevocations, RevocationStore, SQLiteRevocations
from gateway.oidc._session import Sealer, Session, SessionCodec, decode_key, new_key
from gateway.oidc._sessions_authn import SessionAuthenticator, SessionCookieStage

__all__ = [
    "ClaimMapping",
    "Grants",
    "MemoryRevocations",
    "RevocationStore",
    "SQLiteRevocations",
    "Sealer",
    "Session",
    "SessionAuthenticator",
    "SessionCodec",
    "SessionCookieStage",
    "decode_key",
    "load_claims",
    "load_grants",
    "new_key",
]
