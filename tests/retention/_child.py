"""A retention run in its own process that kills itself mid-way, for the interrupted-run test.

    python -m tests.retention._child sqlite PATH NOW KILL_AFTER
    python -m tests.retention._child opensearch URL,PREFIX NOW KILL_AFTER

Runs the default rules at NOW and sends itself SIGKILL right after its KILL_AFTER-th step:
no clean-up, no release of the lock, no report. Prints each step before it dies.
"""

from __future__ import annotations

import os
import signal
import sys

from audit import AuditStore, MemorySink, OpenSearchStore, SQLiteStore
from audit.events import parse_timestamp
from retention import parse_rules
from retention._holdstore import HoldStore, OpenSearchHoldStore, SQLiteHoldStore
from retention._run import RetentionJob, Step
from retention._runstore import OpenSearchRunStore, RunStore, SQLiteRunStore


def main() -> int:
    kind, where, now, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    events: AuditStore
    holds: HoldStore
    runs: RunStore
    if kind == "sqlite":
        events, holds, runs = (
            SQLiteStore(path=where),
            SQLiteHoldStore(path=where),
            SQLiteRunStore(path=where),
        )
    else:
        url, prefix = where.split(",")
        events = OpenSearchStore(url=url, index_prefix=prefix, replicas=0)
        holds = OpenSearchHoldStore(url=url, index_prefix=prefix, replicas=0)
        runs = OpenSearchRunStore(url=url, index_prefix=prefix, replicas=0)
    steps = 0

    def after_step(step: Step, changed: int) -> None:
        nonlocal steps
        steps += 1
        print(f"{step.action} {step.index} {changed}", flush=True)
        if steps == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    job = RetentionJob(
        events=events,
        holds=holds,
        rules=parse_rules([]),
        sink=MemorySink(),
        runs=runs,
        owner="child",
        after_step=after_step,
    )
    job.run(now=parse_timestamp(now))
    return 0


if __name__ == "__main__":
    sys.exit(main())
