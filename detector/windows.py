"""Event-time sliding windows made of buckets: the arithmetic every store shares.

A window of W seconds is counted in B buckets of width w = W / B; bucket index = floor(ts / w).
A counter keeps a `head` (the newest bucket any write or read has reached) and drops buckets older than
head − B. A read returns the sum of the buckets it keeps.

Counting error, for a stream read in event-time order: a read at time t covers buckets
[bucket(t) − B, bucket(t)], a span between W and W + w long, so

    exact count over the last W seconds  <=  count  <=  exact count over the last W + w seconds.

The count never undercounts, so a limit of N per W is never exceeded; it may fire up to one bucket early.
With the default B = 12, a 30-minute window reads like one between 30 and 32.5 minutes. A late event lands
in its own bucket when it is still kept, and in the oldest kept bucket otherwise: it is never dropped, so a
limit holds whatever the arrival order (it is counted a little longer than its own time says, never less).
How late or early an event may be at all is bounded before it reaches a counter (`detector.eventtime`).
`tests/test_windows.py` checks the bounds against an exact count on random streams.
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
        """floor(ts / width) for the non-negative event times we accept; every store uses this one."""
        return int(ts / (self.seconds / self.buckets))


class BucketCounter:
    """One windowed pair of counts (requests, verified) in memory, with O(1) amortised updates."""

    __slots__ = ("_peak", "buckets", "head", "requests", "span", "verified")

    def __init__(self, window: Window) -> None:
        self.span = window.buckets
        self.buckets: dict[int, list[int]] = {}
        self.head = -(1 << 62)
        self.requests = 0
        self.verified = 0
        self._peak: int | None = 0

    def _advance(self, bucket: int) -> None:
        self.head = bucket
        oldest = bucket - self.span
        stale = [index for index in self.buckets if index < oldest]
        for index in stale:
            requests, verified = self.buckets.pop(index)
            self.requests -= requests
            self.verified -= verified
        if stale:
            self._peak = None

    def add_at(self, bucket: int, requests: int = 0, verified: int = 0) -> tuple[int, int]:
        """Add to `bucket` (the oldest kept one if it has left the window) and return the counts after it."""
        if bucket > self.head:
            self._advance(bucket)
        elif bucket < self.head - self.span:
            bucket = self.head - self.span
        cell = self.buckets.get(bucket)
        if cell is None:
            cell = self.buckets[bucket] = [0, 0]
        cell[0] += requests
        cell[1] += verified
        self.requests += requests
        self.verified += verified
        if verified and self._peak is not None and cell[1] > self._peak:
            self._peak = cell[1]
        return self.requests, self.verified

    def read_at(self, bucket: int) -> tuple[int, int]:
        if bucket > self.head:
            self._advance(bucket)
        return self.requests, self.verified

    def add(self, ts: float, window: Window, requests: int = 0, verified: int = 0) -> tuple[int, int]:
        return self.add_at(window.bucket(ts), requests, verified)

    def read(self, ts: float, window: Window) -> tuple[int, int]:
        return self.read_at(window.bucket(ts))

    def peak_verified(self) -> int:
        if self._peak is None:
            self._peak = max((cell[1] for cell in self.buckets.values()), default=0)
        return self._peak

    def is_empty(self) -> bool:
        return not self.buckets
