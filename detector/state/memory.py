"""The in-process store: plain dicts, for replay, evaluation and tests."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

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
from detector.windows import Window, WindowSet

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
        # Per dimension, per entity key: one record holding every window of the dimension (`WindowSet`).
        self._counters: dict[str, dict[str, list[int]]] = {dim: {} for dim in plan.windows}
        self._limits: dict[str, list[int]] = {}
        self._last_seen: dict[str, float] = {}
        self._distinct: dict[str, dict[str, float]] = {}
        self._records: dict[str, _Record] = {}
        self._expiry: list[tuple[float, str]] = []  # a heap: records do not arrive in expiry order
        self._passes: dict[str, dict[str, list[int]]] = {dim: {} for dim in plan.pass_windows}
        self._quarantines: dict[tuple[str, str], Quarantine] = {}
        every = [*plan.windows.values(), *plan.pass_windows.values()]
        widths = sorted({window.width for windows in every for window in windows})
        self._widths = widths

        def sets(windows: Mapping[str, tuple[Window, ...]]) -> dict[str, WindowSet[tuple[str, int]]]:
            return {
                dim: WindowSet(
                    ws, [(dim, w.seconds) for w in ws], [widths.index(w.width) for w in ws], plan.peaks
                )
                for dim, ws in windows.items()
            }

        self._by_dim = sets(plan.windows)
        self._pass_dims = sets(plan.pass_windows)
        self._counted = [(dim, self._counters[dim], window_set) for dim, window_set in self._by_dim.items()]
        self._limit: WindowSet[None] = WindowSet((plan.limit_window,), (None,), (0,))
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

        buckets = [int(ts / width) for width in self._widths]
        windows, peaks = counts.windows, counts.peaks
        for dim, counters, window_set in self._counted:
            key = keys.get(dim)
            if key is None:
                continue
            record = counters.get(key)
            if record is None:
                record = counters[key] = window_set.new()
            window_set.add(record, buckets, 1, 0, windows, peaks)

        for dim, window_set in self._pass_dims.items():
            key = keys.get(dim)
            if key is None:
                continue
            passes = self._passes[dim].get(key)
            if passes is None:
                for label in window_set.labels:
                    counts.passes[label] = 0
            else:
                read: dict[tuple[str, int], tuple[int, int]] = {}
                window_set.read(passes, buckets, read)
                for label, (passed, _) in read.items():
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
                limit = self._limits.get(number)
                if limit is None:
                    limit = self._limits[number] = self._limit.new()
                bucket = (self.plan.limit_window.bucket(ts),)
                used: dict[None, tuple[int, int]] = {}
                self._limit.read(limit, bucket, used)
                taken = used[None][0]
                counts.slot_taken = taken < self.plan.limit
                if counts.slot_taken:
                    self._limit.add(limit, bucket, 1, 0)
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
        buckets = [int(record.ts / width) for width in self._widths]
        for dim, key in zip(self._record_dims, record.keys, strict=True):
            window_set = self._by_dim.get(dim)
            if key is None or window_set is None:
                continue
            counters = self._counters[dim]
            entity = counters.get(key)
            if entity is None:
                entity = counters[key] = window_set.new()
            window_set.add(entity, buckets, 0, 1)
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
        buckets = [int(item.ts / width) for width in self._widths]
        for dim, key in zip(self._record_dims, record.keys, strict=True):
            window_set = self._pass_dims.get(dim)
            if key is None or window_set is None:
                continue
            passes = self._passes[dim]
            entity = passes.get(key)
            if entity is None:
                entity = passes[key] = window_set.new()
            added: dict[tuple[str, int], tuple[int, int]] = {}
            window_set.add(entity, buckets, 1, 0, added)
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
        buckets = [int(now / width) for width in self._widths]
        for by_dim, sets in ((self._counters, self._by_dim), (self._passes, self._pass_dims)):
            for dim, counters in by_dim.items():
                window_set = sets[dim]
                for key, record in list(counters.items()):
                    window_set.read(record, buckets)
                    if window_set.is_empty(record):
                        del counters[key]
        limit_bucket = (self.plan.limit_window.bucket(now),)
        for number, limit in list(self._limits.items()):
            self._limit.read(limit, limit_bucket)
            if self._limit.is_empty(limit):
                del self._limits[number]
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
