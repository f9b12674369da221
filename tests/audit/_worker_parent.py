"""A gateway stand-in for the worker tests: emit, wait until the pipe has it all, die hard.

    python -m tests.audit._worker_parent DB SPOOL_DIR COUNT

Prints the worker's pid, then kills itself with SIGKILL once its queue is written to the pipe.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from audit._worker import AuditWorker, WorkerSpec


def main() -> int:
    db, spool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    worker = AuditWorker(
        spec=WorkerSpec("tests.audit._worker_factory:sqlite_pipeline", (db, spool))
    )
    worker.open()
    for seq in range(count):
        worker.emit({"event.action": "access_denied", "labels": {"seq": seq}})
    while worker.metrics().queue_depth > 0 and worker._queue:
        time.sleep(0.005)
    time.sleep(0.1)  # the flusher's last write has returned
    process = worker._process
    assert process is not None
    print(process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    return 1


if __name__ == "__main__":
    sys.exit(main())
