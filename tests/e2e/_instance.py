"""One whole gateway deployment (``tests.security._harness.deployed``) in a process of its own,
so a test can kill it with SIGKILL as a crash, an OOM kill or a deploy would.

``python -m tests.e2e._instance STATE_DIR ENVIRON_JSON`` prints one JSON line with the
HTTPS port and the identity provider's URL once it serves, then runs until it is killed or
its standard input closes (the test process ended: no instance is left behind).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.security._harness import deployed


def _exit_when_parent_goes() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


def main(state: str, environ_json: str) -> None:
    environ: dict[str, str] = json.loads(environ_json)
    with deployed(Path(state), environ) as deployment:
        ready = {"https_port": deployment.https_port, "idp_url": deployment.idp_url}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        _exit_when_parent_goes()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
