"""Audit events for the Onderwijs & Regio gateway and their shipping to OpenSearch."""

from audit._sink import AuditSink, Event, MemorySink
from audit.errors import AuditError, AuditUnavailable

__all__ = ["AuditError", "AuditSink", "AuditUnavailable", "Event", "MemorySink"]
