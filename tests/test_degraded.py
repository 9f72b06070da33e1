"""The degrading store when the shared store fails in the middle of a batch: a flight cut short after some of
its chunks answered (the connection dropped, the deadline passed)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from detector.engine import Engine
from detector.events import Decision, parse_event
from detector.hashing import KeyedHasher
from detector.scoring import counter_plan
from detector.state.base import (
    Answer,
    AnswersReady,
    CounterPlan,
    Counts,
    Observation,
    StoreUnavailable,
    Update,
)
from detector.state.degraded import DegradingStore
from detector.state.memory import MemoryStore
from detector.windows import Window
from tests.factories import codes, policy, request

T0 = 1_800_000_000.0


class CutShort(MemoryStore):
    """A shared store whose flights fail after handing over the answers of their first `answered` items
    (None: it answers whole batches)."""

    def __init__(self, plan: CounterPlan, answered: int | None) -> None:
        super().__init__(plan)
        self.answered = answered

    async def apply(self, batch: Sequence[Update], on_answers: AnswersReady | None = None) -> list[Answer]:
        if self.answered is None:
            return await super().apply(batch, on_answers)
        answers = await super().apply(batch[: self.answered])
        if on_answers is not None and answers:
            on_answers(answers)
        raise StoreUnavailable("the connection dropped in the middle of a flight")


def _plan() -> CounterPlan:
    return CounterPlan(
        windows={"ip": (Window(600, 4),)},
        peaks=frozenset(),
        limit_window=Window(90, 3),
        limit=100,
        distinct_window=200,
        record_ttl=100_000,
    )


def _observations(count: int, first: int = 0) -> list[Update]:
    return [Observation(f"r{n}", T0 + n, {"ip": "one address"}) for n in range(first, first + count)]


async def test_what_the_shared_store_handed_over_stands_and_only_the_rest_is_counted_locally() -> None:
    plan = _plan()
    slot = plan.slots()[("ip", 600)]
    shared = CutShort(plan, answered=4)
    store = DegradingStore(shared)
    parts: list[Sequence[Answer]] = []

    answers = await store.apply(_observations(10), parts.append)

    assert parts and [answer for part in parts for answer in part] == answers[:4]
    assert len(answers) == 10 and all(isinstance(answer, Counts) for answer in answers)
    counts = [answer for answer in answers if isinstance(answer, Counts)]
    assert [c.degraded for c in counts] == [False] * 4 + [True] * 6
    assert [c.windows[slot] for c in counts] == [(n, 0) for n in range(1, 5)] + [(n, 0) for n in range(1, 7)]
    # The local store saw the six it answered, not the four the shared store had counted.
    shared.answered = 0
    (after,) = await store.apply(_observations(1, first=10))
    assert isinstance(after, Counts) and after.degraded and after.windows[slot] == (7, 0)


async def test_the_engine_decides_each_request_once_on_whichever_store_counted_it() -> None:
    pol = policy(state={"on_error": "degrade"})
    shared = CutShort(counter_plan(pol), answered=3)
    clock = [0.0]
    store = DegradingStore(shared, clock=lambda: clock[0])
    engine = Engine(pol, store, KeyedHasher(b"a-cut-flight-test-key-8d1e"))
    events = [request(request_id=f"q{n}", ts=T0 + n, phone=f"+4474005{n:05d}") for n in range(8)]
    lines = [orjson.dumps(event) for event in events]

    first = await engine.process([parse_event(line) for line in lines])

    assert [d.request_id for d in first if isinstance(d, Decision)] == [e["request_id"] for e in events]
    degraded = ["state_degraded" in codes(d) for d in first if isinstance(d, Decision)]
    assert degraded == [False] * 3 + [True] * 5
    # The three the shared store counted keep their decisions there: their redelivery gets them back.
    shared.answered, clock[0] = None, 10.0  # answering again, and its backoff is over
    again = await engine.process([parse_event(line) for line in lines[:3]])
    assert again == first[:3]
