"""The in-process store, for replay, evaluation, tests and a worker's fallback while Redis is away.

Its state is the compiled core's `MemoryCore` (core/src/memory.rs): request records, every entity's
windows, send limits, last request times and distinct members. Quarantines are kept here: few, and rarely
touched.
"""

from __future__ import annotations

from collections.abc import Sequence

from detector._core import MemoryCore
from detector.state.base import (
    DISTINCT_DIMENSION,
    LIMIT_DIMENSION,
    Answer,
    AnswersReady,
    ChallengeAnswer,
    ChallengeState,
    ChallengeUpdate,
    CounterPlan,
    Counts,
    FeedbackStatus,
    FeedbackUpdate,
    Observation,
    Offence,
    Quarantine,
    Remembered,
    StoreLifecycle,
    Update,
)
from detector.state.packing import pack_decision, unpack_decision
from detector.windows import Window

_SWEEP_EVERY = 200_000
_DUPLICATE, _REUSED = 1, 2  # what MemoryCore.observe found, besides a new request (0)
_FEEDBACK: tuple[FeedbackStatus, ...] = ("unknown", "failed", "duplicate", "applied")
_CHALLENGE: tuple[ChallengeState, ...] = ("unknown", "unknown", "duplicate", "applied", "expired", "mismatch")


def _spec(windows: dict[str, tuple[Window, ...]]) -> list[tuple[str, list[tuple[int, int]]]]:
    return [(dim, [(w.seconds, w.buckets) for w in ws]) for dim, ws in windows.items()]


class MemoryStore(StoreLifecycle):
    bounds_its_calls = True  # it never waits

    def __init__(self, plan: CounterPlan) -> None:
        self.plan = plan
        self._core = MemoryCore(
            _spec(dict(plan.windows)),
            sorted(plan.peaks),
            _spec(dict(plan.pass_windows)),
            LIMIT_DIMENSION,
            (plan.limit_window.seconds, plan.limit_window.buckets),
            plan.limit,
            DISTINCT_DIMENSION,
            plan.distinct_window,
            list(plan.record_dimensions),
            plan.record_ttl,
        )
        self._quarantines: dict[tuple[str, str], Quarantine] = {}
        self._since_sweep = 0

    async def apply(self, batch: Sequence[Update], on_answers: AnswersReady | None = None) -> list[Answer]:
        answers: list[Answer] = []
        for item in batch:
            if isinstance(item, Observation):
                answers.append(self._observe(item))
            elif isinstance(item, FeedbackUpdate):
                answers.append(self._feedback(item))
            else:
                answers.append(self._challenge(item))
        return answers

    async def remember(self, decisions: Sequence[Remembered], offences: Sequence[Offence] = ()) -> None:
        for entry in decisions:
            self._core.remember(entry.request_id, pack_decision(entry.decision), entry.challenge_expires)
        for offence in offences:
            self._offend(offence)

    async def quarantines(self, now: float) -> list[Quarantine]:
        return sorted((q for q in self._quarantines.values() if q.until > now), key=lambda q: q.since)

    async def lift(self, dimension: str, key: str) -> bool:
        return self._quarantines.pop((dimension, key), None) is not None

    def _offend(self, offence: Offence) -> None:
        slot = (offence.dimension, offence.key)
        known = self._quarantines.get(slot)
        following = self.plan.next_quarantine((known.until, known.offences) if known else None, offence.ts)
        if following is not None:
            until, offences = following
            self._quarantines[slot] = Quarantine(
                offence.dimension, offence.key, offence.label, offence.ts, until, offences
            )

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def _observe(self, item: Observation) -> Counts:
        keys = item.keys
        found, stored, previous, taken, used, distinct, windows, peaks, passes = self._core.observe(
            item.request_id, item.ts, keys, item.fingerprint, item.take_slot, item.distinct_member
        )
        if found == _DUPLICATE:
            return Counts(duplicate=True, stored_decision=stored and unpack_decision(stored))
        reused = found == _REUSED
        counts = Counts(windows, peaks, taken, used, previous, distinct, reused=reused, passes=passes)
        if self._quarantines:
            for dim in self.plan.quarantine_dimensions:
                key = keys.get(dim)
                quarantine = self._quarantines.get((dim, key)) if key is not None else None
                if quarantine is not None:
                    counts.quarantines[dim] = (quarantine.until, quarantine.offences)
        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY:
            self._sweep(item.ts)
        return counts

    def _feedback(self, item: FeedbackUpdate) -> FeedbackStatus:
        return _FEEDBACK[self._core.feedback(item.request_id, item.resolved)]

    def _challenge(self, item: ChallengeUpdate) -> ChallengeAnswer:
        found, passes = self._core.challenge(item.request_id, item.ts, item.fingerprint, item.passed)
        return ChallengeAnswer(_CHALLENGE[found], passes)

    def _sweep(self, now: float) -> None:
        """Forget what has left every window, so memory stays bounded."""
        self._since_sweep = 0
        self._core.sweep(now)
        forget = self.plan.quarantine_forget
        for slot in [slot for slot, q in self._quarantines.items() if q.until + forget <= now]:
            del self._quarantines[slot]
