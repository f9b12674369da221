"""Errors of the retention package.

RetentionError              base class
├── InvalidRule             a retention rule in the configuration is malformed
├── InvalidHold             a hold asked for is malformed (400)
├── HoldNotFound            no hold has that id (404)
├── HoldAlreadyReleased     the hold was released before; a hold is released once (409)
├── RunLocked               another retention run holds the run lock (its lease is live)
└── LockLost                our lease was lost mid-run (another run took the lock over)
"""

from __future__ import annotations


class RetentionError(Exception):
    """Something went wrong in retention or holds."""

    code = "retention_error"
    status_code = 500


class InvalidRule(RetentionError, ValueError):
    """A retention rule is malformed (unknown category, bad period, deletion before minimising)."""

    code = "invalid_retention_rule"
    status_code = 500


class InvalidHold(RetentionError, ValueError):
    """A hold is malformed: missing incident or reason, no scope, bad address or time."""

    code = "invalid_hold"
    status_code = 400


class HoldNotFound(RetentionError):
    """No hold with that id exists."""

    code = "hold_not_found"
    status_code = 404


class HoldAlreadyReleased(RetentionError):
    """The hold is already released; holds are released once and never deleted."""

    code = "hold_already_released"
    status_code = 409


class RunLocked(RetentionError):
    """Another run holds the run lock; two runs never overlap."""

    code = "run_locked"
    status_code = 409


class LockLost(RetentionError):
    """The lease of the running job expired or was taken over: it stops before its next step."""

    code = "lock_lost"
    status_code = 500
