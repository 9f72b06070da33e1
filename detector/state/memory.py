"""The in-process store: plain dicts, for replay, evaluation and tests."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import msgspec

from detector.state.base import (
    DISTINCT_DIMENSION,
    LIMIT_DIMENSION,
    Answer,
    ChallengeAnswer,
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
from detector.windows import tables

_SWEEP_EVERY = 200_000


class _Record(msgspec.Struct, gc=False):  # no cycles: the collector need not walk a record per request
    ts: float
    keys: tuple[str | None, ...]  # the entity key of each of the plan's record dimensions, in order
    fingerprint: str = ""
    resolved: bool = False
    decision: bytes | None = None
    challenge_expires: float | None = None  # an open challenge (event time), until its result or expiry
    challenge_done: bool = False


class MemoryStore(StoreLifecycle):
    def __init__(self, plan: CounterPlan) -> None:
        self.plan = plan
        # Every window of every entity, one record per entity and dimension (the compiled core).
        self._counters = tables(plan.windows, plan.peaks)
        self._passes = tables(plan.pass_windows)
        self._limits = tables({LIMIT_DIMENSION: (plan.limit_window,)})
        self._limit_label = (LIMIT_DIMENSION, plan.limit_window.seconds)
        self._last_seen: dict[str, float] = {}
        self._distinct: dict[str, dict[str, float]] = {}
        self._records: dict[str, _Record] = {}
        self._expiry: list[tuple[float, str]] = []  # a heap: records do not arrive in expiry order
        self._quarantines: dict[tuple[str, str], Quarantine] = {}
        self._record_dims = plan.record_dimensions
        self._since_sweep = 0

    async def apply(self, batch: Sequence[Update]) -> list[Answer]:
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
            record = self._records.get(entry.request_id)
            if record is not None and record.decision is None:
                record.decision = pack_decision(entry.decision)
                record.challenge_expires = entry.challenge_expires
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
        ts = item.ts
        if self._expiry and self._expiry[0][0] <= ts:
            self._expire(ts)
        known = self._records.get(item.request_id)
        counts = Counts()
        keys = item.keys
        if known is None:
            counted = tuple(map(keys.get, self._record_dims))
            self._records[item.request_id] = _Record(ts, counted, item.fingerprint)
            heapq.heappush(self._expiry, (ts + self.plan.record_ttl, item.request_id))
        elif _same_request(known.fingerprint, item.fingerprint):
            stored = known.decision and unpack_decision(known.decision)
            return Counts(duplicate=True, stored_decision=stored)
        else:
            counts.reused = True

        self._counters.add(keys, ts, 1, 0, counts.windows, counts.peaks)
        if self.plan.pass_windows:
            passes: dict[tuple[str, int], tuple[int, int]] = {}
            self._passes.read(keys, ts, passes)
            for label, (passed, _) in passes.items():
                counts.passes[label] = passed

        if self._quarantines:
            for dim in self.plan.quarantine_dimensions:
                key = keys.get(dim)
                quarantine = self._quarantines.get((dim, key)) if key is not None else None
                if quarantine is not None:
                    counts.quarantines[dim] = (quarantine.until, quarantine.offences)

        number = keys.get(LIMIT_DIMENSION)
        if number is not None:
            counts.previous_ts = self._last_seen.get(number)
            self._last_seen[number] = ts if counts.previous_ts is None else max(ts, counts.previous_ts)
            if item.take_slot and not counts.reused:
                used: dict[tuple[str, int], tuple[int, int]] = {}
                self._limits.read(keys, ts, used)
                taken = used[self._limit_label][0]
                counts.slot_taken = taken < self.plan.limit
                if counts.slot_taken:
                    self._limits.add(keys, ts, 1, 0)
                counts.slot_count = taken + counts.slot_taken

        address = keys.get(DISTINCT_DIMENSION)
        if address is not None and item.distinct_member is not None:
            members = self._distinct.setdefault(address, {})
            members[item.distinct_member] = max(ts, members.get(item.distinct_member, ts))
            horizon = ts - self.plan.distinct_window
            if min(members.values()) <= horizon:
                for member in [m for m, seen in members.items() if seen <= horizon]:
                    del members[member]
            counts.distinct = len(members)

        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY:
            self._sweep(ts)
        return counts

    def _feedback(self, item: FeedbackUpdate) -> FeedbackStatus:
        record = self._records.get(item.request_id)
        if record is None:
            return "unknown"
        if not item.resolved:
            return "failed"
        if record.resolved:
            return "duplicate"
        record.resolved = True
        self._counters.add(dict(zip(self._record_dims, record.keys, strict=True)), record.ts, 0, 1)
        return "applied"

    def _challenge(self, item: ChallengeUpdate) -> ChallengeAnswer:
        record = self._records.get(item.request_id)
        if record is None or record.challenge_expires is None:
            return ChallengeAnswer("unknown")
        if item.fingerprint and not _same_request(record.fingerprint, item.fingerprint):
            return ChallengeAnswer("mismatch")
        if record.challenge_done:
            return ChallengeAnswer("duplicate")
        record.challenge_done = True
        if item.ts > record.challenge_expires:
            return ChallengeAnswer("expired")
        answer = ChallengeAnswer("applied")
        if not item.passed:
            return answer
        added: dict[tuple[str, int], tuple[int, int]] = {}
        keys = dict(zip(self._record_dims, record.keys, strict=True))
        self._passes.add(keys, item.ts, 1, 0, added)
        for label, (passed, _) in added.items():
            answer.passes[label] = passed
        return answer

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, request_id = heapq.heappop(expiry)
            record = self._records.get(request_id)
            if record is not None and record.ts + self.plan.record_ttl <= now:  # not a newer record of the id
                del self._records[request_id]

    def _sweep(self, now: float) -> None:
        """Forget counters whose every bucket has left their window, so memory stays bounded."""
        self._since_sweep = 0
        for counters in (self._counters, self._passes, self._limits):
            counters.sweep(now)
        forget = self.plan.quarantine_forget
        for slot in [slot for slot, q in self._quarantines.items() if q.until + forget <= now]:
            del self._quarantines[slot]
        horizon = now - self.plan.record_ttl
        for number in [n for n, seen in self._last_seen.items() if seen <= horizon]:
            del self._last_seen[number]
        for address in [
            a
            for a, members in self._distinct.items()
            if max(members.values()) <= now - self.plan.distinct_window
        ]:
            del self._distinct[address]


def _same_request(recorded: str, seen: str) -> bool:
    """Records written without a fingerprint (older versions, tests) match any request of their id."""
    return not recorded or recorded == seen
