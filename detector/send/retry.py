"""Retries with exponential backoff and full jitter, honouring the server's Retry-After.

The n-th retry waits ``uniform(0, min(max_delay, base_delay * 2**(n-1)))`` ("full jitter"); when the
server said how long to wait, never less than that. It stops after `max_attempts` attempts, or when
the next wait would end past `max_elapsed` seconds since the first attempt: the caller then gets the
last outcome, as it came, and decides what to do with it.

Clock, sleep and random source are parameters, so tests need no real sleeping.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    max_elapsed: float = 20.0
    base_delay: float = 0.25
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_elapsed < 0 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need max_elapsed >= 0 and 0 <= base_delay <= max_delay")

    def ceiling(self, retry: int) -> float:
        """The largest backoff for the `retry`-th retry (1 = the first retry)."""
        return min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """How long to wait before the `retry`-th retry: full jitter, but not less than `retry_after`."""
        jittered = rng.uniform(0.0, self.ceiling(retry))
        return jittered if retry_after is None else max(retry_after, jittered)


NO_RETRIES = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class Retry:
    """Said of an outcome that may be tried again; `after` is the server's Retry-After in seconds, if any."""

    after: float | None = None


OnRetry = Callable[[int, float, object], None]
"""Called before each wait with (attempt that failed, seconds about to wait, its outcome)."""


class Retrier:
    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._on_retry = on_retry

    async def run(self, attempt: Callable[[], Awaitable[R]], retryable: Callable[[R], Retry | None]) -> R:
        """Call `attempt` until `retryable` says its outcome is final (None) or the policy runs out."""
        started = self._clock()
        tries = 0
        while True:
            outcome = await attempt()
            tries += 1
            retry = retryable(outcome)
            if retry is None or tries >= self.policy.max_attempts:
                return outcome
            wait = self.policy.delay(tries, retry.after, self._rng)
            if self._clock() - started + wait > self.policy.max_elapsed:
                return outcome
            if self._on_retry is not None:
                self._on_retry(tries, wait, outcome)
            await self._sleep(wait)
