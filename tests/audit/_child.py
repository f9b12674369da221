"""A shipper in its own process, for the SIGKILL test: emit, report progress, ship, exit.

    python -m tests.audit._child URL PREFIX SPOOL_DIR COUNT

Prints one JSON line of metrics every few milliseconds; exits once everything is stored.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import orjson

from audit import AuditPipeline, OpenSearchStore


def main() -> int:
    url, prefix, spool_dir, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    store = OpenSearchStore(url=url, index_prefix=prefix, replicas=0)
    pipeline = AuditPipeline(
        store=store, spool_dir=spool_dir, batch_size=10, flush_interval=0.05, fsync="never"
    )
    pipeline.open()
    for seq in range(count):
        pipeline.emit({"event.action": "access_denied", "labels": {"seq": seq}})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        print(orjson.dumps(asdict(pipeline.metrics())).decode(), flush=True)
        if pipeline.wait_idle(0.005):
            break
    pipeline.close()
    print(orjson.dumps(asdict(pipeline.metrics())).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
