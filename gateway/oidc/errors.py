"""Errors of OIDC login, sessions and bearer tokens.

    OIDCError                     base; ``reason`` is the stable snake_case audit reason
    ├── LoginFailed               a login attempt is refused (the reason says why)
    │   ├── StateMismatch         unknown, reused, expired or foreign ``state``
    │   ├── IdPError              the provider answered with an error or could not be reached
    │   ├── InvalidToken          signature, issuer, audience, nonce, algorithm... (``detail``)
    │   ├── TokenExpired          ``exp`` passed (or ``iat``/``nbf`` in the future)
    │   ├── UnknownIssuer         no such configured issuer
    │   ├── NoRoleMapping         the claims map to no role and no grant applies
    │   └── SessionTooLarge       the session would not fit in a cookie browsers keep
    ├── ProviderUnavailable       discovery or JWKS could not be fetched
    ├── StateUnavailable          the shared store of login states and counters is unreachable
    ├── RevocationsUnavailable    the revocation record cannot vouch for a session (fail closed)
    │   └── RevocationNotDurable  a revocation is in this process's memory only: neither the
    │                             local journal nor the cluster took it
    ├── RevocationJournalError    the local revocation journal cannot be written or read
    │   └── RevocationJournalLocked  another process owns the journal's directory
    └── ConfigError               a claims or grants file is invalid (raised at start-up/reload)

    LoginUnavailable (503)        a GatewayError: the page shown when login cannot work now
                                  (the provider or the shared state store is unreachable)
    SessionCheckUnavailable (503) a GatewayError: a session cookie cannot be checked against
                                  the revocation record (its store has been away too long)

``reason`` values are those of DESIGN.md §3: ``state_mismatch``, ``idp_error``,
``invalid_token``, ``expired``, ``unknown_issuer``, ``no_role_mapping``, ``throttled``.
"""

from __future__ import annotations

from typing import ClassVar

from gateway.errors import GatewayError


class OIDCError(Exception):
    """Base of this package's errors."""

    reason: ClassVar[str] = "oidc_error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.reason)
        #: What exactly failed, for the audit event's ``error.message`` (never a token).
        self.detail = detail or self.reason


class LoginFailed(OIDCError):
    """A login attempt is refused."""

    reason = "login_failure"


class StateMismatch(LoginFailed):
    """The callback's ``state`` is unknown, used, expired or not this browser's."""

    reason = "state_mismatch"


class IdPError(LoginFailed):
    """The identity provider returned an error or failed."""

    reason = "idp_error"


class InvalidToken(LoginFailed):
    """A token failed validation."""

    reason = "invalid_token"


class TokenExpired(InvalidToken):
    """A token is past ``exp`` (or not yet valid)."""

    reason = "expired"


class UnknownIssuer(LoginFailed):
    """No configured issuer by that name or ``iss``."""

    reason = "unknown_issuer"


class NoRoleMapping(LoginFailed):
    """The identity maps to no role."""

    reason = "no_role_mapping"


class SessionTooLarge(LoginFailed):
    """The session cookie would exceed what browsers keep; refused rather than dropped."""

    reason = "session_too_large"


class ProviderUnavailable(IdPError):
    """Discovery or JWKS could not be fetched or parsed."""

    reason = "idp_error"


class StateUnavailable(OIDCError):
    """The shared store of single-use login states and throttle counters cannot be reached;
    whatever needed it is refused (fail closed)."""

    reason = "state_store_unavailable"


class RevocationsUnavailable(OIDCError):
    """The revocation record's store cannot be reached: a write is kept and retried, and a
    session that is not known revoked is refused once the local copy is too old."""

    reason = "revocation_store_unavailable"


class RevocationNotDurable(RevocationsUnavailable):
    """A revocation reached neither the local journal nor the cluster: it holds in this
    process's memory only and would be lost if the process died (fail closed: reported)."""

    reason = "revocation_not_durable"


class RevocationJournalError(OIDCError):
    """The local revocation journal cannot be written (disk full, I/O error) or opened."""

    reason = "revocation_journal_unwritable"


class RevocationJournalLocked(RevocationJournalError):
    """Another process owns this journal directory (each process needs its own)."""

    reason = "revocation_journal_locked"


class LoginUnavailable(GatewayError):
    """Login cannot work right now: the identity provider or the shared state store is away."""

    code = "login_unavailable"
    status_code = 503
    title_nl = "Inloggen niet beschikbaar"
    title_en = "Login unavailable"
    text_nl = "De inlogdienst is op dit moment niet beschikbaar. Probeer het later opnieuw."
    text_en = "The login service is unavailable right now. Please try again later."


class ConfigError(OIDCError, ValueError):
    """A claims or grants file is invalid."""

    reason = "config_error"


class SessionCheckUnavailable(GatewayError):
    """A session cannot be checked against the revocation record right now (503)."""

    code = "session_check_unavailable"
    status_code = 503
    title_nl = "Sessie kan niet worden gecontroleerd"
    title_en = "Session cannot be checked"
    text_nl = "Uw sessie kan op dit moment niet worden gecontroleerd. Probeer het later opnieuw."
    text_en = "Your session cannot be checked right now. Please try again later."
