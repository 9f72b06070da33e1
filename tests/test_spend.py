"""The spend circuit breaker per destination country and hour, on both stores (`make_engine` runs each test on
memory and on a real redis-server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detector.events import Decision
from detector.policy import Policy, PolicyError
from tests.conftest import EngineFactory
from tests.factories import T0, codes, feedback, quiet_policy, request
from tests.test_quarantine import decide

PUMP_START = T0 + 12 * 3600


@pytest.fixture
def prices(tmp_path: Path) -> str:
    path = tmp_path / "prices.csv"
    path.write_text(
        "# test prices\ncountry,usd_per_sms,basis\nFR,0.10,test\nUS,0.01,test\nDEFAULT,0.10,test\n"
    )
    return str(path)


def breaker_policy(prices: str, **spend: Any) -> Policy:
    rule = {"k": 3, "window": "1h", "baseline": "24h", "min_budget": 0.0, **spend}
    return quiet_policy(spend={"prices_file": prices}, rules={"spend": rule, "quarantine": {"mode": "off"}})


def verified_day(country_code: str = "33", per_hour: int = 10) -> list[dict[str, Any]]:
    """12 hours of `per_hour` verified OTPs to one country: its busiest verified hour is `per_hour`."""
    events: list[dict[str, Any]] = []
    for hour in range(12):
        for i in range(per_hour):
            ts = T0 + hour * 3600 + i * (3600 / per_hour)
            sent = request(
                ts=ts, phone=f"+{country_code}61234{hour:02d}{i:02d}", client_ip=f"198.51.{hour}.{i}"
            )
            events += [sent, feedback(sent["request_id"], ts + 15)]
    return events


def pump(count: int, country_code: str = "33", start: float = PUMP_START) -> list[dict[str, Any]]:
    return [
        request(ts=start + 10 * i, phone=f"+{country_code}69876{i:04d}", client_ip=f"192.0.2.{i % 250}")
        for i in range(count)
    ]


def breaker(decision: Decision) -> tuple[object, object] | None:
    found = [(r.value, r.threshold) for r in decision.reasons if r.code == "spend_circuit_breaker"]
    return found[0] if found else None


async def test_past_k_times_the_busiest_verified_hour_new_numbers_are_blocked(
    make_engine: EngineFactory, prices: str
) -> None:
    engine = make_engine(breaker_policy(prices))
    await decide(engine, *verified_day(per_hour=10))
    pumped = await decide(engine, *pump(40))
    # budget: 3 × 10 verified an hour × $0.10 = $3.00; the 31st unverified code spends $3.10
    assert [breaker(d) for d in pumped[:30]] == [None] * 30
    assert all(d.action == "allow" for d in pumped[:30])
    assert breaker(pumped[30]) == (pytest.approx(3.1), pytest.approx(3.0))
    assert all(d.action == "block" and breaker(d) for d in pumped[30:])


async def test_a_number_with_verified_history_passes_the_tripped_breaker(
    make_engine: EngineFactory, prices: str
) -> None:
    engine = make_engine(breaker_policy(prices))
    day = verified_day(per_hour=10)
    await decide(engine, *day)
    await decide(engine, *pump(40))
    returning = request(ts=PUMP_START + 500, phone=day[0]["phone"], client_ip="203.0.113.77")
    stranger = request(ts=PUMP_START + 501, phone="+33612349999", client_ip="203.0.113.78")
    known, new = await decide(engine, returning, stranger)
    assert known.action == "allow" and "known_good_number" in codes(known) and breaker(known) is None
    assert new.action == "block" and breaker(new) is not None


async def test_a_country_without_a_verified_hour_has_no_budget_yet(
    make_engine: EngineFactory, prices: str
) -> None:
    engine = make_engine(breaker_policy(prices))
    await decide(engine, *verified_day(per_hour=10))  # French history only
    to_us = await decide(engine, *pump(80, country_code="1201"))
    assert all(breaker(d) is None for d in to_us)


async def test_a_busier_history_earns_a_bigger_budget(make_engine: EngineFactory, prices: str) -> None:
    engine = make_engine(breaker_policy(prices))
    await decide(engine, *verified_day(per_hour=30))  # budget 3 × 30 × $0.10 = $9.00
    pumped = await decide(engine, *pump(95))
    assert [breaker(d) is not None for d in pumped].index(True) == 90


async def test_min_budget_is_a_floor_in_dollars(make_engine: EngineFactory, prices: str) -> None:
    engine = make_engine(
        breaker_policy(prices, min_budget=5.0)
    )  # $5.00 over the $3.00 of k × the busiest hour
    await decide(engine, *verified_day(per_hour=10))
    pumped = await decide(engine, *pump(55))
    assert [breaker(d) is not None for d in pumped].index(True) == 50
    assert breaker(pumped[50]) == (pytest.approx(5.1), pytest.approx(5.0))


async def test_counting_requests_spends_the_verified_ones_too(
    make_engine: EngineFactory, prices: str
) -> None:
    engine = make_engine(breaker_policy(prices, count="requests"))
    await decide(engine, *verified_day(per_hour=10))
    # The last hour's 10 verified requests are still in the window: they count against the same $3.00.
    start = T0 + 11 * 3600 + 3500
    pumped = await decide(engine, *pump(30, start=start))
    first = [breaker(d) is not None for d in pumped].index(True)
    assert first < 30
    value, threshold = breaker(pumped[first]) or (None, None)
    assert isinstance(value, float) and isinstance(threshold, float) and value > threshold == 3.0


async def test_in_shadow_the_breaker_reports_but_does_not_block(
    make_engine: EngineFactory, prices: str
) -> None:
    engine = make_engine(breaker_policy(prices, mode="shadow"))
    await decide(engine, *verified_day(per_hour=10))
    pumped = await decide(engine, *pump(40))
    assert breaker(pumped[-1]) is not None and pumped[-1].action == "allow" and pumped[-1].verdict == "block"


def test_a_bad_price_file_or_spend_rule_is_a_policy_problem(tmp_path: Path) -> None:
    bad = tmp_path / "prices.csv"
    bad.write_text("country,usd_per_sms\nFR,cheap\n")
    with pytest.raises(PolicyError) as caught:
        quiet_policy(spend={"prices_file": str(bad)}, rules={"spend": {"k": 0, "window": "soon"}})
    text = str(caught.value)
    assert "'cheap' is not a price" in text and "$.spend.prices_file" in text
    assert "$.rules.spend.k" in text and "$.rules.spend.window" in text
