"""audit/_pipeline.py without a node: the request path, the policies, the metrics shape."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from audit import AuditPipeline, AuditUnavailable, Category, ItemResult, Record, Scope, SQLiteStore
from audit.errors import StoreError, StoreUnavailable
from audit.processors import Pseudonymise, Pseudonymiser
from tests.audit.conftest import event, fast_pipeline


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    made = SQLiteStore(path=tmp_path / "audit.db")
    made.ensure_schema()
    return made


class TestEmit:
    def test_events_before_start_are_kept(self, store: SQLiteStore, tmp_path: Path) -> None:
        """Events emitted while the app is still starting wait in the queue and ship."""
        pipeline = fast_pipeline(store, tmp_path / "spool")
        pipeline.emit(event(1, action="policy_reloaded"))
        pipeline.open()
        assert pipeline.wait_idle(10)
        pipeline.close()
        assert [d["event.action"] for d in store.search(Scope())] == ["policy_reloaded"]

    def test_after_close_block_raises_and_drop_counts(
        self, store: SQLiteStore, tmp_path: Path
    ) -> None:
        """Once closed, a block-category event raises and a drop-category one is counted."""
        pipeline = fast_pipeline(store, tmp_path / "spool")
        pipeline.open()
        pipeline.close()
        with pytest.raises(AuditUnavailable):
            pipeline.emit(event(1, action="hold_placed"))
        pipeline.emit(event(2, action="upstream_error"))
        assert pipeline.metrics().drops == {"errors": 1}
        assert pipeline.metrics().refused == {"backbone": 1}

    def test_queue_bound_applies_policy(self, store: SQLiteStore, tmp_path: Path) -> None:
        """With the queue full (writer not running), the category policy decides."""
        pipeline = fast_pipeline(store, tmp_path / "spool", max_queue=2)
        pipeline.emit(event(1))
        pipeline.emit(event(2))
        pipeline.emit(event(3))  # access_denied: drop
        with pytest.raises(AuditUnavailable):
            pipeline.emit(event(4, action="login_success"))  # authentication: block
        assert pipeline.metrics().queue_depth == 2

    def test_policy_configurable_for_logins(self, store: SQLiteStore, tmp_path: Path) -> None:
        """Logins may be switched to drop; holds stay block by default."""
        pipeline = fast_pipeline(
            store, tmp_path / "spool", max_queue=1, full_policy={Category.AUTHENTICATION: "drop"}
        )
        pipeline.emit(event(1))
        pipeline.emit(event(2, action="login_failure"))
        assert pipeline.metrics().drops == {"authentication": 1}

    def test_policy_from_settings_strings(self, store: SQLiteStore, tmp_path: Path) -> None:
        """Settings give plain strings; they work like the Category keys."""
        pipeline = fast_pipeline(
            store, tmp_path / "spool", max_queue=1, full_policy={"authentication": "drop"}
        )
        pipeline.emit(event(1))
        pipeline.emit(event(2, action="login_failure"))
        assert pipeline.metrics().drops == {"authentication": 1}

    def test_unknown_category_refused(self, store: SQLiteStore, tmp_path: Path) -> None:
        """A category name that does not exist fails at construction."""
        with pytest.raises(ValueError, match="unknown audit category"):
            AuditPipeline(store=store, spool_dir=tmp_path, full_policy={"logins": "drop"})

    def test_bad_policy_refused(self, store: SQLiteStore, tmp_path: Path) -> None:
        """An unknown policy name fails at construction."""
        with pytest.raises(ValueError, match="block"):
            AuditPipeline(
                store=store,
                spool_dir=tmp_path,
                full_policy={Category.ERRORS: "ignore"},
            )


class TestMetrics:
    def test_samples_are_plain_numbers_with_categories(
        self, store: SQLiteStore, tmp_path: Path
    ) -> None:
        """Every sample is a number; drops and refusals are labelled by category."""
        pipeline = fast_pipeline(store, tmp_path / "spool", max_queue=1)
        pipeline.emit(event(1))
        pipeline.emit(event(2))
        samples = pipeline.metrics().samples()
        assert all(isinstance(value, int | float) for _, _, value in samples)
        dropped = {
            labels["category"]: value
            for name, labels, value in samples
            if name == "audit_events_dropped_total"
        }
        assert dropped["access_denied"] == 1 and set(dropped) == {c.value for c in Category}
        assert ("audit_queue_depth", {}, 1) in samples


class TestCorruptSpool:
    def test_corrupt_record_dead_lettered_rest_shipped(
        self, store: SQLiteStore, tmp_path: Path
    ) -> None:
        """A damaged spool line goes to the dead-letter file; the records around it ship."""
        spool_dir = tmp_path / "spool"
        first = fast_pipeline(store, spool_dir)
        first.emit(event(1))
        first.open()
        assert first.wait_idle(10)
        first.close()
        [segment] = [p for p in spool_dir.glob("*.seg") if p.stat().st_size == 0]
        segment.write_bytes(b"not a record\n")
        second = fast_pipeline(store, spool_dir)
        second.emit(event(2))
        second.open()
        assert second.wait_idle(10)
        second.close()
        assert sorted(int(d["labels"]["seq"]) for d in store.search(Scope())) == [1, 2]
        assert second.metrics().dead_letters == 1
        letters = (spool_dir / "deadletter.jsonl").read_text()
        assert "corrupt spool record" in letters and "not a record" in letters


class _Flaky(SQLiteStore):
    """A SQLite store whose whole requests fail as a remote store's can (pipeline logic only;
    the OpenSearch behaviour itself is tested against the real node)."""

    def __init__(self, *, path: Path, unavailable: int = 0) -> None:
        super().__init__(path=path)
        self.unavailable = unavailable
        self.calls = 0

    def write(self, records: Sequence[Record]) -> list[ItemResult]:
        self.calls += 1
        if self.unavailable > 0:
            self.unavailable -= 1
            raise StoreUnavailable("429 too many requests")
        if any(b"poison" in r.document for r in records):
            raise StoreError("400 the request as a whole was refused")
        return super().write(records)


class TestWholeRequestFailures:
    def test_unavailable_retried_until_stored_once(self, tmp_path: Path) -> None:
        """A 429/5xx for the whole bulk is retried with backoff; each event is stored once."""
        store = _Flaky(path=tmp_path / "audit.db", unavailable=3)
        store.ensure_schema()
        pipeline = fast_pipeline(store, tmp_path / "spool")
        pipeline.open()
        for seq in range(50):
            pipeline.emit(event(seq))
        assert pipeline.wait_idle(10)
        pipeline.close()
        assert sorted(int(d["labels"]["seq"]) for d in store.search(Scope(), size=100)) == list(
            range(50)
        )
        assert store.unavailable == 0 and store.calls >= 4
        assert pipeline.metrics().retries > 0

    def test_refused_request_split_to_find_the_culprit(self, tmp_path: Path) -> None:
        """A bulk refused as a whole is split until the one bad record is dead-lettered."""
        store = _Flaky(path=tmp_path / "audit.db")
        store.ensure_schema()
        pipeline = fast_pipeline(store, tmp_path / "spool")
        for seq in range(40):
            pipeline.emit(event(seq, **({"error.message": "poison"} if seq == 17 else {})))
        pipeline.open()
        assert pipeline.wait_idle(10)
        pipeline.close()
        stored = sorted(int(d["labels"]["seq"]) for d in store.search(Scope(), size=100))
        assert stored == [seq for seq in range(40) if seq != 17]
        [letter] = store.deadletters()
        assert "refused" in letter["reason"]


class TestPseudonyms:
    def test_configured_field_stored_as_pseudonym(self, store: SQLiteStore, tmp_path: Path) -> None:
        """With pseudonymisation on, the store holds the pseudonym staff can look up."""
        pseudonymiser = Pseudonymiser(key=b"p" * 32)
        pipeline = fast_pipeline(
            store,
            tmp_path / "spool",
            pseudonymise=Pseudonymise(pseudonymiser=pseudonymiser, fields=["user.target.id"]),
        )
        pipeline.open()
        pipeline.emit(event(1, action="personal_data_access", **{"user.target.id": "pupil-9"}))
        assert pipeline.wait_idle(10)
        pipeline.close()
        [doc] = store.search(Scope())
        assert doc["user.target.id"] == pseudonymiser.pseudonym("pupil-9")


class _Slow(SQLiteStore):
    """Takes its time per bulk write, like a busy cluster."""

    def write(self, records: Sequence[Record]) -> list[ItemResult]:
        time.sleep(0.05)
        return super().write(records)


class TestCloseWithBacklog:
    def test_backlog_stays_spooled_and_ships_next_start(self, tmp_path: Path) -> None:
        """close() does not wait for a long backlog: the rest ships on the next start, once."""
        store = _Slow(path=tmp_path / "audit.db")
        store.ensure_schema()
        first = fast_pipeline(store, tmp_path / "spool", batch_size=100, close_timeout=0.1)
        for seq in range(2000):
            first.emit(event(seq))
        first.open()
        first.close()
        assert first.metrics().spool_bytes > 0
        assert store.count(Scope()) < 2000
        second = fast_pipeline(store, tmp_path / "spool", batch_size=500)
        second.open()
        assert second.wait_idle(60)
        second.close()
        stored = sorted(int(d["labels"]["seq"]) for d in store.search(Scope(), size=5000))
        assert stored == list(range(2000))
