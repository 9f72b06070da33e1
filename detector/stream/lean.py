"""Faust, minus the per-message work the worker does not need (issue 14). Used by the worker's app and by the
Faust passthrough of `bench.pipeline`, so that the bench's ceiling is the same Faust the worker runs.

* `LeanConsumer`: Faust's aiokafka consumer hands each fetched message to the conductor through
  ``Service.wait_first(deliver(message), suspend_flow.wait())``, which creates four tasks and an
  ``asyncio.wait`` per message, so that a rebalance can cut short a delivery that blocks. A delivery that
  cannot block — flow not suspended, no rebalance under way, Faust's producer buffer not over its limit,
  room in every subscribed queue — completes without yielding to the event loop, so nothing can happen
  while it runs: `LeanConsumer` awaits it directly and keeps the race for the others. When the agent is
  behind and its queue full, it waits until the queue is half empty (racing a rebalance once), rather than
  racing each message into the one free place.
* `QuietMonitor`: Faust's default sensor keeps per-message timings and counts for its web views, which the
  worker disables; the worker's own Prometheus metrics count per batch.
* `LeanProducerBuffer`, `LeanApp.create_event`: Faust reads two settings for every message it hands over
  (is its producer threaded, which class is an event), each through a descriptor and a registry lookup.
* `new_event_loop`: uvloop, whose futures, tasks and sockets cost a fraction of asyncio's.
* `LeanConsumerThread`: Faust asks the broker for records as soon as there is one byte to fetch, so at a
  few thousand events a second its consumer thread fetches a handful of records at a time, and decoding
  each fetch response in Python costs that thread (and the GIL it shares with the agent) more than the
  records themselves. While records come it asks for more (`BUSY_FETCH`, 64 KiB within 5 ms); after a
  fetch that brought none, for one byte within 100 ms (`QUIET_FETCH`), so that an idle worker does not
  poll the broker 200 times a second.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import Any, cast

import faust
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from mode.services import WaitResults


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The worker's event loop (uvloop); threads Faust starts for its consumer get one too."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


class QuietMonitor(Monitor):
    """Faust's monitor without its per-message and per-event bookkeeping (commits, rebalances and the rest
    are still recorded)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: dict[str, Any] | None = None
    ) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass


# (bytes asked for, longest wait in ms) of a fetch. While records come, a fetch waits for 64 KiB or 5 ms,
# whichever comes first, so a busy topic is fetched in large responses; once a fetch brought nothing, the
# next asks for one byte and waits up to 100 ms, so an idle broker is not polled 200 times a second and the
# first record after a quiet spell comes at once.
BUSY_FETCH = (64 * 1024, 5)
QUIET_FETCH = (1, 100)


class LeanConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, its fetches paced by `BUSY_FETCH` and `QUIET_FETCH`."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes aiokafka no fetch sizes of its own (it fixes fetch_max_wait_ms at 1.5 s): set them
        # before the consumer starts, which is when aiokafka hands them to its fetcher.
        consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = BUSY_FETCH
        start = consumer.start

        async def start_pacing_fetches() -> None:
            await start()
            _pace_fetches(consumer._fetcher)

        consumer.start = start_pacing_fetches
        return consumer


def _pace_fetches(fetcher: Any) -> None:
    """Each of `fetcher`'s fetch requests asks as `QUIET_FETCH` if the one before brought no records and
    none wait to be taken, else as `BUSY_FETCH` (aiokafka reads the two attributes as it builds each
    request).

    Records waiting to be taken mean partitions left out of the next request (aiokafka fetches a partition
    again once its records are taken), and a broker answers one fetch at a time per consumer: a long poll
    for the quiet partitions would hold back the busy ones for up to its wait."""
    fetch = fetcher._proc_fetch_request

    async def paced(assignment: Any, node_id: int, request: Any) -> bool:
        brought = await fetch(assignment, node_id, request)
        quiet = not brought and not fetcher._records
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = QUIET_FETCH if quiet else BUSY_FETCH
        return bool(brought)

    fetcher._proc_fetch_request = paced


