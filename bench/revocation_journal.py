"""What the revocation journal costs on the logout path: one append and one fdatasync per
revocation (``gateway/oidc/_revocation_journal.py``), on disk and on tmpfs, and a whole
``revoke_session`` on the audit cluster with and without the journal.

Run: ``.venv/bin/python -m bench.revocation_journal [--opensearch URL] [-n N] [--rounds R]``
(``OPENSEARCH_URL`` is used when set; ``make opensearch`` starts a node). The journal cases
run in alternating rounds against their baseline, the same append without fsync, measured in
the same run; the cluster cases against ``revoke_session`` without a journal (the index write
with ``refresh=true`` that the logout already waits for). Prints µs per revocation (median
of the rounds) and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.oidc import OpenSearchRevocations
from gateway.oidc._revocation_journal import RevocationJournal

N = 2000
ROUNDS = 3
#: The cluster cases' request timeout (a loaded machine's node answers slowly).
CLUSTER_TIMEOUT = 30.0
#: Where "disk" and "tmpfs" journals go: the repository's file system, and /dev/shm.
DISK_DIR = Path(__file__).resolve().parents[1]
TMPFS_DIR = Path("/dev/shm")  # noqa: S108 - a private mkdtemp directory is made in it


def _doc(i: int) -> dict[str, object]:
    return {"kind": "session", "key": f"{i:064x}", "before": 0.0, "until": time.time() + 3600}


def _per_call(call: Callable[[int], None], n: int) -> float:
    for i in range(min(n, 50)):  # warm up
        call(i)
    started = time.perf_counter()
    for i in range(n):
        call(i)
    return (time.perf_counter() - started) / n * 1e6


def _journal_case(base: Path, *, fsync: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    directory = Path(tempfile.mkdtemp(prefix="bench-revocation-journal-", dir=base))
    journal = RevocationJournal(directory=directory / "revocations", fsync=fsync)

    def append(i: int) -> None:
        journal.append(f"session-{i}", _doc(i))

    def done() -> None:
        journal.close()
        shutil.rmtree(directory)

    return append, done


def _rounds(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median µs per call of each case, the cases alternating within every round."""
    found: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            found[name].append(run())
    return {name: statistics.median(values) for name, values in found.items()}


def _print(title: str, results: dict[str, float]) -> None:
    baseline = next(iter(results.values()))
    print(f"\n{title}\n")
    print("| case | µs per revocation | ratio |")
    print("|---|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:,.1f} | {value / baseline:.2f} |")


def _journal_bench(n: int, rounds: int) -> None:
    places = {"disk": DISK_DIR, "tmpfs": TMPFS_DIR}
    cases: dict[str, Callable[[], float]] = {}

    def runner(base: Path, fsync: bool) -> Callable[[], float]:
        def run() -> float:
            append, done = _journal_case(base, fsync=fsync)
            try:
                return _per_call(append, n)
            finally:
                done()

        return run

    cases["append, no fsync, disk (baseline)"] = runner(DISK_DIR, False)
    for place, base in places.items():
        if base.is_dir() and os.access(base, os.W_OK):
            cases[f"append + fdatasync, {place}"] = runner(base, True)
    _print(f"Journal append ({n} revocations x {rounds} rounds)", _rounds(cases, rounds))


def _cluster_bench(url: str, n: int, rounds: int) -> None:
    prefix = f"bench-revj-{secrets.token_hex(4)}-"

    def runner(journal: bool) -> Callable[[], float]:
        def run() -> float:
            directory = Path(tempfile.mkdtemp(prefix="bench-revocation-journal-", dir=DISK_DIR))
            store = OpenSearchRevocations(
                url=url,
                index_prefix=prefix,
                replicas=0,
                timeout=CLUSTER_TIMEOUT,
                start=False,
                journal=RevocationJournal(directory=directory) if journal else None,
            )
            try:
                store.sync()
                until = time.time() + 3600

                def revoke(i: int) -> None:
                    store.revoke_session(secrets.token_urlsafe(16), until=until)

                return _per_call(revoke, n)
            finally:
                store.close()
                shutil.rmtree(directory)

        return run

    cases = {
        "revoke_session, no journal (baseline)": runner(False),
        "revoke_session, journal on disk": runner(True),
    }
    try:
        _print(
            f"Logout's revocation on the audit cluster ({n} x {rounds} rounds)",
            _rounds(cases, rounds),
        )
    finally:
        store = OpenSearchRevocations(
            url=url, index_prefix=prefix, timeout=CLUSTER_TIMEOUT, start=False
        )
        store._client.indices.delete(index=store.index, ignore_unavailable=True)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--opensearch", default=os.environ.get("OPENSEARCH_URL"))
    parser.add_argument("-n", type=int, default=N)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    _journal_bench(args.n, args.rounds)
    if args.opensearch:
        _cluster_bench(args.opensearch, max(args.n // 10, 50), args.rounds)
    else:
        print("\n(no --opensearch/OPENSEARCH_URL: the cluster cases were not run)")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
