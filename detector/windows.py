"""Event-time sliding windows made of buckets: the arithmetic every store shares.

A window of W seconds is counted in B buckets of width w = W / B; bucket index = floor(ts / w).
A counter keeps a `head` (the newest bucket any write or read has reached) and drops buckets older than
head − B. A read returns the sum of the buckets it keeps.

Every window of one entity lives in one flat record of integers: per window its head, its two totals, its
verified peak and a ring of B + 1 cells, the kept buckets [head − B, head]. The records of a dimension's
entities and the arithmetic on them are the compiled core (`core/src/windows.rs`, Rust through PyO3, built
into `detector._core` by `pip install`). The in-process store counts through it (`MemoryCore`,
`core/src/memory.rs`), every window of every dimension of a request in one call; `WindowTables` is the same
arithmetic alone, which `BucketCounter` here and the exact-count tests use.

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

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from detector._core import WindowTables

__all__ = ["BucketCounter", "Window", "WindowTables", "tables"]


@dataclass(frozen=True, slots=True)
class Window:
    seconds: int
    buckets: int

    @property
    def width(self) -> float:
        return self.seconds / self.buckets

    def bucket(self, ts: float) -> int:
        """floor(ts / width) for the non-negative event times we accept (the core computes it alike)."""
        return int(ts / (self.seconds / self.buckets))


def tables(windows: Mapping[str, Sequence[Window]], peaks: Collection[tuple[str, int]] = ()) -> WindowTables:
    """The counters of these dimensions' windows; a window's place in the lists they fill is its position
    among all of them, in order (`CounterPlan.slots`)."""
    return WindowTables(
        [(dim, [(w.seconds, w.buckets) for w in ws]) for dim, ws in windows.items()], list(peaks)
    )


class BucketCounter:
    """One window of one entity, for code and tests that count a single window."""

    __slots__ = ("_keys", "_tables")

    def __init__(self, window: Window) -> None:
        self._tables = tables({"counter": (window,)}, [("counter", window.seconds)])
        self._keys = {"counter": "one"}

    def add(self, ts: float, requests: int = 0, verified: int = 0) -> tuple[int, int]:
        counts: list[tuple[int, int] | None] = [None]
        self._tables.add(self._keys, ts, requests, verified, counts)
        assert counts[0] is not None
        return counts[0]

    def read(self, ts: float) -> tuple[int, int]:
        counts: list[tuple[int, int] | None] = [None]
        self._tables.read(self._keys, ts, counts)
        assert counts[0] is not None
        return counts[0]

    def peak_verified(self) -> int:
        """The busiest bucket's verified count, as of the last add or read."""
        peaks = [0]
        self._tables.read(self._keys, -1.0, None, peaks)
        return peaks[0]
