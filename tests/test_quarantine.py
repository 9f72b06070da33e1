"""Blocks that expire and escalate: quarantines of prefixes, subnets and clients, on both stores."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from detector.engine import Engine
from detector.events import Decision, parse_event
from tests.conftest import EngineFactory
from tests.factories import T0, codes, feedback, request

BURST_IP = "198.51.100.66"


async def decide(engine: Engine, *events: dict[str, Any]) -> list[Decision]:
    results = await engine.process(
        [parse_event(orjson.dumps(e)) for e in events], [float(e["ts"]) for e in events]
    )
    return [r for r in results if isinstance(r, Decision)]


async def burst(engine: Engine, start: float, count: int, first: int = 0) -> list[Decision]:
    """One client asking for codes to fresh numbers (each in a block of its own) every 5 s, one request
    per batch (as a worker sees them); `first` numbers the phones."""
    out: list[Decision] = []
    for i in range(count):
        phone = f"+4474{first + i:04d}0055"
        out += await decide(engine, request(ts=start + 5 * i, phone=phone, client_ip=BURST_IP))
    return out


async def test_a_client_over_the_block_line_is_quarantined_and_the_rest_of_its_burst_blocked(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine()
    decisions = await burst(engine, T0, 60)
    first_block = next(i for i, d in enumerate(decisions) if d.action == "block")
    assert "quarantined" not in codes(decisions[first_block])
    started = [r for r in decisions[first_block].reasons if r.code == "quarantine_started"]
    assert [str(r.value).split(" until ")[0] for r in started if str(r.value).startswith("ip ")] == [
        "ip level 1"
    ]
    later = [
        r.value for d in decisions[first_block + 1 :] for r in d.reasons if r.code == "quarantine_started"
    ]
    assert not [value for value in later if str(value).startswith("ip ")]  # blocked by it, no new offence
    quarantined = [d for d in decisions[first_block + 1 :] if "quarantined" in codes(d)]
    assert len(quarantined) == len(decisions) - first_block - 1  # every later one, at once
    [reason] = [r for r in quarantined[0].reasons if r.code == "quarantined"]
    assert isinstance(reason.value, str) and reason.value.startswith("ip until ")
    assert quarantined[0].retry_after is not None and 0 < quarantined[0].retry_after <= 15 * 60

    [listed] = [q for q in await engine.store.quarantines(T0 + 300) if q.dimension == "ip"]
    assert (listed.label, listed.offences) == ("198.51.100.x", 1)
    assert listed.until == pytest.approx(listed.since + 15 * 60)


async def test_quarantines_expire_and_repeat_offences_escalate(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await burst(engine, T0, 40)
    [first] = [q for q in await engine.store.quarantines(T0 + 200) if q.dimension == "ip"]
    after = first.until + 1  # expired: the client may ask again, and is judged afresh
    [next_request] = await decide(engine, request(ts=after, phone="+447400699999", client_ip=BURST_IP))
    assert "quarantined" not in codes(next_request)
    again = await burst(engine, after + 10, 40, first=1000)  # and offends again: the next step of the ladder
    levels = [r.value for d in [next_request, *again] for r in d.reasons if r.code == "quarantine_started"]
    assert any(str(value).startswith("ip level 2 until ") for value in levels)
    [second] = [q for q in await engine.store.quarantines(after + 300) if q.dimension == "ip"]
    assert second.offences == 2
    assert second.until - second.since == pytest.approx(3600)


async def test_an_operator_lifts_a_quarantine(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await burst(engine, T0, 40)
    [listed] = [q for q in await engine.store.quarantines(T0 + 200) if q.dimension == "ip"]
    assert await engine.store.lift(listed.dimension, listed.key)
    assert not await engine.store.lift(listed.dimension, listed.key)
    assert all(q.dimension != "ip" for q in await engine.store.quarantines(T0 + 200))


async def test_known_good_numbers_are_exempt(make_engine: EngineFactory) -> None:
    engine = make_engine()
    regular = request(ts=T0 - 3600, phone="+447400777777", client_ip="203.0.113.10")
    await decide(engine, regular)
    await decide(engine, feedback(regular["request_id"], T0 - 3580))
    await burst(engine, T0, 40)
    [known, stranger] = await decide(
        engine,
        request(ts=T0 + 205, phone="+447400777777", client_ip=BURST_IP),
        request(ts=T0 + 206, phone="+447400888888", client_ip=BURST_IP),
    )
    assert "quarantined" in codes(stranger)
    assert "quarantined" not in codes(known) and "known_good_number" in codes(known)
    assert "quarantine_exempt" in codes(known) and "quarantine_exempt" not in codes(stranger)
    [exempt] = [r for r in known.reasons if r.code == "quarantine_exempt"]
    assert "ip" in str(exempt.value).split(",")
