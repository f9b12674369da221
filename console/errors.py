"""Errors of the security console, and how each is shown.

    ConsoleError                  base: a request the console refuses, rendered as a page
    ├── BadForm (400)             a form or query field is malformed; the page names it
    ├── CsrfRejected (403)        a state-changing form without the session's token
    ├── NotPermitted (403)        the service refused the caller (a second check after policy)
    ├── NotFound (404)            no such event or hold (within the caller's reach)
    ├── Conflict (409)            e.g. a hold released twice
    └── StoreUnavailable (503)    the audit or hold store cannot be reached

``code`` is a stable snake_case id for the audit event; ``message`` (when given) is shown to
the user and never carries internal detail (paths, exception text of a library).
"""

from __future__ import annotations

from typing import ClassVar


class ConsoleError(Exception):
    """A request the console answers with an error page."""

    code: ClassVar[str] = "console_error"
    status_code: ClassVar[int] = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message


class BadForm(ConsoleError):
    """A field is malformed; ``message`` names it."""

    code = "bad_form"
    status_code = 400


class CsrfRejected(ConsoleError):
    """The form's CSRF token is missing, wrong, for another session, or cross-site."""

    code = "csrf_rejected"
    status_code = 403


class NotPermitted(ConsoleError):
    """The service behind the page refused the caller."""

    code = "not_permitted"
    status_code = 403


class NotFound(ConsoleError):
    """No such event or hold within the caller's reach."""

    code = "not_found"
    status_code = 404


class Conflict(ConsoleError):
    """The state changed in the meantime (a hold already released)."""

    code = "conflict"
    status_code = 409


class StoreUnavailable(ConsoleError):
    """The audit or hold store cannot be reached; try again later."""

    code = "store_unavailable"
    status_code = 503


__all__ = [
    "BadForm",
    "Conflict",
    "ConsoleError",
    "CsrfRejected",
    "NotFound",
    "NotPermitted",
    "StoreUnavailable",
]
