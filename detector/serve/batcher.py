"""Concurrent HTTP calls share engine calls: one `engine.process` (one store round trip) per batch.

Each call queues its event with its reference time and waits on a future. One loop takes whatever is queued,
up to `max_batch`, decides it in one engine call and resolves the futures; calls that arrive meanwhile form
the next batch. An idle service adds no wait: a lone call is decided as soon as the loop runs.

`max_in_flight` engine calls may run at once (default 1): while one waits on the store, the next batch can
start. Calls from one client stay in order, since a client sends the next (feedback, a challenge result)
after the answer to the last; calls in two batches in flight at once are ordered by the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from detector.engine import Result
from detector.events import BadEvent, Event

log = logging.getLogger(__name__)


class Processor(Protocol):
    async def process(
        self, events: Sequence[Event | BadEvent], references: Sequence[float | None] | None = None
    ) -> list[Result]: ...


class BatcherStopped(RuntimeError):
    """The batcher is not running (the service is stopping)."""


class MicroBatcher:
    def __init__(
        self,
        engine: Processor,
        max_batch: int = 256,
        max_in_flight: int = 1,
        on_batch: Callable[[Sequence[Event], Sequence[Result | BaseException]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.on_batch = on_batch
        self._queue: list[tuple[Event, float, asyncio.Future[Result]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Decide what is queued, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    def submit(self, event: Event, reference: float) -> asyncio.Future[Result]:
        if self._task is None or self._stopping:
            raise BatcherStopped("the service is stopping")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((event, reference, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.max_in_flight)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await slots.acquire()  # what arrives meanwhile joins this batch
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                task = asyncio.create_task(self._decide(batch))
                running.add(task)
                task.add_done_callback(finished)
            if self._stopping:
                await asyncio.gather(*running)
                return

    async def _decide(self, batch: list[tuple[Event, float, asyncio.Future[Result]]]) -> None:
        events = [event for event, _, _ in batch]
        outcomes = await self._process(events, [reference for _, reference, _ in batch])
        for (_, _, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller gave up (disconnected or past its deadline)
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if self.on_batch is not None:
            with contextlib.suppress(Exception):
                self.on_batch(events, outcomes)

    async def _process(self, events: list[Event], references: list[float]) -> list[Result | BaseException]:
        """The engine's answers; should it fail on a batch, each event alone, so one cannot fail the rest."""
        try:
            return list(await self.engine.process(events, references))
        except Exception:
            if len(events) == 1:
                log.exception("the engine failed on an event")
                return [RuntimeError("the engine failed on this event")]
            log.exception("the engine failed on a batch of %d events; trying them one at a time", len(events))
        outcomes: list[Result | BaseException] = []
        for event, reference in zip(events, references, strict=True):
            outcomes.extend(await self._process([event], [reference]))
        return outcomes
