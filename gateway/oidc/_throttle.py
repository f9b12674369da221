"""Brute-force limits: failures counted per key (client IP, subject), blocks, bounded memory.

A key that fails ``max_failures`` times within ``window`` is blocked for ``block``. Counters
live in an LRU of at most ``max_tracked`` keys (the oldest forgotten first), so a flood of new
addresses cannot exhaust memory; a forgotten key simply starts counting again. Counters are
per instance: instances behind a load balancer each count (a per-instance limit), which the
report of issue #4 lists as remaining work.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Counter:
    window_start: float
    failures: int
    blocked_until: float


class Throttle:
    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        block: float,
        max_tracked: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window
        self._block = block
        self._max_tracked = max_tracked
        self._clock = clock
        self._counters: OrderedDict[str, _Counter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counters)

    def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may try again, or None when it is not blocked."""
        counter = self._counters.get(key)
        if counter is None:
            return None
        remaining = counter.blocked_until - self._clock()
        return math.ceil(remaining) if remaining > 0 else None

    def failure(self, key: str) -> bool:
        """Count a failure; True when this failure blocks ``key`` (raise the alert once)."""
        now = self._clock()
        counter = self._counters.get(key)
        if counter is None or now - counter.window_start >= self._window:
            blocked_until = counter.blocked_until if counter is not None else 0.0
            counter = _Counter(window_start=now, failures=0, blocked_until=blocked_until)
        counter.failures += 1
        self._counters[key] = counter
        self._counters.move_to_end(key)
        while len(self._counters) > self._max_tracked:
            self._counters.popitem(last=False)
        if counter.failures >= self._max and counter.blocked_until <= now:
            counter.blocked_until = now + self._block
            counter.failures = 0
            counter.window_start = now
            return True
        return False
