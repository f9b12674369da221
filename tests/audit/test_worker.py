"""audit/_worker.py: the pipeline in a supervised process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import orjson
import pytest
import structlog

from audit import (
    AuditPipeline,
    AuditUnavailable,
    PersonalDataAccess,
    Scope,
    SQLiteStore,
    personal_data_access_event,
)
from audit._pipeline import Metrics
from audit._worker import AuditWorker, WorkerSpec, _add, _jsonable, _take, restart_backoff
from tests.audit.conftest import event

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path: Path) -> WorkerSpec:
    return WorkerSpec(
        "tests.audit._worker_factory:sqlite_pipeline",
        (str(tmp_path / "audit.db"), str(tmp_path / "spool")),
    )


def _stored(tmp_path: Path) -> list[dict[str, Any]]:
    store = SQLiteStore(path=tmp_path / "audit.db")
    store.ensure_schema()
    return store.search(Scope(), size=10_000)


def _seqs(tmp_path: Path) -> list[int]:
    return sorted(int(doc["labels"]["seq"]) for doc in _stored(tmp_path))


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[AuditWorker]:
    made = AuditWorker(spec=_spec(tmp_path), restart_delay=0.05, close_timeout=30)
    made.open()
    try:
        yield made
    finally:
        made.close()


class TestShipping:
    def test_every_event_stored_once(self, worker: AuditWorker, tmp_path: Path) -> None:
        """Events emitted in this process are stored by the worker, each once."""
        for seq in range(300):
            worker.emit(event(seq))
        assert worker.wait_idle(30)
        assert _seqs(tmp_path) == list(range(300))
        assert worker.metrics().events_shipped == 300

    def test_chain_runs_in_the_worker(self, worker: AuditWorker, tmp_path: Path) -> None:
        """The worker's chain redacts, stamps the time of emit, merges the caller's context
        variables and writes sets as sorted lists."""
        with structlog.contextvars.bound_contextvars(request_id="req-from-context"):
            before = time.time()
            sent = event(1)
            sent.update({"user.roles": {"teacher", "admin"}, "password": "hunter2"})
            worker.emit(sent)
        assert worker.wait_idle(30)
        (doc,) = _stored(tmp_path)
        assert doc["trace.id"] == "req-from-context"
        assert doc["user.roles"] == ["admin", "teacher"]
        assert "hunter2" not in str(doc)
        stamped = doc["@timestamp"]
        assert isinstance(stamped, str)
        assert stamped.startswith(time.strftime("%Y-%m-%dT", time.gmtime(before)))

    def test_close_drains_what_was_just_emitted(self, tmp_path: Path) -> None:
        """Events emitted right before close are flushed, spooled and shipped."""
        worker = AuditWorker(spec=_spec(tmp_path))
        worker.open()
        for seq in range(500):
            worker.emit(event(seq))
        worker.close()
        assert _seqs(tmp_path) == list(range(500))
        assert worker.metrics().events_shipped == 500


class TestWorkerDeath:
    def test_events_in_the_pipe_reach_the_replacement(
        self, worker: AuditWorker, tmp_path: Path
    ) -> None:
        """A worker killed with SIGKILL is restarted; what was emitted meanwhile is stored."""
        worker.emit(event(0))
        assert worker.wait_idle(30)
        process = worker._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        for seq in range(1, 200):  # into the pipe while nobody reads it
            worker.emit(event(seq))
        assert worker.wait_idle(60)
        assert worker.restarts == 1
        assert _seqs(tmp_path) == list(range(200))
        assert worker.metrics().events_shipped == 200  # counters go on across workers

    def test_quick_deaths_in_a_row_back_off(self, tmp_path: Path) -> None:
        """A worker that keeps dying soon after its start is restarted after ever longer
        waits (no respawn loop), and its events still reach the replacement."""
        made = AuditWorker(
            spec=_spec(tmp_path), restart_delay=0.05, max_restart_delay=0.15, stable_after=600
        )
        made.open()
        try:
            delays = []
            for seq in range(4):
                process = made._process
                assert process is not None
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                made.emit(event(seq))
                assert made.wait_idle(60)
                delays.append(made.last_restart_delay)
            assert delays == [0.05, 0.1, 0.15, 0.15]
            assert made.restarts == 4
            assert _seqs(tmp_path) == [0, 1, 2, 3]
        finally:
            made.close()

    def test_a_worker_that_ran_long_enough_restarts_at_the_base_delay(self, tmp_path: Path) -> None:
        """A death after stable_after of running starts the backoff over."""
        made = AuditWorker(
            spec=_spec(tmp_path), restart_delay=0.05, max_restart_delay=5, stable_after=0.5
        )
        made.open()
        try:
            delays = []
            for seq in range(3):
                time.sleep(0.6)  # the worker has run stable_after
                process = made._process
                assert process is not None
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                made.emit(event(seq))
                assert made.wait_idle(60)
                delays.append(made.last_restart_delay)
            assert delays == [0.05, 0.05, 0.05]
        finally:
            made.close()

    def test_sigterm_does_not_cut_the_worker_short(
        self, worker: AuditWorker, tmp_path: Path
    ) -> None:
        """A SIGTERM meant for the service leaves the worker to the gateway's orderly stop."""
        process = worker._process
        assert process is not None
        os.kill(process.pid, signal.SIGTERM)
        for seq in range(100):
            worker.emit(event(seq))
        assert worker.wait_idle(30)
        assert process.poll() is None
        assert worker.restarts == 0
        assert _seqs(tmp_path) == list(range(100))

    def test_gateway_killed_worker_still_ships(self, tmp_path: Path) -> None:
        """When the emitting process dies by SIGKILL, the worker ships what it was given and
        exits on its own."""
        parent = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.audit._worker_parent",
                str(tmp_path / "audit.db"),
                str(tmp_path / "spool"),
                "400",
            ],
            cwd=REPO,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert parent.returncode == -signal.SIGKILL
        worker_pid = int(parent.stdout.split()[0])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _alive(worker_pid):
            time.sleep(0.05)
        assert not _alive(worker_pid)
        assert _seqs(tmp_path) == list(range(400))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


