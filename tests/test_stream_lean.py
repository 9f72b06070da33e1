"""`detector.stream.lean`: when Faust's consumer may hand a message to the conductor without racing the
delivery against a rebalance. A real Faust app with the worker's settings (no broker needed: the conductor
is driven by assigning partitions by hand)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.types import TP

from detector.stream.config import StreamConfig
from detector.stream.lean import (
    BUSY_FETCH,
    QUIET_FETCH,
    LeanApp,
    LeanConsumer,
    LeanProducerBuffer,
    QuietMonitor,
    new_event_loop,
)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = new_event_loop()
    yield loop
    loop.close()
    asyncio.set_event_loop_policy(None)


def _app(tmp_path: Path, loop: asyncio.AbstractEventLoop, buffer: int) -> tuple[Any, Any, TP]:
    config = StreamConfig(brokers="127.0.0.1:9", group_id="lean-test")
    settings = config.faust_settings(str(tmp_path)) | {"stream_buffer_maxsize": buffer}
    app = LeanApp("lean-test", autodiscover=False, loop=loop, **settings)
    topic = app.topic("lean.requests", key_type=bytes, value_type=bytes, value_serializer="raw")
    app.topics.add(topic)
    tp = TP("lean.requests", 0)
    loop.run_until_complete(app.topics.on_partitions_assigned({tp}))
    app.flow_control.resume()
    return app, topic, tp


def test_the_worker_app_runs_the_lean_consumer_and_the_quiet_monitor(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    app, _, _ = _app(tmp_path, loop, 8)
    assert isinstance(app.consumer, LeanConsumer)
    assert isinstance(app.monitor, QuietMonitor)
    assert type(loop).__module__.startswith("uvloop")


def test_a_delivery_is_immediate_only_while_nothing_can_make_it_wait(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    app, topic, tp = _app(tmp_path, loop, 2)
    consumer = app.consumer
    assert consumer._can_deliver_now(tp)

    while not topic.queue.full():  # the agent is behind: the subscriber's queue has no room
        topic.queue.put_nowait(object())
    assert not consumer._can_deliver_now(tp)
    while not topic.queue.empty():
        topic.queue.get_nowait()
    assert consumer._can_deliver_now(tp)

    app.flow_control.suspend()  # a rebalance starts: Faust suspends the flow into the queues
    assert not consumer._can_deliver_now(tp)
    app.flow_control.resume()
    consumer.suspend_flow.set()
    assert not consumer._can_deliver_now(tp)
    consumer.suspend_flow.clear()
    lock = app.topics._tp_to_callback_lock  # another delivery is waiting inside the conductor
    loop.run_until_complete(lock.acquire())
    assert not consumer._can_deliver_now(tp)
    lock.release()
    assert consumer._can_deliver_now(tp)

    assert not consumer._can_deliver_now(TP("lean.requests", 1))  # not assigned: no handler


def test_a_consumer_that_found_the_queue_full_waits_until_it_is_half_empty(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    app, topic, tp = _app(tmp_path, loop, 8)
    queue = topic.queue
    while not queue.full():
        queue.put_nowait(object())

    async def drain_to_half() -> bool:
        waiting = asyncio.ensure_future(app.consumer._room(tp))
        for _ in range(queue.maxsize - queue.maxsize // 2 - 1):
            queue.get_nowait()
            await asyncio.sleep(0.005)  # the agent takes one event at a time
            if waiting.done():
                return False
        queue.get_nowait()  # now half empty
        await asyncio.wait_for(waiting, 5)
        return True

    assert loop.run_until_complete(drain_to_half()), "waited until the queue was half empty, not less"


def _message(tp: TP, offset: int) -> Any:
    from faust.types.tuples import Message

    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)


def test_faust_s_per_message_race_is_skipped_only_when_the_delivery_cannot_block(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    """Faust's drain loop calls `callback(message)` and `wait_first(delivery, suspend_flow.wait())`: the
    delivery goes at once, on no task of its own, while there is room; otherwise Faust's race decides."""
    app, topic, tp = _app(tmp_path, loop, 2)
    consumer = app.consumer
    tasks: list[object] = []
    default_factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        tasks.append(coro)
        if default_factory is not None:
            return default_factory(loop, coro, **kwargs)  # type: ignore[no-any-return]
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)

    async def deliver(offset: int) -> Any:
        tasks.clear()  # run_until_complete's own task
        delivery = consumer.callback(_message(tp, offset))
        return await consumer.wait_first(delivery, consumer.suspend_flow.wait())

    result = loop.run_until_complete(deliver(1))
    assert not result.stopped and topic.queue.qsize() == 1
    assert tasks == [], "a delivery with room in the queue needs no task"

    app.flow_control.suspend()  # a rebalance: Faust's own race (tasks), and the flow suspended wins
    consumer.suspend_flow.set()
    loop.run_until_complete(deliver(2))
    assert tasks, "while the flow is suspended the delivery is raced as Faust does it"
    consumer.suspend_flow.clear()
    app.flow_control.resume()

    # Other waits of the consumer are Faust's, untouched.
    async def other_wait() -> None:
        tasks.clear()
        await consumer.wait_first(asyncio.sleep(0))

    loop.run_until_complete(other_wait())
    assert tasks


