"""An async token bucket: at most `burst` at once, `rate` per second on average.

The clock and the sleep are parameters, so a test drives time by hand instead of waiting::

    bucket = TokenBucket(rate=10, burst=5, clock=fake.now, sleep=fake.sleep)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Refill arithmetic in floats can land a hair under a whole token; this much counts as whole.
_EPSILON = 1e-9


class TokenBucket:
    """Tokens refill continuously at `rate` per second up to `burst`. Waiters are served in arrival order."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 tokens per second, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1 token, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()
        self._lock = asyncio.Lock()

    @property
    def available(self) -> float:
        """Tokens that could be taken now."""
        self._refill()
        return self._tokens

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take `tokens` if they are there now and nobody is queued ahead; never waits."""
        self._check(tokens)
        if self._lock.locked():
            return False
        self._refill()
        if self._tokens + _EPSILON < tokens:
            return False
        self._tokens = max(0.0, self._tokens - tokens)
        return True

    async def acquire(self, tokens: float = 1.0) -> float:
        """Wait until `tokens` are available and take them. Returns the seconds spent waiting."""
        self._check(tokens)
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                if self._tokens + _EPSILON >= tokens:
                    self._tokens = max(0.0, self._tokens - tokens)
                    return waited
                delay = (tokens - self._tokens) / self.rate
                await self._sleep(delay)
                waited += delay

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def _check(self, tokens: float) -> None:
        if not 0 < tokens <= self.burst:
            raise ValueError(f"can take between 0 and burst={self.burst} tokens at once, not {tokens}")
