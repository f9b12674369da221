"""gateway/oidc/_throttle.py: failure counters, blocks and bounded memory."""

from __future__ import annotations

from gateway.oidc import Throttle
from tests.gateway.oidc._support import Clock


def _throttle(clock: Clock, max_tracked: int = 100) -> Throttle:
    return Throttle(max_failures=3, window=60, block=300, max_tracked=max_tracked, clock=clock)


class TestThrottle:
    def test_blocks_after_limit(self) -> None:
        """The limit-th failure within the window blocks the key, reported once."""
        clock = Clock()
        throttle = _throttle(clock)
        assert [throttle.failure("ip:a") for _ in range(3)] == [False, False, True]
        assert throttle.retry_after("ip:a") == 300
        assert throttle.retry_after("ip:b") is None

    def test_window_resets_count(self) -> None:
        """Failures spread wider than the window never block."""
        clock = Clock()
        throttle = _throttle(clock)
        for _ in range(6):
            assert not throttle.failure("ip:a")
            clock.advance(31)
            throttle.failure("ip:a")
            clock.advance(31)
        assert throttle.retry_after("ip:a") is None

    def test_block_ends(self) -> None:
        """After the block time the key may try again."""
        clock = Clock()
        throttle = _throttle(clock)
        for _ in range(3):
            throttle.failure("ip:a")
        clock.advance(301)
        assert throttle.retry_after("ip:a") is None

    def test_memory_bounded(self) -> None:
        """A flood of distinct keys never keeps more than max_tracked counters."""
        throttle = _throttle(Clock(), max_tracked=100)
        for n in range(10_000):
            throttle.failure(f"ip:{n}")
        assert len(throttle) == 100
