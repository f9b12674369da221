"""Audit events for the Onderwijs & Regio gateway and their shipping to OpenSearch.

The request path calls ``sink.emit({...})`` (see ``audit/_sink.py``; the personal-data
access event also has a compact form, :data:`PersonalDataAccess`). The gateway builds one
:class:`AuditPipeline` at start-up (``await start()`` / ``await aclose()`` in its lifespan,
``await ready()`` for health, ``metrics()`` for Prometheus) over a store from
:func:`opensearch_store` or :func:`sqlite_store`, or an :class:`AuditWorker` that runs that
pipeline in a process of its own (what the gateway does: its request path only enqueues).
Tamper evidence: a :class:`DigestWriter` given to the pipeline as ``on_shipped`` signs one
digest per interval with a :class:`Keyring` into the :func:`digest_store_beside` the events;
``python -m audit verify`` checks them, and retention records its changes through a
:class:`RetentionRecorder`; the CLIs sign their own events through a :class:`ChainedStoreSink`.
"""

from audit._access import PersonalDataAccess, personal_data_access_event
from audit._chain import Keyring
from audit._clisink import ChainedStoreSink
from audit._digests import DigestStore, digest_store_beside
from audit._digestwriter import DigestWriter
from audit._export import EXPORT_COLUMNS, SubjectExport, SubjectExporter
from audit._opensearch import OpenSearchStore
from audit._persons import PersonDirectory, PersonMap, PersonMapFile, PlatformId
from audit._pipeline import DEFAULT_FULL_POLICY, AuditPipeline, Metrics
from audit._retention_log import RetentionRecorder
from audit._search import (
    ALL_EVENTS_ROLES,
    AuditSearch,
    Filters,
    Requester,
    backbone_event,
    parse_filters,
    scope_for,
)
from audit._sink import AuditSink, Event, MemorySink, PersonalDataSink
from audit._sqlite import SQLiteStore
from audit._stats import Statistics
from audit._store import COUNT_KEYS, AuditStore, ItemResult, Page, Record, Scope
from audit._stores import opensearch_store, sqlite_store
from audit._worker import AuditWorker, WorkerSpec
from audit.errors import AuditError, AuditUnavailable, BadFilter, SearchRefused
from audit.events import Action, Category, LoginFailure

__all__ = [
    "ALL_EVENTS_ROLES",
    "COUNT_KEYS",
    "DEFAULT_FULL_POLICY",
    "EXPORT_COLUMNS",
    "Action",
    "AuditError",
    "AuditPipeline",
    "AuditSearch",
    "AuditSink",
    "AuditStore",
    "AuditUnavailable",
    "AuditWorker",
    "BadFilter",
    "Category",
    "ChainedStoreSink",
    "DigestStore",
    "DigestWriter",
    "Event",
    "Filters",
    "ItemResult",
    "Keyring",
    "LoginFailure",
    "MemorySink",
    "Metrics",
    "OpenSearchStore",
    "Page",
    "PersonDirectory",
    "PersonMap",
    "PersonMapFile",
    "PersonalDataAccess",
    "PersonalDataSink",
    "PlatformId",
    "Record",
    "Requester",
    "RetentionRecorder",
    "SQLiteStore",
    "Scope",
    "SearchRefused",
    "Statistics",
    "SubjectExport",
    "SubjectExporter",
    "WorkerSpec",
    "backbone_event",
    "digest_store_beside",
    "opensearch_store",
    "parse_filters",
    "personal_data_access_event",
    "scope_for",
    "sqlite_store",
]
