"""Errors of the audit package.

AuditError                 base class
└── AuditUnavailable       an event could not be recorded and its category's spool policy
                           is ``block``: the request that produced it must be refused (503)
"""

from __future__ import annotations


class AuditError(Exception):
    """Something went wrong recording an audit event."""

    code = "audit_error"
    status_code = 500


class AuditUnavailable(AuditError):
    """The event cannot be recorded now and must not be dropped: fail closed."""

    code = "audit_unavailable"
    status_code = 503
