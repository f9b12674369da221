"""gateway/oidc/_throttle.py: failure counters, blocks with backoff, canonical keys."""

from __future__ import annotations

import asyncio

import pytest

from gateway.oidc import Block, MemoryState, Throttle, ip_key
from gateway.oidc.errors import StateUnavailable
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


class GatedStore(MemoryState):
    """A memory store whose block look-ups wait until the test opens the gate (or fail)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.gate = asyncio.Event()
        self.lookups = 0
        self.failing = False

    async def blocked(self, key: str) -> Block | None:
        self.lookups += 1
        await self.gate.wait()
        if self.failing:
            raise StateUnavailable("store down")
        return await super().blocked(key)


def _gated(clock: Clock, store: GatedStore) -> Throttle:
    return Throttle(
        store=store, max_failures=2, window=60, block=300, check_interval=1, clock=clock
    )


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class TestOneLookupAtATime:
    async def test_concurrent_requests_share_one_lookup(self) -> None:
        """Requests arriving while the store is asked wait for that answer, not ask again."""
        clock = Clock()
        store = GatedStore(clock)
        throttle = _gated(clock, store)
        waiting = [asyncio.ensure_future(throttle.retry_after("ip:a")) for _ in range(20)]
        await _settle()
        assert store.lookups == 1
        store.gate.set()
        assert await asyncio.gather(*waiting) == [None] * 20
        assert store.lookups == 1

    async def test_other_keys_are_asked_on_their_own(self) -> None:
        """Only requests for the same key share a look-up."""
        clock = Clock()
        store = GatedStore(clock)
        throttle = _gated(clock, store)
        waiting = [asyncio.ensure_future(throttle.retry_after(f"ip:{n}")) for n in range(3)]
        await _settle()
        store.gate.set()
        await asyncio.gather(*waiting)
        assert store.lookups == 3

    async def test_a_shared_block_answer_reaches_every_waiter(self) -> None:
        """A block found by the shared look-up is every waiter's answer."""
        clock = Clock()
        store = GatedStore(clock)
        await store.set_block(
            "ip:a", Block(until=clock() + 120, strikes=1), forget_at=clock() + 500
        )
        throttle = _gated(clock, store)
        waiting = [asyncio.ensure_future(throttle.retry_after("ip:a")) for _ in range(5)]
        await _settle()
        store.gate.set()
        assert await asyncio.gather(*waiting) == [120] * 5

    async def test_a_failed_lookup_refuses_every_waiter_and_is_not_kept(self) -> None:
        """When the store cannot say, every waiter is refused, and the next request asks
        again (fail closed; no answer is remembered)."""
        clock = Clock()
        store = GatedStore(clock)
        store.failing = True
        throttle = _gated(clock, store)
        waiting = [asyncio.ensure_future(throttle.retry_after("ip:a")) for _ in range(5)]
        await _settle()
        store.gate.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, StateUnavailable) for r in results)
        store.failing = False
        assert await throttle.retry_after("ip:a") is None
        assert store.lookups == 2

    async def test_a_cancelled_waiter_leaves_the_lookup_to_the_others(self) -> None:
        """A request cancelled while waiting (its client left) does not cancel the look-up."""
        clock = Clock()
        store = GatedStore(clock)
        throttle = _gated(clock, store)
        first = asyncio.ensure_future(throttle.retry_after("ip:a"))
        second = asyncio.ensure_future(throttle.retry_after("ip:a"))
        await _settle()
        first.cancel()
        await _settle()
        store.gate.set()
        assert await second is None
        assert first.cancelled()
        assert store.lookups == 1

    async def test_with_interval_zero_every_request_asks(self) -> None:
        """check_interval 0 means every request asks the store itself."""
        clock = Clock()
        store = GatedStore(clock)
        throttle = Throttle(
            store=store, max_failures=2, window=60, block=300, check_interval=0, clock=clock
        )
        waiting = [asyncio.ensure_future(throttle.retry_after("ip:a")) for _ in range(3)]
        await _settle()
        store.gate.set()
        await asyncio.gather(*waiting)
        assert store.lookups == 3


class TestRefreshAhead:
    async def test_late_in_the_interval_the_store_is_asked_in_the_background(self) -> None:
        """In the last quarter of the interval a request is answered at once and starts one
        look-up; its answer carries the next interval, so no request waits for the store."""
        clock = Clock()
        store = GatedStore(clock)
        store.gate.set()
        throttle = _gated(clock, store)
        assert await throttle.retry_after("ip:a") is None
        clock.advance(0.5)
        assert await throttle.retry_after("ip:a") is None
        assert store.lookups == 1  # early in the interval: nothing asked
        clock.advance(0.3)
        store.gate.clear()  # the background look-up hangs: the request does not wait for it
        assert await throttle.retry_after("ip:a") is None
        assert await throttle.retry_after("ip:a") is None
        await _settle()
        assert store.lookups == 2  # one background look-up, however many requests
        store.gate.set()
        await _settle()
        clock.advance(0.5)  # past the first answer's interval, within the refreshed one
        assert await throttle.retry_after("ip:a") is None
        assert store.lookups == 2

    async def test_a_block_found_in_the_background_is_seen_next(self) -> None:
        """A block set by another instance, found by the background look-up, answers the
        next request."""
        clock = Clock()
        store = GatedStore(clock)
        store.gate.set()
        throttle = _gated(clock, store)
        assert await throttle.retry_after("ip:a") is None
        await store.set_block("ip:a", Block(until=clock() + 60, strikes=1), forget_at=clock() + 500)
        clock.advance(0.8)
        assert await throttle.retry_after("ip:a") is None  # the earlier answer still holds
        await _settle()
        assert await throttle.retry_after("ip:a") == 60  # ceil(59.2)

    async def test_a_failed_background_lookup_lets_the_answer_expire(self) -> None:
        """When the background look-up fails the answer is not extended: after its interval
        the next request asks the store itself and is refused if the store cannot say."""
        clock = Clock()
        store = GatedStore(clock)
        store.gate.set()
        throttle = _gated(clock, store)
        assert await throttle.retry_after("ip:a") is None
        store.failing = True
        clock.advance(0.8)
        assert await throttle.retry_after("ip:a") is None
        await _settle()
        clock.advance(0.3)
        with pytest.raises(StateUnavailable):
            await throttle.retry_after("ip:a")


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
