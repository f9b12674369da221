"""Errors of the audit package.

AuditError                 base class
├── AuditUnavailable       an event could not be recorded and its category's spool policy
│                          is ``block``: the request that produced it must be refused (503)
├── SpoolFull              the spool has no room (byte bound reached or the disk is full)
├── SpoolLocked            another pipeline (process) already uses this spool directory
├── BadFilter              an audit search/export/statistics request is malformed (400);
│   │                      also a ValueError
│   └── PointInTimeGone    the cursor's point in time (OpenSearch) expired or was closed
├── SearchRefused          the requester may not search, or not that scope (403)
├── PersonMapInvalid       the platform's person map (for exports) is unreadable or
│                          ambiguous: exports stop rather than miss reads (503)
└── StoreError             the audit store failed
    └── StoreUnavailable   the store cannot be reached or is overloaded (connection error,
                           timeout, 429, 5xx): retry later, nothing was rejected
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


class SpoolFull(AuditError):
    """The spool cannot take the record: its byte bound is reached or the disk is full."""

    code = "audit_spool_full"
    status_code = 503


class SpoolLocked(AuditError):
    """Each gateway process needs its own spool directory; this one is taken."""

    code = "audit_spool_locked"


class BadFilter(AuditError, ValueError):
    """A filter of an audit search is malformed; the message names the parameter."""

    code = "bad_filter"
    status_code = 400


class PointInTimeGone(BadFilter):
    """The point in time a cursor pages through is gone: search again from the first page."""

    code = "cursor_expired"


class SearchRefused(AuditError):
    """The requester may not search, or not what they asked for."""

    code = "search_refused"
    status_code = 403


class PersonMapInvalid(AuditError):
    """The person map cannot be read, or gives one platform id to two people."""

    code = "person_map_invalid"
    status_code = 503


class StoreError(AuditError):
    """The audit store failed to do what was asked."""

    code = "audit_store_error"


class StoreUnavailable(StoreError):
    """The store is unreachable or overloaded; the whole request may be retried."""

    code = "audit_store_unavailable"
    status_code = 503