def test_the_producer_buffer_and_the_events_are_faust_s_without_settings_lookups(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    from faust.transport.producer import ProducerBuffer

    app, _, tp = _app(tmp_path, loop, 8)
    buffer = app.producer.buffer
    assert isinstance(buffer, LeanProducerBuffer)
    assert buffer.size == 0
    for _ in range(3):
        buffer.pending.put_nowait(object())
    assert buffer.size == ProducerBuffer.size.fget(buffer) == 3  # type: ignore[attr-defined]
    event = app.create_event(b"k", b"v", {}, _message(tp, 1))
    assert type(event) is app.conf.Event and (event.key, event.value) == (b"k", b"v")


@pytest.mark.kafka
def test_the_consumer_thread_long_polls_a_quiet_topic_and_fetches_a_busy_one_in_larger_responses(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, kafka_bootstrap: str, kafka_topic_factory: Any
) -> None:
    """Faust asks for one byte and waits up to 1.5 s: at a few thousand events a second a fetch brings a
    handful. Asking for 64 KiB within 5 ms always would poll an idle broker 200 times a second (12% of a core
    here, for nothing): after a fetch that brought nothing, the consumer asks for one byte again, waiting up
    to `QUIET_FETCH`. On a real broker; the sizes are private attributes of aiokafka's fetcher, which a new
    aiokafka could stop reading."""
    topic = loop.run_until_complete(kafka_topic_factory(partitions=1))
    app = _fetching_app(tmp_path, loop, kafka_bootstrap)

    async def fetching() -> list[tuple[int, int, bool]]:
        """(bytes asked for, wait, brought records) of each fetch: a quiet second, then one record."""
        async with _recorded_fetches(app, kafka_bootstrap, topic) as (consumer, producer, fetches):
            tp = TopicPartition(topic, 0)
            await asyncio.sleep(1.0)  # a quiet second: how often is the broker asked?
            quiet = len(fetches)
            await producer.send_and_wait(topic, b"second", partition=0)
            records = await consumer.getmany(tp, timeout_ms=10_000)
            assert [r.value for r in records[tp]] == [b"second"]
            while len(fetches) < quiet + 2:  # the fetch that brought it, and the next
                await asyncio.sleep(0.01)
            return list(fetches)

    fetches = loop.run_until_complete(asyncio.wait_for(fetching(), 60))
    brought = next(i for i, (_, _, records) in enumerate(fetches) if records)
    assert brought <= 1 + 1000 // QUIET_FETCH[1] + 1, f"{brought} fetches in a quiet second"
    asked = [(size, wait) for size, wait, _ in fetches]
    assert all(each == QUIET_FETCH for each in asked[1 : brought + 1]), "after nothing, a long poll"
    assert asked[brought + 1] == BUSY_FETCH, "after records, more records briefly"
    assert BUSY_FETCH[0] > 1 and BUSY_FETCH[1] < QUIET_FETCH[1] <= 500


@pytest.mark.kafka
def test_no_long_poll_while_records_wait_to_be_taken(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, kafka_bootstrap: str, kafka_topic_factory: Any
) -> None:
    """A partition whose records wait to be taken is left out of the next fetch, and the broker answers one
    fetch at a time: a long poll on the quiet partition would hold back the busy one for 100 ms."""
    topic = loop.run_until_complete(kafka_topic_factory(partitions=2))
    app = _fetching_app(tmp_path, loop, kafka_bootstrap)

    async def fetching() -> list[tuple[int, int, bool]]:
        async with _recorded_fetches(app, kafka_bootstrap, topic) as (_, producer, fetches):
            await producer.send_and_wait(topic, b"busy", partition=0)  # and not taken
            while not any(brought for *_, brought in fetches):
                await asyncio.sleep(0.01)
            brought = len(fetches)
            while len(fetches) < brought + 3:  # partition 1 alone, quiet
                await asyncio.sleep(0.01)
            return fetches[brought:]

    after = loop.run_until_complete(asyncio.wait_for(fetching(), 60))
    assert [(size, wait) for size, wait, _ in after] == [BUSY_FETCH] * len(after)


def _fetching_app(tmp_path: Path, loop: asyncio.AbstractEventLoop, bootstrap: str) -> Any:
    config = StreamConfig(brokers=bootstrap, group_id="lean-fetch-test")
    return LeanApp("lean-fetch-test", autodiscover=False, loop=loop, **config.faust_settings(str(tmp_path)))


@contextlib.asynccontextmanager
async def _recorded_fetches(
    app: Any, bootstrap: str, topic: str
) -> AsyncIterator[tuple[Any, Any, list[tuple[int, int, bool]]]]:
    """The worker's consumer, assigned every partition of `topic` at its end, with the (bytes asked for,
    wait, brought records) of each of its fetches as they complete; and a producer."""
    consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    await consumer.start()
    fetcher = consumer._fetcher
    fetches: list[tuple[int, int, bool]] = []
    paced = fetcher._proc_fetch_request

    async def recorded(assignment: Any, node_id: int, request: Any) -> Any:
        brought = await paced(assignment, node_id, request)
        fetches.append((request._min_bytes, request._max_wait_ms, brought))
        return brought

    fetcher._proc_fetch_request = recorded
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        yield consumer, producer, fetches
    finally:
        await producer.stop()
        await consumer.stop()