class TestRefusal:
    def test_full_spool_reported_applies_the_policy(self, tmp_path: Path) -> None:
        """Once the worker reports its spool full, blocking categories raise, others drop."""
        worker = AuditWorker(spec=_spec(tmp_path))
        worker._reported = Metrics(0, 0, 0, 0, 0, 0, 0, 0, spool_full=True)
        with pytest.raises(AuditUnavailable):
            worker.emit(event(1, action="personal_data_access"))
        worker.emit(event(2, action="access_denied"))
        metrics = worker.metrics()
        assert metrics.refused == {"personal_data_access": 1}
        assert metrics.drops == {"access_denied": 1}
        assert metrics.queue_depth == 0

    def test_queue_bound_applies_the_policy(self, tmp_path: Path) -> None:
        """With the queue full (nothing flushing), the category's policy decides."""
        worker = AuditWorker(spec=_spec(tmp_path), max_queue=2)
        worker.emit(event(1))
        worker.emit(event(2))
        worker.emit(event(3))  # access_denied: drop
        with pytest.raises(AuditUnavailable):
            worker.emit(event(4, action="login_success"))
        assert worker.metrics().queue_depth == 2

    def test_closed_worker_refuses(self, tmp_path: Path) -> None:
        """After close nothing is accepted silently."""
        worker = AuditWorker(spec=_spec(tmp_path))
        worker.close()
        with pytest.raises(AuditUnavailable):
            worker.emit(event(1, action="hold_placed"))


class _Opaque:
    def __str__(self) -> str:
        return "opaque"


class _Unwritable:
    def __str__(self) -> str:
        raise TypeError("no text either")


class TestLines:
    """What the flusher writes to the pipe: one JSON line per event."""

    def test_lines_are_what_the_default_and_non_str_keys_write(self, tmp_path: Path) -> None:
        """Plain events, sets, non-str keys and other objects: byte for byte as orjson writes
        them with the text fallback and non-string keys, one line each."""
        items: list[tuple[int, dict[str, Any], dict[str, Any]]] = [
            (1, {}, event(1)),
            (2, {"request": "r"}, {"event.action": "login", "roles": {"b", "a"}}),
            (3, {}, {"event.action": "x", "counts": {1: "one"}, "thing": _Opaque()}),
            (4, {}, {"event.action": "y", "labels": {"deep": frozenset({"z", "y"})}}),
        ]
        expected = b"".join(
            orjson.dumps(list(item), default=_jsonable, option=orjson.OPT_NON_STR_KEYS) + b"\n"
            for item in items
        )
        worker = AuditWorker(spec=_spec(tmp_path))
        assert worker._lines(deque(items)) == expected

    def test_unwritable_event_keeps_its_action(self, tmp_path: Path) -> None:
        """A value that cannot be written even as text: the line still names the action."""
        worker = AuditWorker(spec=_spec(tmp_path))
        data = worker._lines(deque([(5, {}, {"event.action": "z", "bad": _Unwritable()})]))
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        assert orjson.loads(data) == [
            5,
            {},
            {"event.action": "z", "labels": {"serialise_error": "true"}},
        ]


