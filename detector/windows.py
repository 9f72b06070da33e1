"""Event-time sliding windows made of buckets: the arithmetic every store shares.

A window of W seconds is counted in B buckets of width w = W / B; bucket index = floor(ts / w).
A counter keeps a `head` (the newest bucket any write or read has reached) and drops buckets older than
head − B. A read returns the sum of the buckets it keeps.

Counting error, for a stream read in event-time order: a read at time t covers buckets
[bucket(t) − B, bucket(t)], a span between W and W + w long, so

    exact count over the last W seconds  <=  count  <=  exact count over the last W + w seconds.

The count never undercounts, so a limit of N per W is never exceeded; it may fire up to one bucket early.
With the default B = 12, a 30-minute window reads like one between 30 and 32.5 minutes. Late events land
in their own bucket when it is still kept, and are dropped otherwise. `tests/test_windows.py` checks the
bounds against an exact count on random streams.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    seconds: int
    buckets: int

    @property
    def width(self) -> float:
        return self.seconds / self.buckets

    def bucket(self, ts: float) -> int:
        return int(ts // self.width)

    def oldest_kept(self, head: int) -> int:
        return head - self.buckets


class BucketCounter:
    """One windowed pair of counts (requests, verified) in memory, with O(1) amortised updates."""

    __slots__ = ("buckets", "head", "requests", "verified", "window")

    def __init__(self, window: Window) -> None:
        self.window = window
        self.buckets: dict[int, list[int]] = {}
        self.head = -(1 << 62)
        self.requests = 0
        self.verified = 0

    def _advance(self, bucket: int) -> None:
        if bucket <= self.head:
            return
        self.head = bucket
        oldest = bucket - self.window.buckets
        stale = [index for index in self.buckets if index < oldest]
        for index in stale:
            requests, verified = self.buckets.pop(index)
            self.requests -= requests
            self.verified -= verified

    def add(self, ts: float, requests: int = 0, verified: int = 0) -> None:
        bucket = self.window.bucket(ts)
        self._advance(bucket)
        if bucket < self.head - self.window.buckets:
            return
        cell = self.buckets.get(bucket)
        if cell is None:
            self.buckets[bucket] = [requests, verified]
        else:
            cell[0] += requests
            cell[1] += verified
        self.requests += requests
        self.verified += verified

    def read(self, ts: float) -> tuple[int, int]:
        self._advance(self.window.bucket(ts))
        return self.requests, self.verified

    def peak_verified(self) -> int:
        return max((cell[1] for cell in self.buckets.values()), default=0)

    def is_empty(self) -> bool:
        return not self.buckets