class LeanConsumer(faust_aiokafka.Consumer):
    """Delivers without the per-message race when the delivery cannot block (see the module's docstring).

    Faust's drain loop stays as it is; the consumer intercepts the two calls it makes per message:
    ``callback(message)`` (to learn the message's partition) and
    ``wait_first(delivery, suspend_flow.wait())``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        deliver = self.callback
        self._delivery: tuple[Awaitable[Any], Any] | None = None

        def delivering(message: Any) -> Awaitable[Any]:
            delivery = deliver(message)
            self._delivery = (delivery, message.tp)
            return delivery

        self.callback = delivering

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return LeanConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        pending, self._delivery = self._delivery, None
        if pending is None or not coros or coros[0] is not pending[0]:
            return await super().wait_first(*coros, timeout=timeout)
        delivery, tp = pending
        rest = coros[1:]
        if not self._can_deliver_now(tp):
            # The agent is behind: wait (a rebalance cuts it short) until the queues are half empty, so
            # that the next messages go at once again rather than each in a race of its own.
            await super().wait_first(self._room(tp), *rest)
            rest = (self.suspend_flow.wait(),)
        if not self._can_deliver_now(tp):
            return await super().wait_first(delivery, *rest)
        for other in rest:
            if inspect.iscoroutine(other):
                other.close()  # never started: nothing to cancel
        return WaitResults([delivery], [await delivery], False)

    async def _room(self, tp: Any) -> None:
        """Until no queue subscribed to `tp` is more than half full (unbounded ones never are)."""
        while any(0 < q.maxsize // 2 < q.qsize() for q in (c.queue for c in self._channels(tp))):
            await asyncio.sleep(0.002)

    def _channels(self, tp: Any) -> Any:
        """The channels (topics) subscribed to `tp`, as the conductor's handler knows them; () if none."""
        handler = self.app.topics._tp_to_callback.get(tp)  # type: ignore[attr-defined]
        return getattr(handler, "channels", ())

    def _can_deliver_now(self, tp: Any) -> bool:
        """The conductor's delivery of a message of `tp` completes without waiting: flow not suspended,
        no rebalance, no other delivery holding the conductor's lock, Faust's producer buffer within its
        limit, room in the queue of every subscriber."""
        app = self.app
        if self.suspend_flow.is_set() or not app.flow_control.is_active():
            return False
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False
        conductor: Any = app.topics  # faust's Conductor; its ConductorT type lacks the callback map
        if conductor._tp_to_callback_lock.locked():
            return False
        channels = self._channels(tp)
        return bool(channels) and not any(channel.queue.full() for channel in channels)


class LeanProducerBuffer(ProducerBuffer):
    """Faust's producer buffer, its size read without two settings lookups: the conductor asks for it with
    every message (``wait_until_ebb``), and so does `LeanConsumer`."""

    @property
    def size(self) -> int:
        threaded = self.__dict__.get("_threaded")
        if threaded is None:
            threaded = self.__dict__["_threaded"] = bool(cast(Any, self.app).conf.producer_threaded)
        queue = self.queue if threaded else self.pending
        return queue.qsize() if queue is not None else 0


class LeanProducer(faust_aiokafka.Producer):
    """Faust's producer, with `LeanProducerBuffer` (the worker's outputs go through `KafkaOutput`; Faust's
    producer stays idle, but the conductor still asks its buffer's size)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer.__class__ = LeanProducerBuffer  # the same object and state, a cheaper `size`


class LeanTransport(faust_aiokafka.Transport):
    Consumer = LeanConsumer
    Producer = LeanProducer


class LeanApp(faust.App):
    """A Faust app on `LeanTransport`; give it ``Monitor=QuietMonitor`` (the worker's settings do)."""

    def _new_transport(self) -> Any:
        return LeanTransport(self.conf.broker_consumer, self)

    def create_event(self, key: Any, value: Any, headers: Any, message: Any) -> Any:
        """Faust's, without a settings lookup per message for the event class."""
        event_class: Any = self.__dict__.get("_event_class")
        if event_class is None:
            event_class = self.__dict__["_event_class"] = self.conf.Event
        return event_class(self, key, value, headers, message)
