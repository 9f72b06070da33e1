"""`detector.stream.batches.take_batches` on a real Faust stream with the worker's settings (no broker needed:
messages are handed to Faust's conductor as its consumer would hand them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import Message

from detector.stream.batches import take_batches
from detector.stream.config import StreamConfig
from detector.stream.lean import LeanApp, new_event_loop

TOPIC = "batches.requests"
TP0 = TP(TOPIC, 0)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    loop = new_event_loop()
    config = StreamConfig(brokers="127.0.0.1:9", group_id="batches-test")
    app = LeanApp("batches-test", autodiscover=False, loop=loop, **config.faust_settings(str(tmp_path)))
    # An iterator topic is its own queue (the agent's stream reads a clone of its topic the same way).
    topic = app.topic(TOPIC, key_type=bytes, value_type=bytes, value_serializer="raw").clone(is_iterator=True)
    app.topics.add(topic)
    loop.run_until_complete(app.topics.on_partitions_assigned({TP0}))
    app.flow_control.resume()
    app.batches_topic = topic
    yield app
    loop.close()
    asyncio.set_event_loop_policy(None)


async def deliver(app: Any, *offsets: int) -> None:
    for offset in offsets:
        message = Message(
            TOPIC, 0, offset, 0.0, 0, None, b"k", b"v", None, tp=TP0, generation_id=app.consumer_generation_id
        )
        await app.consumer.callback(message)


class Taker:
    """Runs `take_batches` on the app's topic and keeps each batch's offsets, and when it was handed over."""

    def __init__(self, app: Any, size: int, wait: float, working: float = 0.0) -> None:
        self.stream = app.batches_topic.stream()
        self.size, self.wait, self.working = size, wait, working
        self.batches: list[tuple[float, list[int]]] = []
        self.events: list[Any] = []
        self.handed_over = asyncio.Event()
        self.task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        await self.stream.maybe_start()
        self.task = asyncio.ensure_future(self._take())

    async def _take(self) -> None:
        async for events in take_batches(self.stream, self.size, self.wait):
            self.batches.append((time.monotonic(), [event.message.offset for event in events]))
            self.events += events
            self.handed_over.set()
            if self.working:
                await asyncio.sleep(self.working)  # the agent at work on the batch

    async def next_batch(self, timeout: float) -> tuple[float, list[int]]:
        await asyncio.wait_for(self.handed_over.wait(), timeout)
        self.handed_over.clear()
        return self.batches[-1]

    async def stop(self) -> None:
        await self.stream.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


def test_a_full_batch_goes_at_once_and_what_is_left_goes_when_the_stream_stops(app: Any) -> None:
    async def run() -> list[list[int]]:
        taker = Taker(app, size=3, wait=60.0)
        await taker.start()
        await deliver(app, *range(7))
        await taker.next_batch(timeout=10)
        await taker.next_batch(timeout=10)
        await taker.stop()
        return [offsets for _, offsets in taker.batches]

    assert app.loop.run_until_complete(run()) == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_batch_closes_its_wait_after_its_first_event_even_while_the_agent_works(app: Any) -> None:
    """Faust's take would wait `within` again after the agent's work, however long the events had waited."""
    wait = 1.0

    async def run() -> None:
        taker = Taker(app, size=100, wait=wait, working=wait * 2)
        await taker.start()
        sent = time.monotonic()
        await deliver(app, 0)
        first, offsets = await taker.next_batch(timeout=30)
        assert offsets == [0] and first - sent >= wait, "a batch that is not full waits for more"

        await deliver(app, 1, 2)  # while the agent works on the first batch, for longer than `wait`
        second, offsets = await taker.next_batch(timeout=30)
        assert offsets == [1, 2]
        # Taken as soon as the work on the first is done: Faust's take would add `wait` (3 s apart).
        apart = second - first
        assert taker.working - 0.01 <= apart < taker.working + wait / 2, (
            f"{apart:.2f} s apart, not the work alone"
        )
        await taker.stop()

    app.loop.run_until_complete(run())


def test_events_are_left_for_the_agent_to_ack(app: Any) -> None:
    async def run() -> tuple[list[bool], list[bool]]:
        taker = Taker(app, size=2, wait=60.0)
        await taker.start()
        await deliver(app, 0, 1)  # Faust acks an event once the next is read, unless told not to
        await taker.next_batch(timeout=10)
        taken = [event.message.acked for event in taker.events]
        for event in taker.events:
            await taker.stream.ack(event)
        await taker.stop()
        return taken, [event.message.acked for event in taker.events]

    assert app.loop.run_until_complete(run()) == ([False, False], [True, True])
