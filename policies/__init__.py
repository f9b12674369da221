"""Casbin model and policies for the platform's roles and tenants, and their review tools.

The gateway's authorize stage uses :class:`PolicyStore` (an :class:`Authorizer`)::

    store = PolicyStore.from_files(sink=audit_sink)      # the shipped files by default
    decision = store.decide(roles=identity.roles, tenant=identity.tenant,
                            method=method, path=canonical_path)
    route = store.classify(method, canonical_path)       # RouteInfo | None, for audit events
    store.reload()                                       # on SIGHUP / file change (in a thread)
    await PolicyWatcher(store).run(stop_event)           # or let this poll the files

Decision reasons are listed in ``policies/_decision.py``; ``python -m policies --help`` shows
the review and check commands.
"""

from policies._evaluator import FastEvaluator
from policies._resources import CATEGORIES, RouteInfo
from policies._review import NO, diff_in_words, lint, matrix, roles_of
from policies._source import PolicySource, source_from_text
from policies._store import PolicyStore
from policies._types import Authorizer
from policies._watch import PolicyWatcher
from policies.errors import PolicyError

__all__ = [
    "CATEGORIES",
    "NO",
    "Authorizer",
    "FastEvaluator",
    "PolicyError",
    "PolicySource",
    "PolicyStore",
    "PolicyWatcher",
    "RouteInfo",
    "diff_in_words",
    "lint",
    "matrix",
    "roles_of",
    "source_from_text",
]
