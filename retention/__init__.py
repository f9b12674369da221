"""Retention of audit events: pruning and minimisation, never past an incident hold.

This package imports nothing from ``gateway`` at import time (the gateway's settings validate
``[retention]`` with :func:`parse_rules`); the holds API lives in ``retention.api``.
"""

from retention._holds import hold_from_request
from retention._rules import DEFAULT_RULES, RetentionRule, inventory, parse_rules, rules_with
from retention._service import Holds
from retention.errors import (
    HoldAlreadyReleased,
    HoldNotFound,
    InvalidHold,
    InvalidRule,
    LockLost,
    RetentionError,
    RunLocked,
)

__all__ = [
    "DEFAULT_RULES",
    "HoldAlreadyReleased",
    "HoldNotFound",
    "Holds",
    "InvalidHold",
    "InvalidRule",
    "LockLost",
    "RetentionError",
    "RetentionRule",
    "RunLocked",
    "hold_from_request",
    "inventory",
    "parse_rules",
    "rules_with",
]
