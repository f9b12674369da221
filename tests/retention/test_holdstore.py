"""retention/_holdstore.py: one contract for the SQLite table and the OpenSearch index."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from retention import HoldAlreadyReleased, HoldNotFound, InvalidHold
from retention._holds import Hold, HoldScope, new_hold
from tests.retention.conftest import Stores

T0 = datetime(2027, 1, 10, tzinfo=UTC)


def hold(minutes: int = 0, user: str = "u") -> Hold:
    return new_hold(
        incident_id="INC-1",
        reason="investigation",
        scope=HoldScope(user_ids=(user,)),
        placed_by="iss|responder",
        placed_at=T0 + timedelta(minutes=minutes),
    )


class TestHoldStore:
    def test_added_hold_reads_back(self, stores: Stores) -> None:
        """A hold reads back exactly as placed."""
        h = hold()
        stores.holds.add(h)
        assert stores.holds.get(h.hold_id) == h

    def test_id_taken_refused(self, stores: Stores) -> None:
        """Adding a hold with an id already stored is refused, and the first is kept."""
        h = hold()
        stores.holds.add(h)
        with pytest.raises(InvalidHold, match="taken"):
            stores.holds.add(replace(hold(5), hold_id=h.hold_id))
        assert stores.holds.get(h.hold_id) == h

    def test_unknown_id(self, stores: Stores) -> None:
        """Asking for a hold that does not exist says so."""
        with pytest.raises(HoldNotFound):
            stores.holds.get("nope")
        with pytest.raises(HoldNotFound):
            stores.holds.release("nope", by="a", at=T0, reason="r")

    def test_release_is_kept(self, stores: Stores) -> None:
        """A released hold stays in the store, released."""
        h = hold()
        stores.holds.add(h)
        released = stores.holds.release(h.hold_id, by="iss|r2", at=T0, reason="closed")
        assert stores.holds.get(h.hold_id) == released
        assert not released.active
        assert stores.holds.holds() == [released]

    def test_second_release_refused(self, stores: Stores) -> None:
        """A hold is released once; the first release stands."""
        h = hold()
        stores.holds.add(h)
        first = stores.holds.release(h.hold_id, by="a", at=T0, reason="one")
        with pytest.raises(HoldAlreadyReleased):
            stores.holds.release(h.hold_id, by="b", at=T0, reason="two")
        assert stores.holds.get(h.hold_id) == first

    def test_list_filters_active_and_released(self, stores: Stores) -> None:
        """Holds list oldest first, all or only active or only released."""
        a, b, c = hold(0, "a"), hold(1, "b"), hold(2, "c")
        for h in (c, a, b):
            stores.holds.add(h)
        released_b = stores.holds.release(b.hold_id, by="x", at=T0, reason="done")
        assert stores.holds.holds() == [a, released_b, c]
        assert stores.holds.holds(active=True) == [a, c]
        assert stores.holds.holds(active=False) == [released_b]

    def test_schema_is_idempotent(self, stores: Stores) -> None:
        """Ensuring the schema again keeps the holds."""
        h = hold()
        stores.holds.add(h)
        stores.holds.ensure_schema()
        assert stores.holds.holds() == [h]
