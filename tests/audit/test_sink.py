"""audit/_sink.py: the in-memory sink keeps what was emitted."""

from __future__ import annotations

from audit import MemorySink


class TestMemorySink:
    def test_keeps_events_in_order_as_copies(self) -> None:
        """Events are kept in order, and later changes by the caller do not alter them."""
        sink = MemorySink()
        event = {"event.action": "login_success", "event.outcome": "success"}
        sink.emit(event)
        sink.emit({"event.action": "access_denied", "event.outcome": "failure"})
        event["event.outcome"] = "failure"
        assert sink.actions() == ["login_success", "access_denied"]
        assert sink.events[0]["event.outcome"] == "success"
