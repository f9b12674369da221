"""gateway/_heap.py: the start-up heap frozen out of the collector's way, and re-frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway._heap import HeapRefreezer, freeze_heap, refreeze_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


def _frozen_cycle() -> weakref.ref[_Node]:
    """A reference cycle made before freezing and dropped after: garbage only GC can free."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    freeze_heap()
    return ref


class TestFreeze:
    def test_freeze_moves_objects_to_the_permanent_generation(self) -> None:
        """After freezing, the objects alive are out of the collector's generations."""
        freeze_heap()
        assert gc.get_freeze_count() > 0

    def test_frozen_cycle_survives_a_collection(self) -> None:
        """A frozen cycle is not collected: why the heap is re-frozen now and then."""
        ref = _frozen_cycle()
        gc.collect()
        assert ref() is not None

    def test_refreeze_collects_frozen_garbage(self) -> None:
        """Re-freezing thaws, collects the cycle that became garbage, and freezes again."""
        ref = _frozen_cycle()
        refreeze_heap()
        assert ref() is None
        assert gc.get_freeze_count() > 0


class TestRefreezer:
    async def test_start_freezes_and_stop_thaws(self) -> None:
        """start() freezes at once; stop() ends the task and thaws the heap."""
        refreezer = HeapRefreezer(interval=3600)
        await refreezer.start()
        assert gc.get_freeze_count() > 0
        await refreezer.stop()
        assert gc.get_freeze_count() == 0

    async def test_refreezes_on_its_interval(self) -> None:
        """The periodic task frees frozen garbage without a restart."""
        refreezer = HeapRefreezer(interval=0.05)
        await refreezer.start()
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        gc.freeze()  # as if built before the last freeze
        del a, b
        try:
            for _ in range(100):
                if ref() is None:
                    break
                await asyncio.sleep(0.02)
            assert ref() is None
        finally:
            await refreezer.stop()

    def test_interval_must_be_positive(self) -> None:
        """A zero or negative interval is refused."""
        with pytest.raises(ValueError, match="positive"):
            HeapRefreezer(interval=0)
