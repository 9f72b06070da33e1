"""Forged event times: a client's `ts` must not buy extra sends, poison counters or freeze expiry."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from detector.engine import Engine
from detector.events import Decision, parse_event
from detector.eventtime import TimeBounds, Watermark
from tests.factories import T0, codes, engine, feedback, policy, request

DAY = 86400.0


def _decide(
    eng: Engine, events: list[dict[str, Any]], references: Sequence[float | None] | None
) -> list[Decision]:
    async def go() -> list[Decision]:
        out: list[Decision] = []
        for start in range(0, len(events), 100):
            part = events[start : start + 100]
            refs = None if references is None else list(references[start : start + 100])
            results = await eng.process([parse_event(orjson.dumps(e)) for e in part], refs)
            out += [r for r in results if isinstance(r, Decision)]
        return out

    return asyncio.run(go())


def _one_number_burst(first: float, rest: float, n: int = 1000) -> list[dict[str, Any]]:
    """n requests to one number from n addresses: the first at `first`, the others at `rest` (+1 s each)."""
    return [request(ts=first, client_ip="203.0.113.1")] + [
        request(ts=rest + i, client_ip=f"198.51.{i // 250}.{i % 250 + 1}") for i in range(n - 1)
    ]


def _by_time(items: Any, arrival: list[float]) -> Any:
    """`items` in arrival order (None stays None)."""
    if items is None:
        return None
    return [item for _, _, item in sorted(zip(arrival, range(len(arrival)), items, strict=True))]


def _allowed(decisions: list[Decision]) -> int:
    return sum(d.action == "allow" for d in decisions)


@pytest.mark.parametrize("clock", ["watermark", "trusted"])
def test_back_dated_requests_get_no_more_sends_than_honest_ones(clock: str) -> None:
    """Before: first request dated now, 999 dated two days earlier → 1,000 allowed (late buckets were dropped
    but the send slot granted). Now: no more than with honest times, whatever the clock."""
    honest = _one_number_burst(T0, T0 + 1)
    forged = _one_number_burst(T0, T0 - 2 * DAY)
    arrival = [T0 + i for i in range(len(forged))]  # when each one really reached us
    references = None if clock == "watermark" else arrival
    honest_allowed = _allowed(_decide(engine(), honest, None if clock == "watermark" else arrival))
    forged_decisions = _decide(engine(), forged, references)
    print(
        f"\ntime attack ({clock}): allowed {_allowed(forged_decisions)} of 1000 "
        f"(honest times: {honest_allowed})"
    )
    assert _allowed(forged_decisions) <= honest_allowed <= policy().rules.msisdn_rate_limit.limit
    assert all("ts_clamped" in codes(d) for d in forged_decisions[1:])


@pytest.mark.parametrize("clock", ["watermark", "trusted"])
def test_future_dated_requests_do_not_poison_counters(clock: str) -> None:
    """Before: 100 requests dated 2999 blocked the next 1,000 legitimate GB requests, retry_after ~3e10 s.

    The attack's own volume still counts (100 unverified GB requests in an hour are an attack); what its
    forged dates must not add is anything more than the same requests honestly dated would."""
    year_2999 = 32_503_000_000.0

    def stream(attack_ts: float) -> tuple[list[dict[str, Any]], list[float]]:
        before = [
            request(ts=T0 + i * 3, phone=f"+4474003{i:05d}", client_ip=f"203.1.{i // 200}.{i % 200 + 1}")
            for i in range(200)
        ]
        attack = [
            request(ts=attack_ts + i, phone=f"+4474009{i:05d}", client_ip=f"192.0.2.{i + 1}")
            for i in range(100)
        ]
        after = [
            request(
                ts=T0 + 700 + i * 3, phone=f"+4474001{i:05d}", client_ip=f"203.0.{i // 200}.{i % 200 + 1}"
            )
            for i in range(1000)
        ]
        events = before + attack + after
        arrival = (
            [T0 + i * 3 for i in range(200)] + [T0 + 600 + i for i in range(100)] + [e["ts"] for e in after]
        )
        # Real users verify their codes; the attack never does.
        verified = [feedback(e["request_id"], e["ts"] + 20) for e in before + after]
        return events + verified, arrival + [f["ts"] for f in verified]

    forged, arrival = stream(year_2999)
    honest, _ = stream(T0 + 600)
    references = None if clock == "watermark" else arrival
    poisoned = _decide(engine(), _by_time(forged, arrival), _by_time(references, arrival))[300:]
    baseline = _decide(engine(), _by_time(honest, arrival), _by_time(references, arrival))[300:]
    blocked = sum(d.action != "allow" for d in poisoned)
    print(
        f"\nfuture-dated attack ({clock}): {blocked} of 1000 later requests stopped "
        f"(same attack honestly dated: {sum(d.action != 'allow' for d in baseline)})"
    )
    assert blocked <= sum(d.action != "allow" for d in baseline)
    assert all(d.retry_after is None or d.retry_after <= 3600 for d in poisoned)


def test_one_request_from_the_far_future_does_not_freeze_record_expiry() -> None:
    """Before: a request dated 9999 sat at the head of the memory store's expiry queue, so nothing expired."""
    eng = engine(policy(state={"record_ttl": "1h"}))
    early = request(ts=T0, client_ip="203.0.113.9")
    _decide(eng, [early, request(ts=253_402_300_000.0, client_ip="203.0.113.8")], None)
    later = [
        request(ts=T0 + 60 * i, client_ip="203.0.113.7", phone=f"+4474002{i:05d}") for i in range(1, 200)
    ]
    _decide(eng, later, None)
    again = dict(early, ts=T0 + 60 * 200)  # the same request id, long after its record's ttl
    [decision] = _decide(eng, [again], None)
    assert "redelivered_without_record" not in codes(decision)
    core = eng.store._core  # type: ignore[attr-defined]
    assert core.has_record(early["request_id"])
    records, _ = core.sizes()
    assert records <= 70


def test_the_watermark_moves_at_most_max_skew_per_event() -> None:
    clock = Watermark(TimeBounds(max_skew=300, max_lateness=600))
    assert clock.count_at(T0) == T0
    assert clock.count_at(T0 + 10 * DAY) == T0 + 300
    assert clock.count_at(T0 + 10 * DAY) == T0 + 600
    assert clock.count_at(T0 - DAY) == T0 + 600 - 600
    assert (
        clock.count_at(T0 + 601) == T0 + 601
    )  # an honest event inside the bounds is counted at its own time
    assert clock.count_at(T0, reference=T0 + 5) == T0  # a trusted reference wins over the watermark


def test_clamping_is_min_of_max_at_every_edge() -> None:
    """The counting time is min(max(ts, reference - max_lateness), reference + max_skew), edges included."""
    rng = random.Random(3)
    for skew, lateness in ((300, 600), (0, 0), (0, 600), (300, 0), (0.5, 1e9)):
        bounds = TimeBounds(max_skew=skew, max_lateness=lateness)
        for _ in range(2_000):
            reference = rng.uniform(0, 4e9)
            edges = (reference - lateness, reference + skew, reference)
            ts = rng.choice([*edges, rng.uniform(reference - 2 * lateness - 1, reference + 2 * skew + 1)])
            assert bounds.clamp(ts, reference) == min(max(ts, reference - lateness), reference + skew)


@pytest.mark.parametrize(("skew", "lateness"), [(-1, 600), (300, -0.5)])
def test_time_bounds_are_durations(skew: float, lateness: float) -> None:
    with pytest.raises(ValueError):
        TimeBounds(max_skew=skew, max_lateness=lateness)
