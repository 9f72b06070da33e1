"""Event time a client cannot forge: each event is counted at its `ts` bounded by a clock it does not control.

Windows are computed from each event's `ts` (a replay of yesterday gives yesterday's answers), but `ts` is a
field like any other. One request dated 9999 would move every counter it touches into the future, where
nothing expires and every honest request after it is "late"; a burst dated two days back would land in
buckets that have already left their windows. So the time an event is *counted* at is its `ts` clamped to
a reference the sender cannot move:

    counted = min(max(ts, reference - max_lateness), reference + max_skew)

The reference is the best clock the adapter has:

* Kafka: the record's timestamp (set by the producing backend or the broker, not by the client);
* HTTP: the server's own clock;
* a file (replay, evaluation): the stream's *watermark*, the latest counting time so far, which an event can
  move forward by at most `max_skew`. The first event sets it. A forged date therefore moves it by
  `max_skew` at most, and a quiet gap longer than `max_skew` in an honest file is caught up within a few
  events (each clamped one by at most the rest of the gap).

A clamped event still counts and still takes its send slot (late buckets go to the oldest kept bucket, see
`detector.windows`), so the per-number limit holds in any arrival order; its decision carries a `ts_clamped`
reason with how far its own time was off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimeBounds:
    max_skew: float
    max_lateness: float

    def __post_init__(self) -> None:
        if self.max_skew < 0 or self.max_lateness < 0:
            raise ValueError("time bounds are durations: max_skew and max_lateness are at least 0")

    def clamp(self, ts: float, reference: float) -> float:
        """min(max(ts, reference - max_lateness), reference + max_skew), by comparisons (runs per event)."""
        earliest, latest = reference - self.max_lateness, reference + self.max_skew
        return earliest if ts < earliest else latest if ts > latest else ts


class Watermark:
    """The reference clock of a stream with no trusted clock of its own: the latest counting time so far."""

    __slots__ = ("bounds", "value")

    def __init__(self, bounds: TimeBounds) -> None:
        self.bounds = bounds
        self.value: float | None = None

    def count_at(self, ts: float, reference: float | None = None) -> float:
        """The counting time of an event at `ts`, against `reference` or, without one, this watermark."""
        if reference is None:
            reference = ts if self.value is None else self.value
        counted = self.bounds.clamp(ts, reference)
        if self.value is None or counted > self.value:
            self.value = counted
        return counted
