"""gateway/oidc/_revocation_journal.py: the fsync'd local journal of revocations the audit
cluster has not taken yet (append, replay, damaged lines, compaction, lock, full disk)."""

from __future__ import annotations

import logging
import os
import resource
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.oidc._revocation_journal import (
    JOURNAL_FILE,
    RevocationJournal,
    adopt_orphans,
    encode,
)
from gateway.oidc.errors import RevocationJournalError, RevocationJournalLocked

NOBODY = 65534


def _doc(key: str, until: float = 2e9) -> dict[str, Any]:
    return {"kind": "session", "key": key, "before": 0.0, "until": until}


def _in_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child (process-wide limits and users stay there); its code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class TestAppendAndReplay:
    def test_entries_found_at_next_open(self, tmp_path: Path) -> None:
        """What was appended is read back, in order, by the next process's journal."""
        journal = RevocationJournal(directory=tmp_path / "rev")
        journal.append("session-a", _doc("a"))
        journal.append("session-b", _doc("b"))
        journal.close()
        again = RevocationJournal(directory=tmp_path / "rev")
        assert again.entries == [("session-a", _doc("a")), ("session-b", _doc("b"))]
        assert again.damaged == 0
        again.close()

    def test_private_permissions(self, tmp_path: Path) -> None:
        """The directory is 0700 and the journal and lock files 0600, as the audit spool's."""
        journal = RevocationJournal(directory=tmp_path / "rev")
        journal.append("session-a", _doc("a"))
        assert stat.S_IMODE((tmp_path / "rev").stat().st_mode) == 0o700
        assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "rev" / "lock").stat().st_mode) == 0o600
        journal.close()


class TestDamage:
    def test_torn_last_line_ignored_rest_replayed(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A last line cut off by a crash is ignored with a warning; the others replay, and
        the next append starts on a line of its own."""
        journal = RevocationJournal(directory=tmp_path)
        journal.append("session-a", _doc("a"))
        journal.close()
        with (tmp_path / JOURNAL_FILE).open("ab") as handle:
            handle.write(encode("session-b", _doc("b"))[:-9])
        with caplog.at_level(logging.WARNING):
            again = RevocationJournal(directory=tmp_path)
        assert again.entries == [("session-a", _doc("a"))]
        assert again.damaged == 1
        assert "incomplete last line" in caplog.text
        again.append("session-c", _doc("c"))
        again.close()
        third = RevocationJournal(directory=tmp_path)
        assert [record for record, _ in third.entries] == ["session-a", "session-c"]
        third.close()

    def test_line_failing_its_checksum_skipped(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A complete line whose checksum does not match is skipped with a warning."""
        good, bad = encode("session-a", _doc("a")), encode("session-b", _doc("b"))
        flipped = bad.replace(b'"b"', b'"x"')
        (tmp_path / JOURNAL_FILE).write_bytes(flipped + good)
        with caplog.at_level(logging.WARNING):
            journal = RevocationJournal(directory=tmp_path)
        assert journal.entries == [("session-a", _doc("a"))]
        assert "line 1 is damaged" in caplog.text
        journal.close()


class TestCompaction:
    def test_nothing_left_empties_file(self, tmp_path: Path) -> None:
        """Once the cluster has every entry, the file is cut to nothing."""
        journal = RevocationJournal(directory=tmp_path)
        journal.append("session-a", _doc("a"))
        journal.rewrite([])
        assert journal.path.stat().st_size == 0
        assert journal.records == set()
        journal.close()

    def test_remaining_entries_kept(self, tmp_path: Path) -> None:
        """A compaction keeps exactly the entries still pending, and appends go on after."""
        journal = RevocationJournal(directory=tmp_path)
        for name in "abc":
            journal.append(f"session-{name}", _doc(name))
        journal.rewrite([("session-b", _doc("b"))])
        journal.append("session-d", _doc("d"))
        journal.close()
        again = RevocationJournal(directory=tmp_path)
        assert [record for record, _ in again.entries] == ["session-b", "session-d"]
        assert not (tmp_path / "journal.tmp").exists()
        again.close()


class TestOwnership:
    def test_second_process_refused(self, tmp_path: Path) -> None:
        """A second journal on one directory is refused while the first is open (each
        process needs its own), and accepted once it is closed."""
        first = RevocationJournal(directory=tmp_path)
        with pytest.raises(RevocationJournalLocked):
            RevocationJournal(directory=tmp_path)
        first.close()
        RevocationJournal(directory=tmp_path).close()


class TestUnwritable:
    def test_full_disk_raises_and_leaves_no_torn_line(self, tmp_path: Path) -> None:
        """A write the file system cuts short (here the file-size limit, as a full disk
        would) raises, and the half-written line is cut off again."""
        journal = RevocationJournal(directory=tmp_path)
        journal.append("session-a", _doc("a"))
        size = journal.path.stat().st_size

        def child() -> int:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))
            try:
                journal.append("session-b", _doc("b"))
            except RevocationJournalError:
                return 0
            return 1

        assert _in_child(child) == 0
        assert journal.path.stat().st_size == size
        journal.close()
        again = RevocationJournal(directory=tmp_path)
        assert again.entries == [("session-a", _doc("a"))]
        assert again.damaged == 0
        again.close()

    def test_unwritable_directory_refused_at_open(self, tmp_path: Path) -> None:
        """A directory the gateway's user cannot write is refused when the journal opens
        (RevocationJournalError naming it), not at the first logout."""
        parent = tmp_path / "spool"
        parent.mkdir(mode=0o755)
        parent.chmod(0o555)

        def child() -> int:
            if os.geteuid() == 0:  # root writes anywhere: become an ordinary user
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            try:
                RevocationJournal(directory=parent / "revocations")
            except RevocationJournalError as exc:
                return 0 if str(parent) in str(exc) else 2
            return 1

        assert _in_child(child) == 0
        assert not (parent / "revocations").exists()


class TestOrphans:
    def test_journals_of_workers_no_longer_run_taken_over(self, tmp_path: Path) -> None:
        """With ``server.workers`` lowered to 2, worker 3's journal is taken over by the first
        worker's (replayed from there, emptied there); worker 1's is left to worker 1."""
        for index, name in ((1, "one"), (3, "three")):
            orphan = RevocationJournal(directory=tmp_path / f"worker-{index}" / "revocations")
            orphan.append(f"session-{name}", _doc(name))
            orphan.close()
        journal = RevocationJournal(directory=tmp_path / "revocations")
        assert adopt_orphans(journal, spool_dir=tmp_path, workers=2) == 1
        assert journal.entries == [("session-three", _doc("three"))]
        journal.close()
        assert RevocationJournal(directory=tmp_path / "revocations").entries == [
            ("session-three", _doc("three"))
        ]
        assert (tmp_path / "worker-3" / "revocations" / "journal").stat().st_size == 0
        assert (tmp_path / "worker-1" / "revocations" / "journal").stat().st_size > 0

    def test_journal_still_owned_left_alone(self, tmp_path: Path) -> None:
        """A journal a running process still owns is not taken over (nothing is lost)."""
        running = RevocationJournal(directory=tmp_path / "worker-5" / "revocations")
        running.append("session-a", _doc("a"))
        journal = RevocationJournal(directory=tmp_path / "revocations")
        assert adopt_orphans(journal, spool_dir=tmp_path, workers=1) == 0
        assert journal.entries == []
        assert running.path.stat().st_size > 0
        running.close()
        journal.close()
