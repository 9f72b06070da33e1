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
* `new_event_loop`: uvloop, whose futures, tasks and sockets cost a fraction of asyncio's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.sensors import Monitor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka


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


class LeanConsumer(faust_aiokafka.Consumer):
    """Delivers without the per-message race when the delivery cannot block (see the module's docstring)."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - the loop of a live worker
        """Faust 0.15's loop (`faust.transport.consumer.Consumer._drain_messages`), delivering a message at
        once when `_can_deliver_now` says the delivery cannot block, and racing it with `suspend_flow`
        as Faust does otherwise."""
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        can_deliver_now = self._can_deliver_now
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if not can_deliver_now(tp):
                                # The agent is behind: wait (a rebalance cuts it short) until the queues
                                # are half empty, so that the next messages go at once again rather
                                # than each in a race of its own.
                                await self.wait_first(self._room(tp), self.suspend_flow.wait())
                            if can_deliver_now(tp):
                                await callback(message)
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

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


class LeanTransport(faust_aiokafka.Transport):
    Consumer = LeanConsumer


class LeanApp(faust.App):
    """A Faust app on `LeanTransport`; give it ``Monitor=QuietMonitor`` (the worker's settings do)."""

    def _new_transport(self) -> Any:
        return LeanTransport(self.conf.broker_consumer, self)
