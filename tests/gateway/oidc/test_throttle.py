"""gateway/oidc/_throttle.py: failure counters, blocks with backoff, canonical keys."""

from __future__ import annotations

import pytest

from gateway.oidc import Block, MemoryState, Throttle, ip_key
from tests.gateway.oidc._support import Clock


def _throttle(clock: Clock, *, max_block: float = 300) -> Throttle:
    return Throttle(
        store=MemoryState(clock=clock),
        max_failures=3,
        window=60,
        block=300,
        max_block=max_block,
        clock=clock,
    )


class TestThrottle:
    async def test_blocks_after_limit(self) -> None:
        """The limit-th failure within the window blocks the key, reported once."""
        clock = Clock()
        throttle = _throttle(clock)
        assert [await throttle.failure("ip:a") for _ in range(3)] == [False, False, True]
        assert await throttle.retry_after("ip:a") == 300
        assert await throttle.retry_after("ip:b") is None

    async def test_window_resets_count(self) -> None:
        """Failures spread wider than the window never block."""
        clock = Clock()
        throttle = _throttle(clock)
        for _ in range(6):
            assert not await throttle.failure("ip:a")
            clock.advance(31)
            await throttle.failure("ip:a")
            clock.advance(31)
        assert await throttle.retry_after("ip:a") is None

    async def test_block_ends(self) -> None:
        """After the block time the key may try again."""
        clock = Clock()
        throttle = _throttle(clock)
        for _ in range(3):
            await throttle.failure("ip:a")
        clock.advance(301)
        assert await throttle.retry_after("ip:a") is None

    async def test_blocked_again_in_the_same_window(self) -> None:
        """Every max-th failure of a window blocks, not only the first max-th."""
        clock = Clock()
        throttle = _throttle(clock)
        results = [await throttle.failure("ip:a") for _ in range(6)]
        assert results == [False, False, True, False, False, True]

    async def test_two_throttles_share_one_budget(self) -> None:
        """Two instances over one store count together: the block is set once, and the
        other instance sees it (CWE-307: no N-fold budget behind a load balancer)."""
        clock = Clock()
        store = MemoryState(clock=clock)
        one, two = (
            Throttle(store=store, max_failures=4, window=60, block=300, clock=clock)
            for _ in range(2)
        )
        results = [await (one if n % 2 else two).failure("ip:a") for n in range(4)]
        assert results == [False, False, False, True]
        assert await two.retry_after("ip:a") == 300
        assert await one.retry_after("ip:a") == 300


class CountingStore(MemoryState):
    """A memory store that counts block lookups."""

    lookups = 0

    async def blocked(self, key: str) -> Block | None:
        self.lookups += 1
        return await super().blocked(key)


class TestCheckInterval:
    async def test_clear_answer_reused_within_interval(self) -> None:
        """A "not blocked" answer spares the store for check_interval, then is asked again."""
        clock = Clock()
        store = CountingStore(clock=clock)
        throttle = Throttle(
            store=store, max_failures=3, window=60, block=300, check_interval=1, clock=clock
        )
        for _ in range(5):
            assert await throttle.retry_after("ip:a") is None
        assert store.lookups == 1
        clock.advance(1)
        assert await throttle.retry_after("ip:a") is None
        assert store.lookups == 2

    async def test_block_from_another_instance_seen_after_interval(self) -> None:
        """A block set elsewhere is seen here at the latest check_interval later."""
        clock = Clock()
        store = MemoryState(clock=clock)
        here, there = (
            Throttle(
                store=store, max_failures=2, window=60, block=300, check_interval=1, clock=clock
            )
            for _ in range(2)
        )
        assert await here.retry_after("ip:a") is None
        assert [await there.failure("ip:a") for _ in range(2)] == [False, True]
        clock.advance(1)
        assert await here.retry_after("ip:a") == 299

    async def test_own_block_seen_at_once(self) -> None:
        """A failure counted here that blocks is seen here at once, cache or not."""
        clock = Clock()
        throttle = Throttle(
            store=MemoryState(clock=clock), max_failures=1, window=60, block=300, clock=clock
        )
        assert await throttle.retry_after("ip:a") is None
        assert await throttle.failure("ip:a")
        assert await throttle.retry_after("ip:a") == 300


class TestBackoff:
    async def test_block_time_doubles_up_to_the_cap(self) -> None:
        """CWE-307: a key blocked again soon after its block ended waits twice as long,
        never longer than max_block."""
        clock = Clock()
        throttle = _throttle(clock, max_block=1000)
        waits = []
        for _ in range(4):
            for _ in range(3):
                await throttle.failure("ip:a")
            wait = await throttle.retry_after("ip:a")
            assert wait is not None
            waits.append(wait)
            clock.advance(wait + 1)
        assert waits == [300, 600, 1000, 1000]

    async def test_backoff_forgotten_after_quiet_time(self) -> None:
        """A key that stayed quiet for max_block after its block starts again at block."""
        clock = Clock()
        throttle = _throttle(clock, max_block=1000)
        for _ in range(3):
            await throttle.failure("ip:a")
        clock.advance(300 + 1000 + 1)
        for _ in range(3):
            await throttle.failure("ip:a")
        assert await throttle.retry_after("ip:a") == 300


class TestIpKey:
    @pytest.mark.parametrize(
        ("address", "key"),
        [
            ("192.0.2.7", "ip:192.0.2.7"),
            ("::ffff:192.0.2.7", "ip:192.0.2.7"),
            ("::ffff:c000:207", "ip:192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "ip:2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff::1", "ip:2001:db8:1:2::/64"),
            ("2001:DB8:1:2::9", "ip:2001:db8:1:2::/64"),
            (None, "ip:unknown"),
        ],
    )
    def test_variants_share_a_key(self, address: str | None, key: str) -> None:
        """CWE-307: spellings of one address, and addresses of one IPv6 /64, are one key."""
        assert ip_key(address) == key

    def test_other_prefix_is_another_key(self) -> None:
        """Another /64 is another client."""
        assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
