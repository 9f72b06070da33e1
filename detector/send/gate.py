"""How the send worker calls 8x8 and its ledger: within the rate limit (a token bucket, and a 429's
Retry-After for every send of the worker), at most `max_in_flight` requests at once, retries within the
retry policy, a ledger that is waited for while Redis is away; and every wait cut short when the worker
starts stopping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from detector.send.config import SendConfig
from detector.send.eightbyeight import FeedbackAccepted, PermanentFailure, Queued, Rejected, RetryableFailure
from detector.send.ledger import LedgerUnavailable
from detector.send.metrics import SendMetrics
from detector.send.ratelimit import TokenBucket

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stopped(Exception):
    """The worker is stopping and the ledger is not answering: leave the rest of the round unfinished."""


class Gate:
    def __init__(
        self,
        config: SendConfig,
        metrics: SendMetrics,
        stopping: asyncio.Event,
        limiter: TokenBucket | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.metrics = metrics
        self.stopping = stopping
        self.limiter = limiter or TokenBucket(config.rate, config.effective_burst)
        self.policy = config.retry_policy
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._paused_until = 0.0  # monotonic time before which nothing is sent (a 429's Retry-After)
        self._stop_seen_at: float | None = None

    async def enter(self, tokens: int) -> bool:
        """Wait for the rate limit (`tokens` messages) and a request slot; False, holding nothing, if the
        worker stops first. Pair a True with `leave()`."""
        if tokens and not await self.admit(tokens):
            return False
        return await self.until_stopping(self._slots.acquire()) is not False

    def leave(self) -> None:
        self._slots.release()

    async def attempts(
        self, operation: str, call: Callable[[], Awaitable[list[Any]]], *, tokens: int
    ) -> tuple[list[Any] | None, int, str | None]:
        """(results of the last attempt, attempts made, why retrying stopped early); results None when the
        worker stopped before the first attempt. For calls that are safe to repeat (feedback)."""
        started = time.monotonic()
        attempts = 0
        results: list[Any] | None = None
        while True:
            if not await self.enter(tokens):
                return results, attempts, "gave up: the worker is stopping"
            began = time.perf_counter()
            try:
                results = await call()
            finally:
                self.leave()
            attempts += 1
            first = results[0]
            self.count(operation, first, time.perf_counter() - began)
            if not isinstance(first, RetryableFailure):
                return results, attempts, None
            wait = self.retry_in(operation, first, attempts, started)
            if wait is None:
                return results, attempts, None
            if not await self.nap(wait):
                return results, attempts, "gave up: the worker is stopping"

    def count(self, operation: str, result: object, seconds: float) -> None:
        self.metrics.latency.labels(operation).observe(seconds)
        self.metrics.requests.labels(operation, _result_label(result)).inc()

    def retry_in(
        self, operation: str, failure: RetryableFailure, attempts: int, started: float
    ) -> float | None:
        """Seconds until the next attempt after `failure`, or None when the retry policy is spent. A 429's
        Retry-After pauses every send of this worker."""
        wait = self.policy.delay(attempts, failure.retry_after, self._rng)
        spent = time.monotonic() - started + wait > self.policy.max_elapsed
        if attempts >= self.policy.max_attempts or spent:
            return None
        if failure.reason == "rate_limited" and failure.retry_after:
            self._paused_until = max(self._paused_until, time.monotonic() + failure.retry_after)
        ambiguous = "yes" if failure.may_have_queued else "no"
        self.metrics.retries.labels(operation, failure.reason, ambiguous).inc()
        log.info(
            "8x8 %s attempt %d failed (%s, HTTP %s, errorId %s): retrying in %.2fs",
            operation,
            attempts,
            failure.reason,
            failure.status,
            failure.error_id,
            wait,
        )
        return wait

    async def admit(self, tokens: int) -> bool:
        """Wait for a 429's pause to end and for `tokens` from the bucket; False if the worker stops first."""
        pause = self._paused_until - time.monotonic()
        if pause > 0:
            self.metrics.rate_limit_wait.labels("retry_after").observe(pause)
            if not await self.nap(pause):
                return False
        left = float(tokens)
        waited = 0.0
        while left > 0:
            take = min(left, self.limiter.burst)
            got = await self.until_stopping(self.limiter.acquire(take))
            if got is False:
                return False
            waited += float(got)
            left -= take
        if waited > 0:
            self.metrics.rate_limit_wait.labels("bucket").observe(waited)
        return True

    async def until_stopping(self, work: Awaitable[T]) -> T | Literal[False]:
        """`work`'s result, or False if the worker starts stopping first (work is then cancelled)."""
        if self.stopping.is_set():
            if asyncio.iscoroutine(work):
                work.close()
            return False
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if task.cancelled():
            return False
        return task.result()

    async def nap(self, seconds: float) -> bool:
        """Sleep; False (at once) if the worker starts stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return not self.stopping.is_set()

    async def ledger(self, call: Callable[[], Awaitable[T]], *, must: bool = False) -> T:
        """A ledger call, tried until Redis answers. When stopping: `Stopped` at once, or after 10 s if
        `must` (an outcome of a message that went out: without it the message reads as in doubt)."""
        delay = 0.05
        while True:
            try:
                return await call()
            except LedgerUnavailable as exc:
                self.metrics.ledger_errors.inc()
                error = exc
            if self.stopping.is_set():
                if self._stop_seen_at is None:
                    self._stop_seen_at = time.monotonic()
                if not must or time.monotonic() - self._stop_seen_at > 10.0:
                    log.error(
                        "stopping while the ledger does not answer: leaving the rest of the round (%s)", error
                    )
                    raise Stopped from None
                await asyncio.sleep(delay)
            else:
                log.warning("%s; trying again in %.1fs", error, delay)
                await self.nap(delay)
            delay = min(delay * 2, 2.0)


def _result_label(result: object) -> str:
    if isinstance(result, Queued | Rejected | FeedbackAccepted):
        return "ok"
    if isinstance(result, RetryableFailure | PermanentFailure):
        return result.reason
    return "other"
