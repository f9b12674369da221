"""The command-line tools' audit sink: each event stored at once, then signed into a chain.

The CLIs (``python -m audit search|export|stats|verify``, ``python -m retention run|holds``)
run apart from the gateway and its shipper. :class:`ChainedStoreSink` writes each event
through the same processor chain straight to the store before ``emit`` returns (a failure
raises: the command fails instead of running unrecorded) and then, with a signing key, hands
the stored record to a :class:`audit.DigestWriter` over a chain directory of the CLIs' own::

    emit ─▶ processor chain ─▶ store.write ─▶ flock(DIR/lock) ─▶ DigestWriter(DIR)
                                                                   writer([record])
                                                                   writer.close() ─▶ digest

The writer is opened, fed and closed for each event, under an exclusive ``flock`` of
``DIR/lock``: its close signs a shutdown digest (``chain.closed``, so an idle CLI chain is
never "stale") listing the event, and concurrent CLI runs on one machine take turns on the one
chain instead of forking it (each reopens the state the previous one left). A digest that
cannot reach the store stays in the chain's spool and is shipped by the next CLI run. The
chain's instance id is ``HOST-cli-XXXXXXXX`` (:func:`cli_instance_id`, kept in ``DIR``), so
``verify`` reports CLI events per interval like a shipper's, and one deleted is
``events_missing``.

Why not a whole :class:`audit.AuditPipeline` per CLI run: its contract is "enqueue now, store
soon", with two threads and a close timeout after which an event stays spooled until the next
run, while the CLI's contract is "stored before the command returns". The remaining window: a
process killed between storing the event and the writer's journal append leaves that one
event in no digest (verify then cannot notice its deletion; it reports nothing false).

Without a keyring the sink only stores (the gateway does not sign without a key either), and
marks each event so: ``labels.audit_signing = "off"`` (:data:`audit._inventory.UNSIGNED_LABEL`).
``verify`` then says such a backbone event is unsigned because its writer had no key, instead
of calling it injected (``audit/_unsigned.py``); a scheduled ``verify`` run without a key
would otherwise make the next run fail on its own event.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from audit._chain import Keyring
from audit._digests import DigestStore, digest_store_beside
from audit._digestwriter import DEFAULT_DIGEST_INTERVAL, STATE_FILE, DigestWriter
from audit._inventory import UNSIGNED_LABEL
from audit._sink import Event
from audit._store import AuditStore, Record
from audit.errors import StoreError
from audit.processors import Pseudonymise, audit_processors, render_json, run_chain

__all__ = ["LOCK_FILE", "ChainedStoreSink", "cli_instance_id"]

LOCK_FILE: Final = "lock"


def cli_instance_id(prefix: str | None = None) -> str:
    """A fresh chain instance id for a CLI chain directory: ``PREFIX-cli-XXXXXXXX`` (the
    host name by default). The random part keeps two machines' CLI chains apart even under
    one configured prefix: their records would otherwise share ids and one would be lost."""
    name = prefix or socket.gethostname()
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return f"{name or 'host'}-cli-{secrets.token_hex(4)}"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while another CLI run signs its event
        yield
    finally:
        os.close(fd)  # releases the lock


class ChainedStoreSink:
    """``emit`` stores the event and, with ``keyring``, signs it into the chain in
    ``directory`` (see the module docstring). Blocking; raises :class:`StoreError`."""

    def __init__(
        self,
        *,
        store: AuditStore,
        keyring: Keyring | None = None,
        directory: str | Path | None = None,
        digests: DigestStore | None = None,
        instance_prefix: str | None = None,
        interval: float = DEFAULT_DIGEST_INTERVAL,
        pseudonymise: Pseudonymise | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keyring is not None and not keyring.can_sign:
            raise ValueError("signing CLI events needs a private signing key")
        if keyring is not None and directory is None:
            raise ValueError("signing CLI events needs a chain directory")
        self._store = store
        self._keyring = keyring
        self._directory = Path(directory) if directory is not None else None
        self._digests = digests
        self._prefix = instance_prefix
        self._interval = interval
        self._clock = clock
        self._chain = audit_processors(pseudonymise=pseudonymise, render=False)

    @property
    def signing(self) -> bool:
        """Whether events are signed into a chain (a key and a directory are configured)."""
        return self._keyring is not None

    def emit(self, event: Event) -> None:
        if self._keyring is None:
            labels = event.get("labels")
            marked = {**(labels if isinstance(labels, dict) else {}), UNSIGNED_LABEL: "off"}
            event = {**event, "labels": marked}
        doc = run_chain(self._chain, event)
        record = Record(str(doc["event.id"]), str(doc["@timestamp"]), render_json(None, "", doc))
        [result] = self._store.write([record])
        if result.status not in ("stored", "duplicate"):
            raise StoreError(f"audit event not stored ({result.status}): {result.reason}")
        if self._keyring is not None:
            self._sign(record, self._keyring)

    def _sign(self, record: Record, keyring: Keyring) -> None:
        directory = self._directory
        assert directory is not None  # noqa: S101 - checked in __init__
        if self._digests is None:
            self._digests = digest_store_beside(self._store)
        with _locked(directory):
            fresh = not (directory / STATE_FILE).exists()  # else the state names the chain
            instance = cli_instance_id(self._prefix) if fresh else None
            writer = DigestWriter(
                directory=directory,
                keyring=keyring,
                store=self._digests,
                instance=instance,
                interval=self._interval,
                clock=self._clock,
            )
            writer([record])
            writer.close()
