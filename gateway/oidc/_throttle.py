"""Brute-force limits: failures counted per key (client IP, subject), blocks with backoff.

A key that fails ``max_failures`` times within ``window`` is blocked for ``block``; a key
blocked again before it was forgotten (``max_block`` after its last block ended) is blocked
twice as long as the time before, up to ``max_block`` (exponential backoff). Counters and
blocks live in the :class:`~gateway.oidc._shared.SharedState` all instances share, so a
brute-forcer gets one budget whichever instance the load balancer picks; wall-clock time is
used for the same reason. The instance that counts the failure reaching the limit sets the
block (the counter is atomic, so exactly one does) and raises the alert, once.

Keys are canonical, so variants of one principal share one counter: :func:`ip_key` maps an
IPv4-mapped IPv6 address to its IPv4 form and an IPv6 address to its /64 (one subscriber's
whole prefix); :func:`subject_key` is the issuer-qualified subject the gateway verified.

Blocks seen by this instance are kept in a small local cache until they end (a block is never
lifted early), which spares the store a lookup for every request of a blocked client. A "not
blocked" answer is kept for ``check_interval`` (1 s by default): a bearer client making many
requests costs the store one lookup a second, not one per request (measured with
``bench/shared_state.py``: a realtime GET in OpenSearch costs milliseconds), and a block set
by another instance is seen here within that interval. Failures are always counted in the
store at once.

One look-up per key at a time: requests that find no fresh answer while a look-up for their key
is under way wait for that one instead of starting their own (measured with
``bench/peers.py --profile``, bearer at 32 connections: without it every request arriving in
the milliseconds a look-up took started another, about 23 store reads a second instead of one,
queued in the default thread pool with the event loop waiting on them). And a "not blocked"
answer in the last ``REFRESH_AHEAD`` of its interval starts a look-up in the background while
it is still used, so in steady traffic no request waits for the store at all; the answer is
never used past its ``check_interval`` (a background look-up that fails leaves it to expire,
and the next request then asks the store itself and is refused if the store cannot say).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.oidc._shared import Block, SharedState

#: IPv6 clients are counted per /64: one subscriber typically holds a whole /64.
IPV6_PREFIX = 64
LOCAL_ENTRIES = 10_000
DEFAULT_CHECK_INTERVAL = 1.0
#: Client addresses whose key is remembered (parsing one is most of a bearer request's throttle
#: check: ``bench/peers.py --profile``).
IP_KEY_CACHE = 4096
#: The part of ``check_interval`` at its end in which a request starts a background look-up.
REFRESH_AHEAD = 0.25


@functools.lru_cache(maxsize=IP_KEY_CACHE)
def ip_key(address: str | None) -> str:
    """The throttle key of a client address (canonical; IPv6 by its /64)."""
    if address is None:
        return "ip:unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return f"ip:{address}"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return f"ip:{parsed.ipv4_mapped}"
        network = ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False)
        return f"ip:{network}"
    return f"ip:{parsed}"


def subject_key(user_id: str) -> str:
    """The throttle key of a verified, issuer-qualified subject (``iss|sub``)."""
    return f"sub:{user_id}"


class Throttle:
    def __init__(
        self,
        *,
        store: SharedState,
        max_failures: int,
        window: float,
        block: float,
        max_block: float | None = None,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._max = max_failures
        self._window = window
        self._block = block
        self._max_block = max(block, max_block if max_block is not None else block)
        self._clock = clock
        self._check_interval = check_interval
        self._local: OrderedDict[str, float] = OrderedDict()
        self._clear: OrderedDict[str, float] = OrderedDict()
        self._refresh_ahead = check_interval * REFRESH_AHEAD
        #: The store look-up under way per key (at most one; see the module docstring).
        self._lookups: dict[str, asyncio.Task[Block | None]] = {}

    async def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may try again, or None when it is not blocked.

        Raises StateUnavailable when the shared store cannot say (the caller refuses)."""
        now = self._clock()
        until = self._local.get(key)
        if until is None or until <= now:
            self._local.pop(key, None)
            checked = self._clear.get(key)
            if checked is not None and checked > now:
                if checked - now <= self._refresh_ahead and key not in self._lookups:
                    self._lookup(key, now)  # in the background: this answer still holds
                return None
            if self._check_interval > 0:
                lookup = self._lookups.get(key) or self._lookup(key, now)
                # shield: a waiter that is cancelled (its client left) cancels no other's
                block = await asyncio.shield(lookup)
            else:  # asked every time, by every request
                block = await self._read(key, now)
            if block is None or block.until <= now:
                return None
            until = block.until
        return math.ceil(until - now)

    def _lookup(self, key: str, now: float) -> asyncio.Task[Block | None]:
        """Start the one look-up of ``key``; it records its answer when it ends."""
        task = asyncio.get_running_loop().create_task(self._read(key, now))
        self._lookups[key] = task
        task.add_done_callback(lambda done: self._looked_up(key, done))
        return task

    def _looked_up(self, key: str, task: asyncio.Task[Block | None]) -> None:
        if self._lookups.get(key) is task:
            del self._lookups[key]
        if not task.cancelled():
            task.exception()  # retrieved here too: a background look-up may have no waiter

    async def _read(self, key: str, now: float) -> Block | None:
        """Ask the store about ``key`` (as of ``now``) and keep the answer."""
        block = await self._store.blocked(key)
        if block is None or block.until <= now:
            if self._check_interval > 0:
                _put(self._clear, key, now + self._check_interval)
            return None
        self._remember(key, block.until)
        return block

    async def failure(self, key: str) -> bool:
        """Count a failure; True when this failure blocks ``key`` (raise the alert once).

        Raises StateUnavailable when the shared store cannot count it."""
        count = await self._store.add_failure(key, window=self._window)
        if count % self._max:  # every max-th failure of a window blocks (once, atomically)
            return False
        now = self._clock()
        previous = await self._store.blocked(key)
        strikes = previous.strikes + 1 if previous is not None else 1
        duration = min(self._block * 2 ** (strikes - 1), self._max_block)
        block = Block(until=now + duration, strikes=strikes)
        await self._store.set_block(key, block, forget_at=block.until + self._max_block)
        self._remember(key, block.until)
        return True

    def _remember(self, key: str, until: float) -> None:
        self._clear.pop(key, None)
        _put(self._local, key, until)


def _put(table: OrderedDict[str, float], key: str, value: float) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > LOCAL_ENTRIES:
        table.popitem(last=False)
