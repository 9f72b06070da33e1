"""Traffic simulator: labelled OTP requests and feedback for trying and evaluating a policy.

`simulate(["mix"], seed=7)` returns the events of a day in event-time order; every request carries `label`
(`legit` or `attack`) and `scenario`, and the requests of a scenario whose clients solve challenges
`challenge_pass_rate` and `challenge_delay_s` (how the evaluation's simulated client answers a challenge);
the engine ignores them all. The same arguments give the same events,
byte for byte once written with `write_events`. `simulate(business="gulf", seed=7)` is a day of one of
the business profiles (`businesses.BUSINESSES`): every scenario, aimed at and drawn from its market.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from detector.evaluation.sim.businesses import BUSINESSES, profile
from detector.evaluation.sim.generate import (
    DAY,
    DEFAULT_START,
    AddressBook,
    Context,
    NumberBook,
    Run,
    sub_rng,
)
from detector.evaluation.sim.prices import price_for
from detector.evaluation.sim.scenarios import ALL, MIX, MIX_MARKET, SCENARIOS, Scenario, resolve

__all__ = [
    "ALL",
    "BUSINESSES",
    "DAY",
    "DEFAULT_START",
    "MIX",
    "SCENARIOS",
    "Scenario",
    "price_for",
    "profile",
    "resolve",
    "simulate",
    "write_events",
]


def simulate(
    scenarios: str | Sequence[str] | None = None,
    *,
    duration: float = DAY,
    seed: int = 1,
    start: float = DEFAULT_START,
    business: str | None = None,
    on_scenario: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The events of `scenarios` over `duration` seconds from `start`, sorted by event time.

    Without `business`, the mix's market and by default the mix's scenarios; with it, that profile's
    market and by default every scenario.
    """
    market = MIX_MARKET if business is None else profile(business).market
    busy = market.homes if business is not None else ()  # the mix's books stay as they always were
    if scenarios is None:
        scenarios = MIX if business is None else ALL
    names = resolve(scenarios if isinstance(scenarios, str) else list(scenarios))
    if duration <= 0:
        raise ValueError("duration must be positive")
    run = Run(
        seed=seed,
        start=start,
        duration=duration,
        market=market,
        numbers=NumberBook(seed, busy=busy),
        addresses=AddressBook(busy=busy),
    )
    for name in names:
        scenario = SCENARIOS[name]
        index = list(SCENARIOS).index(name)
        ctx = Context(
            name=name,
            label=scenario.label,
            index=index,
            rng=sub_rng(seed, "scenario", name),
            run=run,
            challenge_pass_rate=scenario.challenge_pass_rate,
            challenge_delay_s=scenario.challenge_delay_s,
        )
        scenario.generate(ctx)
        if on_scenario is not None:
            on_scenario(name)
    run.events.sort(key=lambda item: (item[0], item[1]))
    return [payload for _, _, payload in run.events]


def write_events(events: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write events as JSON lines; returns how many."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(target, "wb") as handle:
        for event in events:
            handle.write(orjson.dumps(event) + b"\n")
            count += 1
    return count
