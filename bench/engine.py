"""The engine's own Python per event: `Engine.process` on a store that replays recorded answers.

python -m bench.engine [--requests N] [--runs R]

The in-memory store answers the stream once and its answers are recorded; each timed run then decides the
same batches on a fresh engine whose store hands back copies of those answers and keeps nothing. What is
left is the engine: subject, rules, decision, the redelivery encoding. Best of R runs, per event, at
batch 1000 and at batch 1.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import time
from collections.abc import Sequence

from bench.streams import mixed_stream
from detector.engine import Engine
from detector.events import BadEvent, Decision, Event, encode
from detector.hashing import KeyedHasher, load_hash_key
from detector.policy import load_policy
from detector.replay import parse_lines
from detector.scoring import counter_plan
from detector.state.base import (
    Answer,
    AnswersReady,
    CounterPlan,
    Offence,
    Quarantine,
    Remembered,
    Store,
    StoreLifecycle,
    Update,
)
from detector.state.open import open_store
from detector.wiring import open_ip_classifier, tune_gc


class _Recorded(StoreLifecycle):
    """The answers a real store gave, batch by batch, handed back in the same order (copies: the engine
    writes into counts)."""

    bounds_its_calls = True

    def __init__(self, plan: CounterPlan, answers: list[Sequence[Answer | None]]) -> None:
        self.plan = plan
        self._answers = answers
        self._next = 0

    async def apply(
        self, batch: Sequence[Update], on_answers: AnswersReady | None = None
    ) -> Sequence[Answer | None]:
        answers = self._answers[self._next]
        self._next += 1
        return answers

    async def remember(self, decisions: Sequence[Remembered], offences: Sequence[Offence] = ()) -> None:
        return None

    async def quarantines(self, now: float) -> list[Quarantine]:
        return []

    async def lift(self, dimension: str, key: str) -> bool:
        return False

    async def ping(self) -> None:
        return None


class _Recording(StoreLifecycle):
    """A store whose answers are kept, batch by batch, for `_Recorded` to hand back."""

    bounds_its_calls = True

    def __init__(self, store: Store) -> None:
        self.plan = store.plan
        self._store = store
        self.answers: list[Sequence[Answer | None]] = []

    async def apply(
        self, batch: Sequence[Update], on_answers: AnswersReady | None = None
    ) -> Sequence[Answer | None]:
        answers = await self._store.apply(batch)
        self.answers.append(copy.deepcopy(answers))
        return answers

    async def remember(self, decisions: Sequence[Remembered], offences: Sequence[Offence] = ()) -> None:
        await self._store.remember(decisions, offences)

    async def quarantines(self, now: float) -> list[Quarantine]:
        return await self._store.quarantines(now)

    async def lift(self, dimension: str, key: str) -> bool:
        return await self._store.lift(dimension, key)

    async def ping(self) -> None:
        await self._store.ping()


async def _decide(engine: Engine, events: list[Event | BadEvent], batch_size: int) -> None:
    for start in range(0, len(events), batch_size):
        for result in await engine.process(events[start : start + batch_size]):
            if isinstance(result, Decision):
                encode(result)


def engine_alone(events: list[Event | BadEvent], batch_size: int, runs: int) -> float:
    """Best CPU seconds per event of `runs` runs of the engine on recorded answers."""
    policy = load_policy(None)
    hasher, ips = KeyedHasher(load_hash_key(required=False)), open_ip_classifier(policy.lists)
    recording = _Recording(open_store("memory:", counter_plan(policy), policy))
    asyncio.run(_decide(Engine(policy, recording, hasher, ips), events, batch_size))
    best = float("inf")
    for _ in range(runs):
        replaying = _Recorded(recording.plan, copy.deepcopy(recording.answers))
        engine = Engine(policy, replaying, hasher, open_ip_classifier(policy.lists))
        started = time.process_time()
        asyncio.run(_decide(engine, events, batch_size))
        best = min(best, time.process_time() - started)
    return best / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lines = mixed_stream(args.requests)
    events = [line.event for line in parse_lines(enumerate(lines, start=1))]
    tune_gc()
    print(f"engine alone on recorded store answers: {len(events):,} events ({args.requests:,} requests)")
    for batch_size in (1000, 1):
        per_event = engine_alone(events, batch_size, args.runs)
        print(f"  batch {batch_size:>4}: {per_event * 1e6:6.2f} µs an event (CPU, best of {args.runs})")


if __name__ == "__main__":
    main()
