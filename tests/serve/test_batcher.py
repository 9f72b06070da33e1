"""The micro-batcher on a real engine (memory store): concurrent calls share one engine call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from detector.engine import Engine, Result
from detector.events import BadEvent, Decision, Event, OtpFeedback, OtpRequest
from detector.serve.batcher import BatcherStopped, MicroBatcher
from detector.wiring import build_engine


class Recording:
    """A real engine that notes the size of every call, and fails on request ids starting with `boom`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[int] = []

    async def process(
        self, events: Sequence[Event | BadEvent], references: Sequence[float | None] | None = None
    ) -> list[Result]:
        self.calls.append(len(events))
        if any(isinstance(e, OtpRequest) and e.request_id.startswith("boom") for e in events):
            raise RuntimeError("engine failure")
        return await self.engine.process(events, references)


def request(request_id: str, phone: str = "+447400123456") -> OtpRequest:
    return OtpRequest(request_id=request_id, ts=time.time(), phone=phone, client_ip="203.0.113.5")


@pytest.fixture
def engine() -> Recording:
    return Recording(build_engine(None, "memory://"))


async def test_calls_queued_together_share_one_engine_call_in_order(engine: Recording) -> None:
    batcher = MicroBatcher(engine, max_batch=256)
    batcher.start()
    now = time.time()
    futures = [batcher.submit(request(f"r{n}", f"+4474001234{n:02d}"), now) for n in range(10)]
    futures.append(batcher.submit(OtpFeedback(request_id="r3", ts=now, outcome="verified"), now))
    results = await asyncio.gather(*futures)
    await batcher.stop()
    assert engine.calls == [11]
    assert [r.request_id for r in results[:10] if isinstance(r, Decision)] == [f"r{n}" for n in range(10)]
    assert results[10] == "applied"  # the feedback saw the request decided before it in the same batch


async def test_a_batch_is_cut_at_max_batch(engine: Recording) -> None:
    batcher = MicroBatcher(engine, max_batch=4)
    batcher.start()
    await asyncio.gather(*(batcher.submit(request(f"r{n}"), time.time()) for n in range(10)))
    await batcher.stop()
    assert engine.calls == [4, 4, 2]


async def test_a_lone_call_is_decided_at_once(engine: Recording) -> None:
    batcher = MicroBatcher(engine)
    batcher.start()
    for n in range(3):
        result = await batcher.submit(request(f"r{n}"), time.time())
        assert isinstance(result, Decision)
    await batcher.stop()
    assert engine.calls == [1, 1, 1]


async def test_an_event_the_engine_fails_on_fails_alone(engine: Recording) -> None:
    batcher = MicroBatcher(engine)
    batcher.start()
    now = time.time()
    good, bad, other = (batcher.submit(request(i), now) for i in ("ok-1", "boom-1", "ok-2"))
    assert isinstance(await good, Decision) and isinstance(await other, Decision)
    with pytest.raises(RuntimeError):
        await bad
    await batcher.stop()


async def test_stop_decides_what_is_queued_then_refuses(engine: Recording) -> None:
    batcher = MicroBatcher(engine)
    batcher.start()
    queued = [batcher.submit(request(f"r{n}"), time.time()) for n in range(3)]
    await batcher.stop()
    assert all(isinstance(f.result(), Decision) for f in queued)
    with pytest.raises(BatcherStopped):
        batcher.submit(request("late"), time.time())


class Gated(Recording):
    """Holds the first engine call until released, as a store that is slow to answer would."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.gate = asyncio.Event()

    async def process(
        self, events: Sequence[Event | BadEvent], references: Sequence[float | None] | None = None
    ) -> list[Result]:
        if not self.calls:
            self.calls.append(len(events))
            await self.gate.wait()
            self.calls.pop()
            self.calls.insert(0, len(events))
            return await self.engine.process(events, references)
        return await super().process(events, references)


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_max_in_flight_lets_a_batch_start_while_another_waits(in_flight: int) -> None:
    engine = Gated(build_engine(None, "memory://"))
    batcher = MicroBatcher(engine, max_in_flight=in_flight)
    batcher.start()
    first = batcher.submit(request("r0"), time.time())
    await asyncio.sleep(0)  # the batcher takes r0 and waits on the store
    second = batcher.submit(request("r1", "+447400123457"), time.time())
    done, _ = await asyncio.wait({second}, timeout=0.5)
    started_meanwhile = bool(done)
    engine.gate.set()
    assert isinstance(await first, Decision) and isinstance(await second, Decision)
    await batcher.stop()
    assert started_meanwhile == (in_flight == 2)
    assert engine.calls == [1, 1]