def _access(seq: int, exposed: Mapping[str, Any] | None = None) -> PersonalDataAccess:
    """A compact personal-data access whose exposed labels carry ``seq``."""
    return (
        "GET",
        "Mözilla ☃",
        f"req-{seq}",
        "192.0.2.10",
        "/api/schools/school-a/students",
        "https://idp.example|t1",
        ("mentor", "teacher"),
        "school-a",
        "p, teacher",
        {"audit.data_categories": ["contact"], "labels": {"seq": seq}}
        if exposed is None
        else exposed,
    )


class _Taken:
    """Stands in for the worker's pipeline in :func:`_take`: keeps what it is given."""

    def __init__(self) -> None:
        self.taken: list[tuple[dict[str, Any], int, dict[str, Any]]] = []

    def emit_at(
        self, event: Mapping[str, Any], *, emitted_ns: int, context: Mapping[str, Any]
    ) -> None:
        self.taken.append((dict(event), emitted_ns, dict(context)))


class TestPersonalDataAccess:
    """emit_personal_data: the compact form, queued, written and stored as emit would."""

    def test_line_is_the_compact_array_with_time_and_context(self, tmp_path: Path) -> None:
        """The flusher writes [emitted_ns, context, [fields]]: the time taken at the call."""
        worker = AuditWorker(spec=_spec(tmp_path))
        before = time.time_ns()
        with structlog.contextvars.bound_contextvars(session="s-1"):
            worker.emit_personal_data(_access(1))
        after = time.time_ns()
        emitted_ns, context, fields = orjson.loads(worker._lines(worker._queue))
        assert before <= emitted_ns <= after
        assert context == {"session": "s-1"}
        assert fields == orjson.loads(orjson.dumps(_access(1)))

    def test_the_worker_stores_the_expanded_event(
        self, worker: AuditWorker, tmp_path: Path
    ) -> None:
        """What is stored is the expanded event, as if it had been emitted whole."""
        worker.emit_personal_data(_access(7))
        worker.emit(personal_data_access_event(_access(8)))
        assert worker.wait_idle(30)
        compact, whole = sorted(_stored(tmp_path), key=lambda doc: doc["labels"]["seq"])
        for doc in (compact, whole):
            del doc["@timestamp"], doc["event.id"], doc["labels"]["seq"]
        assert compact.pop("trace.id") == "req-7"
        assert whole.pop("trace.id") == "req-8"
        assert compact == whole
        assert list(compact) == list(whole)
        assert compact["user_agent.original"] == "Mözilla ☃"

    def test_a_mapping_that_is_not_a_dict_is_written_as_one(self, tmp_path: Path) -> None:
        """Exposed fields in any mapping arrive as the same object (not as its text)."""
        worker = AuditWorker(spec=_spec(tmp_path))
        exposed = MappingProxyType({"labels": {"seq": 3}})
        worker.emit_personal_data(_access(3, exposed))
        _, _, fields = orjson.loads(worker._lines(worker._queue))
        assert fields[9] == {"labels": {"seq": 3}}

    def test_unwritable_exposed_value_keeps_the_action(self, tmp_path: Path) -> None:
        """A value orjson cannot write: the sets and text fallback, or else the action."""
        worker = AuditWorker(spec=_spec(tmp_path))
        worker.emit_personal_data(_access(1, {"roles": {"b", "a"}, "thing": _Opaque()}))
        worker.emit_personal_data(_access(2, {"bad": _Unwritable()}))
        first, second = worker._lines(worker._queue).splitlines()
        assert orjson.loads(first)[2][9] == {"roles": ["a", "b"], "thing": "opaque"}
        assert orjson.loads(second)[2] == {
            "event.action": "personal_data_access",
            "labels": {"serialise_error": "true"},
        }

    def test_refused_by_the_personal_data_policy(self, tmp_path: Path) -> None:
        """Queue full, spool full or closed: the personal-data category's policy (block)."""
        worker = AuditWorker(spec=_spec(tmp_path), max_queue=1)
        worker.emit_personal_data(_access(1))
        with pytest.raises(AuditUnavailable):
            worker.emit_personal_data(_access(2))
        assert worker.metrics().refused == {"personal_data_access": 1}
        dropping = AuditWorker(spec=_spec(tmp_path), full_policy={"personal_data_access": "drop"})
        dropping._reported = Metrics(0, 0, 0, 0, 0, 0, 0, 0, spool_full=True)
        dropping.emit_personal_data(_access(3))
        assert dropping.metrics().drops == {"personal_data_access": 1}
        worker.close()
        with pytest.raises(AuditUnavailable):
            worker.emit_personal_data(_access(4))

    def test_events_in_the_pipe_reach_the_replacement(
        self, worker: AuditWorker, tmp_path: Path
    ) -> None:
        """Compact events written while the worker is dead are stored by its replacement."""
        worker.emit_personal_data(_access(0))
        assert worker.wait_idle(30)
        process = worker._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        for seq in range(1, 100):
            worker.emit_personal_data(_access(seq))
        assert worker.wait_idle(60)
        assert worker.restarts == 1
        assert _seqs(tmp_path) == list(range(100))

    def test_close_drains_compact_events(self, tmp_path: Path) -> None:
        """Compact events emitted right before close are flushed, spooled and shipped."""
        worker = AuditWorker(spec=_spec(tmp_path))
        worker.open()
        for seq in range(300):
            worker.emit_personal_data(_access(seq))
        worker.close()
        assert _seqs(tmp_path) == list(range(300))


