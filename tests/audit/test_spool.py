"""audit/_spool.py: append-only segments, a cursor that moves only on success, bounded bytes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from audit._spool import Spool, encode
from audit._store import Record
from audit.errors import SpoolFull, SpoolLocked


def _line(n: int, size: int = 100) -> bytes:
    doc = b'{"n":%d,"pad":"%s"}' % (n, b"x" * size)
    return encode(Record(f"id-{n}", "2026-11-28T10:00:00.000000Z", doc))


def _ids(spool: Spool, limit: int = 10_000) -> list[str]:
    return [r.event_id for r in spool.read(max_records=limit, max_bytes=1 << 30).records]


class TestAppendAndRead:
    def test_read_returns_records_in_order(self, tmp_path: Path) -> None:
        """Records come back in the order written, with id, timestamp and document."""
        spool = Spool(directory=tmp_path)
        spool.append([_line(1), _line(2)])
        batch = spool.read(max_records=10, max_bytes=1 << 20)
        assert [r.event_id for r in batch.records] == ["id-1", "id-2"]
        assert batch.records[0].document.startswith(b'{"n":1')

    def test_read_respects_count_and_bytes(self, tmp_path: Path) -> None:
        """A batch stops at max_records or max_bytes, whichever comes first."""
        spool = Spool(directory=tmp_path)
        spool.append([_line(n) for n in range(10)])
        assert len(spool.read(max_records=3, max_bytes=1 << 20).records) == 3
        spool.rewind()
        assert len(spool.read(max_records=100, max_bytes=len(_line(0)) * 2).records) == 2

    def test_rotation_across_segments(self, tmp_path: Path) -> None:
        """Records spread over several segments read back whole and in order."""
        spool = Spool(directory=tmp_path, segment_bytes=500)
        for n in range(20):
            spool.append([_line(n)])
        assert len(list(tmp_path.glob("*.seg"))) > 3
        assert _ids(spool) == [f"id-{n}" for n in range(20)]


class TestCursor:
    def test_uncommitted_records_replayed_after_reopen(self, tmp_path: Path) -> None:
        """Without a commit, a new spool on the same directory reads everything again."""
        spool = Spool(directory=tmp_path)
        spool.append([_line(n) for n in range(5)])
        assert len(_ids(spool)) == 5
        spool.close()
        assert _ids(Spool(directory=tmp_path)) == [f"id-{n}" for n in range(5)]

    def test_commit_moves_cursor_durably(self, tmp_path: Path) -> None:
        """After a commit, a reopened spool starts behind the committed records."""
        spool = Spool(directory=tmp_path)
        spool.append([_line(n) for n in range(5)])
        batch = spool.read(max_records=2, max_bytes=1 << 20)
        spool.commit(batch.end)
        spool.close()
        assert _ids(Spool(directory=tmp_path)) == ["id-2", "id-3", "id-4"]

    def test_fully_committed_segments_deleted(self, tmp_path: Path) -> None:
        """Once everything is committed the spool holds no bytes and no old segment."""
        spool = Spool(directory=tmp_path, segment_bytes=500)
        for n in range(20):
            spool.append([_line(n)])
        spool.commit(spool.read(max_records=100, max_bytes=1 << 20).end)
        assert spool.is_empty() and spool.unshipped_bytes == 0
        assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) == 0

    def test_damaged_cursor_replays_from_oldest(self, tmp_path: Path) -> None:
        """A cursor that fails its checksum is ignored: replay all (409s make it harmless)."""
        spool = Spool(directory=tmp_path)
        spool.append([_line(n) for n in range(3)])
        spool.commit(spool.read(max_records=2, max_bytes=1 << 20).end)
        spool.close()
        cursor = tmp_path / "cursor"
        cursor.write_bytes(cursor.read_bytes().replace(b"0", b"1", 1))
        reopened = Spool(directory=tmp_path)
        assert _ids(reopened) == ["id-0", "id-1", "id-2"]
        reopened.close()

    def test_torn_last_line_cut_on_recovery(self, tmp_path: Path) -> None:
        """A half-written last record (power loss) is cut off; whole records survive."""
        spool = Spool(directory=tmp_path)
        spool.append([_line(1), _line(2)])
        spool.close()
        [segment] = tmp_path.glob("*.seg")
        with segment.open("ab") as handle:
            handle.write(_line(3)[:20])
        assert _ids(Spool(directory=tmp_path)) == ["id-1", "id-2"]

    def test_corrupt_line_reported_not_dropped(self, tmp_path: Path) -> None:
        """A line that is not a record comes back as corrupt, with the reason."""
        spool = Spool(directory=tmp_path)
        spool.append([b"garbage without tabs\n", _line(1)])
        batch = spool.read(max_records=10, max_bytes=1 << 20)
        assert [r.event_id for r in batch.records] == ["id-1"]
        assert batch.corrupt[0][0] == b"garbage without tabs\n"


class TestBound:
    def test_byte_bound_refuses_whole_append(self, tmp_path: Path) -> None:
        """An append that would pass max_bytes is refused whole and writes nothing."""
        spool = Spool(directory=tmp_path, max_bytes=4096)
        written = 0
        with pytest.raises(SpoolFull):
            while True:
                spool.append([_line(written)])
                written += 1
        assert len(_ids(spool)) == written
        assert spool.live_bytes <= 4096

    def test_space_returns_after_commit(self, tmp_path: Path) -> None:
        """Committing shipped records frees their bytes for new ones."""
        spool = Spool(directory=tmp_path, max_bytes=4096, segment_bytes=1024)
        with contextlib.suppress(SpoolFull):
            for n in range(100):
                spool.append([_line(n)])
        spool.commit(spool.read(max_records=1000, max_bytes=1 << 20).end)
        spool.append([_line(999)])
        assert _ids(spool) == ["id-999"]


class TestDiskFull:
    def test_enospc_is_spool_full_and_leaves_no_partial_record(self, tiny_fs: Path) -> None:
        """On a full disk the append fails as SpoolFull, all or none, and reading still works."""
        spool = Spool(directory=tiny_fs, max_bytes=1 << 30, segment_bytes=1 << 30)
        written = 0
        with pytest.raises(SpoolFull, match="disk is full"):
            while True:
                spool.append([_line(written, size=1000)])
                written += 1
        assert written > 10
        assert _ids(spool) == [f"id-{n}" for n in range(written)]
        spool.close()
        reopened = Spool(directory=tiny_fs)
        assert _ids(reopened) == [f"id-{n}" for n in range(written)]
        reopened.close()

    def test_cursor_moves_on_a_full_disk(self, tiny_fs: Path) -> None:
        """With no free block left, committing still works (the cursor is rewritten in place)."""
        spool = Spool(directory=tiny_fs, max_bytes=1 << 30, segment_bytes=1 << 30)
        with contextlib.suppress(SpoolFull):
            for n in range(10_000):
                spool.append([_line(n, size=1000)])
        spool.commit(spool.read(max_records=3, max_bytes=1 << 20).end)
        spool.close()
        reopened = Spool(directory=tiny_fs)
        assert _ids(reopened)[0] == "id-3"
        reopened.close()


class TestLock:
    def test_second_spool_on_same_directory_refused(self, tmp_path: Path) -> None:
        """Two pipelines must not share a spool: the second one fails fast."""
        first = Spool(directory=tmp_path)
        with pytest.raises(SpoolLocked):
            Spool(directory=tmp_path)
        first.close()
        Spool(directory=tmp_path).close()  # free again once the first is closed


class TestFsync:
    def test_interval_sync_happens_without_a_further_append(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Under `interval`, an idle writer's sync_if_due flushes what the last append left."""
        synced: list[int] = []
        real_fsync = os.fsync
        spool = Spool(directory=tmp_path, fsync="interval", fsync_interval=0.0)
        spool.append([_line(1)])  # synced at once (interval 0)

        def counting_fsync(fd: int) -> None:
            synced.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", counting_fsync)
        spool.sync_if_due()
        assert synced == []  # nothing new since the last sync
        spool._fsync_interval = 3600.0
        spool.append([_line(2)])  # not yet due: left dirty
        assert synced == []
        spool._fsync_interval = 0.0
        spool.sync_if_due()
        assert len(synced) == 1
        spool.close()
