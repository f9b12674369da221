"""Errors the gateway answers with, and how each is shown to the client.

    GatewayError                 base: a request the gateway answers itself
    ├── BadRequest (400)         malformed or ambiguous request: bad path, unknown host
    ├── AuthenticationRequired (401)
    ├── AccessDenied (403)
    ├── NotFound (404)
    ├── TooManyRequests (429)    carries ``retry_after`` seconds
    ├── HeadersTooLarge (431)    the request's header block is over the configured limits
    ├── InternalError (500)      never with detail; the cause is logged, not shown
    ├── UpstreamUnavailable (502)
    ├── ServiceUnavailable (503) e.g. the audit log cannot record and must not drop
    └── UpstreamTimeout (504)

``code`` is a stable snake_case id (for JSON bodies, audit ``event.reason`` and metrics);
``title_nl``/``title_en`` and ``text_nl``/``text_en`` are what people read. Messages never carry
internal details: paths of files, upstream addresses, exception text, policy lines.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """A request the gateway answers itself, with ``status_code`` and a generic page."""

    code: ClassVar[str] = "gateway_error"
    status_code: ClassVar[int] = 500
    title_nl: ClassVar[str] = "Er ging iets mis"
    title_en: ClassVar[str] = "Something went wrong"
    text_nl: ClassVar[str] = "Probeer het later opnieuw."
    text_en: ClassVar[str] = "Please try again later."

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or self.code)
        #: A stable snake_case reason for the audit event (more precise than ``code``).
        self.reason = reason or self.code


class BadRequest(GatewayError):
    """The request is malformed or ambiguous and was not forwarded."""

    code = "bad_request"
    status_code = 400
    title_nl = "Ongeldig verzoek"
    title_en = "Bad request"
    text_nl = "Dit verzoek kan niet worden verwerkt."
    text_en = "This request cannot be processed."


class AuthenticationRequired(GatewayError):
    """No valid session or token; API clients get this, browsers are sent to log in."""

    code = "authentication_required"
    status_code = 401
    title_nl = "Inloggen vereist"
    title_en = "Login required"
    text_nl = "Log in om verder te gaan."
    text_en = "Please log in to continue."


class AccessDenied(GatewayError):
    """The policy does not allow this request."""

    code = "access_denied"
    status_code = 403
    title_nl = "Geen toegang"
    title_en = "Access denied"
    text_nl = "U heeft geen toegang tot deze pagina."
    text_en = "You do not have access to this page."


class NotFound(GatewayError):
    """No such page on the gateway."""

    code = "not_found"
    status_code = 404
    title_nl = "Niet gevonden"
    title_en = "Not found"
    text_nl = "Deze pagina bestaat niet."
    text_en = "This page does not exist."


class TooManyRequests(GatewayError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    code = "too_many_requests"
    status_code = 429
    title_nl = "Te veel pogingen"
    title_en = "Too many attempts"
    text_nl = "Wacht even en probeer het daarna opnieuw."
    text_en = "Please wait a moment and try again."

    def __init__(self, reason: str | None = None, *, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class HeadersTooLarge(GatewayError):
    """The request's headers are too many or too large (RFC 6585); nothing was forwarded."""

    code = "request_header_fields_too_large"
    status_code = 431
    title_nl = "Verzoek te groot"
    title_en = "Request headers too large"
    text_nl = "De kopregels van dit verzoek zijn te groot. Verwijder cookies en probeer opnieuw."
    text_en = "This request's headers are too large. Clear cookies and try again."


class InternalError(GatewayError):
    """An unexpected failure inside the gateway."""

    code = "internal_error"
    status_code = 500


class UpstreamUnavailable(GatewayError):
    """The platform behind the gateway could not be reached or answered badly."""

    code = "upstream_unavailable"
    status_code = 502
    title_nl = "Dienst niet bereikbaar"
    title_en = "Service unreachable"
    text_nl = "Het platform is op dit moment niet bereikbaar. Probeer het later opnieuw."
    text_en = "The platform cannot be reached right now. Please try again later."


class ServiceUnavailable(GatewayError):
    """The gateway cannot serve this request safely right now."""

    code = "service_unavailable"
    status_code = 503
    title_nl = "Tijdelijk niet beschikbaar"
    title_en = "Temporarily unavailable"


class UpstreamTimeout(GatewayError):
    """The platform behind the gateway did not answer in time."""

    code = "upstream_timeout"
    status_code = 504
    title_nl = "Time-out"
    title_en = "Timeout"
    text_nl = "Het platform reageerde niet op tijd. Probeer het later opnieuw."
    text_en = "The platform did not answer in time. Please try again later."
