import bisect
import random

import pytest

from detector.windows import BucketCounter, Window


def _exact(times: list[float], now: float, span: float) -> int:
    """Events in (now - span, now]."""
    return bisect.bisect_right(times, now) - bisect.bisect_right(times, now - span)


@pytest.mark.parametrize("seed", range(20))
def test_count_is_bounded_by_exact_counts(seed: int) -> None:
    rng = random.Random(seed)
    window = Window(seconds=rng.choice([600, 1800, 3600, 86400]), buckets=rng.choice([4, 12, 30]))
    counter = BucketCounter(window)
    now, times = rng.uniform(0, 1e9), []
    rate = rng.choice([0.01, 0.1, 1.0])
    for _ in range(3000):
        now += rng.expovariate(rate) * (window.seconds / 600)
        times.append(now)
        counter.add(now, requests=1)
        counted, _ = counter.read(now)
        lower = _exact(times, now, window.seconds)
        upper = _exact(times, now, window.seconds + window.width)
        assert lower <= counted <= upper, (lower, counted, upper)


def test_the_upper_bound_is_reached() -> None:
    """The error is real: events just over W ago are still counted while their bucket is kept."""
    window = Window(seconds=600, buckets=10)
    counter = BucketCounter(window)
    counter.add(0.0, requests=1)
    assert counter.read(659.0)[0] == 1
    assert counter.read(660.0)[0] == 0


def test_verified_counts_follow_the_request_bucket() -> None:
    window = Window(seconds=3600, buckets=12)
    counter = BucketCounter(window)
    counter.add(100.0, requests=1)
    counter.add(100.0, verified=1)
    assert counter.read(200.0) == (1, 1)
    assert counter.read(100.0 + 3600 + 300) == (0, 0)


def test_late_events_land_in_kept_buckets_or_the_oldest_kept_one() -> None:
    window = Window(seconds=600, buckets=10)
    counter = BucketCounter(window)
    counter.add(1000.0, requests=1)
    counter.add(900.0, requests=1)
    assert counter.read(1000.0)[0] == 2
    counter.add(100.0, requests=1)  # far too late for its own bucket: still counted
    assert counter.read(1000.0)[0] == 3
    assert counter.read(1000.0 + 540)[0] == 2  # it leaves with the oldest kept bucket (900 s)
    assert counter.read(1000.0 + 660)[0] == 0


def test_peak_is_the_busiest_bucket() -> None:
    window = Window(seconds=3600, buckets=12)
    counter = BucketCounter(window)
    for ts, n in [(0.0, 2), (400.0, 5), (700.0, 1)]:
        counter.add(ts, verified=n)
    assert counter.peak_verified() == 5
    counter.read(3600 + 600 + 1.0)
    assert counter.peak_verified() == 1
