"""Event-time sliding windows made of buckets: the arithmetic every store shares.

A window of W seconds is counted in B buckets of width w = W / B; bucket index = floor(ts / w).
A counter keeps a `head` (the newest bucket any write or read has reached) and drops buckets older than
head − B. A read returns the sum of the buckets it keeps.

Every window of one entity lives in one flat list of ints (`WindowSet.new`): per window its head, its two
totals and a ring of B + 1 cells, the kept buckets [head − B, head]. An update is a handful of list
operations per window, with no object per window or bucket (the engine counts ~20 windows per request).

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

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

L = TypeVar("L", bound=Hashable)  # what names a window in the dicts a `WindowSet` fills


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


_NEVER = -(1 << 62)  # the head of a window nothing has reached
_UNKNOWN = -1  # a peak to find again: a bucket holding verified counts left the window
_HEADER = 4  # head, requests, verified, peak verified; then (requests, verified) per ring cell


class WindowSet(Generic[L]):
    """The windows of one kind of entity, every one of them counted in one record per entity.

    `labels` name the windows in the dicts `add` and `read` fill; `positions` say which of the caller's
    precomputed bucket indices (one per distinct width) each window uses; `peaks` the labels whose busiest
    verified bucket is wanted too.
    """

    __slots__ = ("_layout", "_template", "labels", "windows")

    def __init__(
        self,
        windows: Sequence[Window],
        labels: Sequence[L],
        positions: Sequence[int],
        peaks: Collection[L] = (),
    ) -> None:
        self.windows = tuple(windows)
        self.labels = tuple(labels)
        layout = []
        template: list[int] = []
        for window, label, position in zip(self.windows, labels, positions, strict=True):
            base, cells = len(template), window.buckets + 1
            layout.append((base, window.buckets, cells, position, label, label in peaks))
            template += [_NEVER, 0, 0, 0] + [0] * (2 * cells)
        self._layout = tuple(layout)
        self._template = template

    def new(self) -> list[int]:
        return self._template.copy()

    def add(
        self,
        record: list[int],
        buckets: Sequence[int],
        requests: int,
        verified: int,
        counts: dict[L, tuple[int, int]] | None = None,
        peaks: dict[L, int] | None = None,
    ) -> None:
        """Add to each window's bucket (its oldest kept one if the bucket has left the window); put the
        counts after it, and the peaks asked for, in `counts` and `peaks`."""
        for base, span, cells, position, label, wants_peak in self._layout:
            bucket = buckets[position]
            head = record[base]
            if bucket > head:
                _advance(record, base, cells, head, bucket)
            elif bucket < head - span:
                bucket = head - span
            cell = base + _HEADER + 2 * (bucket % cells)
            if requests:
                record[cell] += requests
                record[base + 1] += requests
            if verified:
                record[cell + 1] += verified
                record[base + 2] += verified
                if record[cell + 1] > record[base + 3] >= 0:
                    record[base + 3] = record[cell + 1]
            if counts is not None:
                counts[label] = (record[base + 1], record[base + 2])
                if wants_peak and peaks is not None:
                    peaks[label] = _peak(record, base, cells)

    def read(
        self, record: list[int], buckets: Sequence[int], counts: dict[L, tuple[int, int]] | None = None
    ) -> None:
        """Move each window to its bucket (dropping what left it), putting its counts in `counts`."""
        for base, _, cells, position, label, _ in self._layout:
            bucket = buckets[position]
            head = record[base]
            if bucket > head:
                _advance(record, base, cells, head, bucket)
            if counts is not None:
                counts[label] = (record[base + 1], record[base + 2])

    def peak(self, record: list[int], window: int = 0) -> int:
        """The busiest bucket's verified count of one window."""
        base, _, cells, *_ = self._layout[window]
        return _peak(record, base, cells)

    def is_empty(self, record: list[int]) -> bool:
        return not any(record[base + 1] or record[base + 2] for base, *_ in self._layout)


def _peak(record: list[int], base: int, cells: int) -> int:
    peak = record[base + 3]
    if peak == _UNKNOWN:
        peak = record[base + 3] = max(record[base + _HEADER + 1 : base + _HEADER + 2 * cells : 2])
    return peak


def _advance(record: list[int], base: int, cells: int, head: int, bucket: int) -> None:
    """Move a window's head to `bucket`: the buckets leaving it share their ring cells with the new ones."""
    record[base] = bucket
    if bucket - head >= cells:
        if record[base + 1] or record[base + 2]:
            end = base + _HEADER + 2 * cells
            record[base + 1 : end] = [0] * (end - base - 1)
        return
    for index in range(head + 1, bucket + 1):
        cell = base + _HEADER + 2 * (index % cells)
        requests, verified = record[cell], record[cell + 1]
        if requests or verified:
            record[base + 1] -= requests
            record[base + 2] -= verified
            record[cell] = record[cell + 1] = 0
            if verified:
                record[base + 3] = _UNKNOWN


class BucketCounter:
    """One window of one entity: a `WindowSet` of one, for code and tests that count a single window."""

    __slots__ = ("_record", "_set")

    def __init__(self, window: Window) -> None:
        self._set: WindowSet[Window] = WindowSet((window,), (window,), (0,))
        self._record = self._set.new()

    def add(self, ts: float, window: Window, requests: int = 0, verified: int = 0) -> tuple[int, int]:
        counts: dict[Window, tuple[int, int]] = {}
        self._set.add(self._record, (window.bucket(ts),), requests, verified, counts)
        return counts[window]

    def read(self, ts: float, window: Window) -> tuple[int, int]:
        counts: dict[Window, tuple[int, int]] = {}
        self._set.read(self._record, (window.bucket(ts),), counts)
        return counts[window]

    def peak_verified(self) -> int:
        return self._set.peak(self._record)

    def is_empty(self) -> bool:
        return self._set.is_empty(self._record)
