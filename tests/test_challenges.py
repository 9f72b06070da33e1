"""Challenges that end in a sent code or a stop: results, expiry, and passes counted as evidence.

Every test runs on the memory store and on a real redis-server, through the engine.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from detector.engine import Engine, Result
from detector.events import Decision, parse_event
from tests.conftest import EngineFactory
from tests.factories import T0, codes, policy, request

# Anonymizer (20) + IP country ≠ phone country (20) = 40: a challenge, nothing else firing.
SUSPECT = {"signals": {"anonymizer": True}, "ip_country": "NL"}


async def run(engine: Engine, *events: dict[str, Any], at: float | None = None) -> list[Result]:
    parsed = [parse_event(orjson.dumps(event)) for event in events]
    references = [at if at is not None else float(event["ts"]) for event in events]
    return await engine.process(parsed, references)


def result_of(challenge_for: dict[str, Any], decision: Decision, ts: float, **fields: Any) -> dict[str, Any]:
    """The backend's report of a challenge, repeating what the request was for (as on Kafka)."""
    event = {
        "type": "otp_challenge",
        "request_id": decision.request_id,
        "challenge_id": decision.challenge_id,
        "ts": ts,
        "result": "passed",
        "phone": challenge_for["phone"],
        "client_ip": challenge_for["client_ip"],
    }
    event.update(fields)
    return event


async def challenged(engine: Engine, **fields: Any) -> tuple[dict[str, Any], Decision]:
    asked = request(ts=T0, **{**SUSPECT, **fields})
    [decision] = await run(engine, asked)
    assert isinstance(decision, Decision) and decision.action == "challenge", decision
    return asked, decision


async def test_a_challenge_carries_its_id_and_expiry(make_engine: EngineFactory) -> None:
    engine = make_engine()
    _, decision = await challenged(engine)
    assert decision.challenge_id == engine.challenge_id(decision.request_id)
    assert decision.challenge_expires == "2026-11-23T08:10:00.000Z"  # T0 + challenge.ttl (10m)


async def test_a_pass_supersedes_the_challenge_with_an_allow(make_engine: EngineFactory) -> None:
    engine = make_engine()
    asked, decision = await challenged(engine, message={"text": "Your code is 123456", "source": "Acme"})
    [passed] = await run(
        engine, result_of(asked, decision, T0 + 20, message={"text": "Your code is 123456", "source": "Acme"})
    )
    assert isinstance(passed, Decision)
    assert (passed.action, passed.supersedes) == ("allow", "challenge")
    assert "challenge_passed" in codes(passed)
    assert passed.phone == asked["phone"] and passed.message is not None  # what the send worker needs


@pytest.mark.parametrize(("result", "delay", "reason"), [("failed", 20, "challenge_failed"),
                                                           ("passed", 601, "challenge_expired")])  # fmt: skip
async def test_a_failed_or_expired_challenge_ends_in_a_block(
    make_engine: EngineFactory, result: str, delay: float, reason: str
) -> None:
    engine = make_engine()
    asked, decision = await challenged(engine)
    [ended] = await run(engine, result_of(asked, decision, T0 + delay, result=result))
    assert isinstance(ended, Decision)
    assert (ended.action, ended.supersedes, codes(ended)) == ("block", "challenge", {reason})


async def test_results_that_end_nothing(make_engine: EngineFactory) -> None:
    engine = make_engine()
    asked, decision = await challenged(engine)
    wrong_id = result_of(asked, decision, T0 + 5, challenge_id="guessed")
    other_number = result_of(asked, decision, T0 + 5, phone="+447400999111")
    assert await run(engine, wrong_id, other_number) == ["mismatch", "mismatch"]
    assert await run(engine, result_of(asked, decision, T0 + 6)) != ["mismatch"]  # still open: taken now
    assert await run(engine, result_of(asked, decision, T0 + 7)) == ["duplicate"]

    allowed = request(ts=T0 + 8)
    [decision] = await run(engine, allowed)
    assert isinstance(decision, Decision) and decision.action == "allow"
    never_challenged = result_of(
        allowed, decision, T0 + 9, challenge_id=engine.challenge_id(allowed["request_id"])
    )
    token_only = {**never_challenged, "result": None, "token": "XXXX.DUMMY.TOKEN"}
    del token_only["result"]
    assert await run(engine, never_challenged, token_only) == ["unknown", "unverified"]


async def test_a_captcha_farm_on_one_number_block_is_still_blocked(make_engine: EngineFactory) -> None:
    """Passes are counted per prefix: a farm solving every challenge for one block stops getting sends."""
    engine = make_engine()
    outcomes = []
    for n in range(8):
        asked = request(
            ts=T0 + n * 60, phone=f"+4474001234{n:02d}", client_ip=f"198.51.100.{n + 1}", **SUSPECT
        )
        [decision] = await run(engine, asked)
        assert isinstance(decision, Decision)
        if decision.action != "challenge":
            outcomes.append(decision.action)
            continue
        [ended] = await run(engine, result_of(asked, decision, T0 + n * 60 + 15))
        assert isinstance(ended, Decision)
        outcomes.append(ended.action)
    assert outcomes[:2] == ["allow", "allow"]  # the first passes are evidence enough
    assert outcomes[-3:] == ["block", "block", "block"]  # the prefix's passes pile up: no more sends


async def test_passes_do_not_reset_velocity(make_engine: EngineFactory) -> None:
    """A pass adds no verification: the request still counts as unverified on its entities."""
    engine = make_engine(policy(rules={"retry_delay": {"mode": "off"}, "passes": {}}))
    for n in range(12):
        asked = request(ts=T0 + n, phone=f"+4474005{n:05d}", client_ip="198.51.100.9", **SUSPECT)
        [decision] = await run(engine, asked)
        assert isinstance(decision, Decision)
        if decision.action == "challenge":
            await run(engine, result_of(asked, decision, T0 + n + 0.5))
    [later] = await run(engine, request(ts=T0 + 20, phone="+447400599999", client_ip="198.51.100.9"))
    assert isinstance(later, Decision)
    assert "ip_10m_velocity" in codes(later)