class TestTake:
    """The worker's reading of one line."""

    def test_compact_line_is_expanded(self) -> None:
        """A compact line reaches the pipeline as the expanded event, time and context."""
        pipeline = _Taken()
        line = orjson.dumps([5, {"session": "s"}, _access(1)])
        _take(cast(AuditPipeline, pipeline), line)
        assert pipeline.taken == [(personal_data_access_event(_access(1)), 5, {"session": "s"})]

    @pytest.mark.parametrize(
        "line",
        [b"[5, {}, [1, 2]]", b'[5, {}, "text"]', b"5", b'"ns", {}, {}]', b"[5, {}"],
        ids=["short compact", "event text", "number", "cut", "truncated"],
    )
    def test_unreadable_line_is_skipped(self, line: bytes) -> None:
        """A line that is neither an event nor a compact access is skipped, not fatal."""
        pipeline = _Taken()
        _take(cast(AuditPipeline, pipeline), line)
        assert pipeline.taken == []


class TestStart:
    def test_worker_that_cannot_start_stops_the_start(self, tmp_path: Path) -> None:
        """A factory that fails in the worker makes open() raise, not hang."""
        worker = AuditWorker(spec=WorkerSpec("tests.audit._worker_factory:no_such_factory"))
        with pytest.raises(RuntimeError, match="did not start"):
            worker.open()
        with pytest.raises(AuditUnavailable):
            worker.emit(event(1, action="hold_placed"))

    def test_started_worker_has_reported(self, worker: AuditWorker) -> None:
        """Once open() returns, the worker's figures are there."""
        assert worker._reported is not None


class TestMetrics:
    def test_counters_add_up_across_workers_gauges_do_not(self) -> None:
        """Counters of a dead worker are added to the next one's; gauges are the current."""
        earlier = Metrics(5, 100, 10, 10, 9, 1, 2, 1, drops={"errors": 1})
        current = Metrics(1, 50, 3, 3, 3, 0, 0, 0, drops={"errors": 2}, spool_full=True)
        total = _add(earlier, current)
        assert (total.events_emitted, total.events_shipped, total.dead_letters) == (13, 12, 1)
        assert total.drops == {"errors": 3}
        assert (total.queue_depth, total.spool_bytes, total.spool_full) == (1, 50, True)

    def test_events_waiting_in_the_pipe_count_in_the_queue_depth(self, worker: AuditWorker) -> None:
        """Events written to the pipe that the worker has not read count as queued."""
        worker.emit(event(0))
        assert worker.wait_idle(30)
        process = worker._process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)  # the worker reads nothing until SIGCONT
        try:
            for seq in range(1, 301):
                worker.emit(event(seq))
            deadline = time.monotonic() + 30
            # The flusher writes them: the deque empties when it takes a tick's events, the
            # pipe fills when it has written them (waiting for the first alone raced the write).
            while worker._lines_written < 301 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not worker._queue
            assert 295 <= worker.in_pipe() <= 300  # an estimate from the mean line size
            assert worker.metrics().queue_depth >= worker.in_pipe()
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert worker.wait_idle(30)
        assert worker.in_pipe() == 0
        assert worker.metrics().queue_depth == 0

    def test_restart_backoff_doubles_up_to_the_cap(self) -> None:
        """The wait before a restart doubles with each quick death in a row, up to the cap."""
        waits = [restart_backoff(n, base=0.5, cap=10) for n in range(7)]
        assert waits == [0.5, 1, 2, 4, 8, 10, 10]
        assert restart_backoff(10_000, base=0.5, cap=10) == 10

    def test_bad_options_refused(self, tmp_path: Path) -> None:
        """Unknown categories and policies are configuration errors."""
        with pytest.raises(ValueError, match="unknown audit category"):
            AuditWorker(spec=_spec(tmp_path), full_policy={"nope": "drop"})
        with pytest.raises(ValueError, match="block"):
            AuditWorker(spec=_spec(tmp_path), full_policy={"errors": "maybe"})
        with pytest.raises(ValueError, match="max_restart_delay"):
            AuditWorker(spec=_spec(tmp_path), restart_delay=5, max_restart_delay=1)
