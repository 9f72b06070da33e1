"""The in-process store: plain dicts, for replay, evaluation and tests."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from detector.state.base import (
    DISTINCT_DIMENSION,
    LIMIT_DIMENSION,
    CounterPlan,
    Counts,
    FeedbackStatus,
    FeedbackUpdate,
    Observation,
)
from detector.windows import BucketCounter

_SWEEP_EVERY = 200_000


@dataclass(slots=True)
class _Record:
    ts: float
    keys: dict[str, str]
    resolved: bool = False
    decision: bytes | None = None


class MemoryStore:
    def __init__(self, plan: CounterPlan) -> None:
        self.plan = plan
        self._counters: dict[tuple[str, str, int], BucketCounter] = {}
        self._limits: dict[str, BucketCounter] = {}
        self._last_seen: dict[str, float] = {}
        self._distinct: dict[str, dict[str, float]] = {}
        self._records: dict[str, _Record] = {}
        self._expiry: deque[tuple[float, str]] = deque()
        self._windows = [(dim, window) for dim, windows in plan.windows.items() for window in windows]
        self._since_sweep = 0

    async def apply(self, batch: Sequence[Observation | FeedbackUpdate]) -> list[Counts | FeedbackStatus]:
        return [
            self._observe(item) if isinstance(item, Observation) else self._feedback(item) for item in batch
        ]

    async def remember(self, decisions: Sequence[tuple[str, float, bytes]]) -> None:
        for request_id, _ts, decision in decisions:
            record = self._records.get(request_id)
            if record is not None and record.decision is None:
                record.decision = decision

    async def close(self) -> None:
        return None

    def _observe(self, item: Observation) -> Counts:
        self._expire(item.ts)
        known = self._records.get(item.request_id)
        if known is not None:
            return Counts(duplicate=True, stored_decision=known.decision)
        self._records[item.request_id] = _Record(item.ts, item.keys)
        self._expiry.append((item.ts + self.plan.record_ttl, item.request_id))

        counts = Counts()
        ts = item.ts
        for dim, window in self._windows:
            key = item.keys.get(dim)
            if key is None:
                continue
            counter = self._counter(dim, key, window.seconds, window)
            counter.add(ts, requests=1)
            counts.windows[(dim, window.seconds)] = counter.read(ts)
            if (dim, window.seconds) in self.plan.peaks:
                counts.peaks[(dim, window.seconds)] = counter.peak_verified()

        number = item.keys.get(LIMIT_DIMENSION)
        if number is not None:
            counts.previous_ts = self._last_seen.get(number)
            self._last_seen[number] = ts if counts.previous_ts is None else max(ts, counts.previous_ts)
            if item.take_slot:
                limit = self._limits.get(number)
                if limit is None:
                    limit = self._limits[number] = BucketCounter(self.plan.limit_window)
                used, _ = limit.read(ts)
                counts.slot_taken = used < self.plan.limit
                if counts.slot_taken:
                    limit.add(ts, requests=1)
                counts.slot_count = used + counts.slot_taken

        address = item.keys.get(DISTINCT_DIMENSION)
        if address is not None and item.distinct_member is not None:
            members = self._distinct.setdefault(address, {})
            members[item.distinct_member] = max(ts, members.get(item.distinct_member, ts))
            horizon = ts - self.plan.distinct_window
            for member in [m for m, seen in members.items() if seen <= horizon]:
                del members[member]
            counts.distinct = len(members)

        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY:
            self._sweep(ts)
        return counts

    def _counter(self, dim: str, key: str, seconds: int, window: object) -> BucketCounter:
        slot = (dim, key, seconds)
        counter = self._counters.get(slot)
        if counter is None:
            counter = self._counters[slot] = BucketCounter(window)  # type: ignore[arg-type]
        return counter

    def _feedback(self, item: FeedbackUpdate) -> FeedbackStatus:
        record = self._records.get(item.request_id)
        if record is None:
            return "unknown"
        if not item.resolved:
            return "failed"
        if record.resolved:
            return "duplicate"
        record.resolved = True
        for dim, window in self._windows:
            key = record.keys.get(dim)
            if key is not None:
                self._counter(dim, key, window.seconds, window).add(record.ts, verified=1)
        return "applied"

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, request_id = expiry.popleft()
            self._records.pop(request_id, None)

    def _sweep(self, now: float) -> None:
        """Forget counters whose every bucket has left their window, so memory stays bounded."""
        self._since_sweep = 0
        for slot, counter in list(self._counters.items()):
            counter.read(now)
            if counter.is_empty():
                del self._counters[slot]
        for number, limit in list(self._limits.items()):
            limit.read(now)
            if limit.is_empty():
                del self._limits[number]
        horizon = now - self.plan.record_ttl
        for number in [n for n, seen in self._last_seen.items() if seen <= horizon]:
            del self._last_seen[number]
        for address in [a for a, members in self._distinct.items() if max(members.values()) <= now - self.plan.distinct_window]:
            del self._distinct[address]
