"""Building blocks for engine tests: events as dicts, a policy with overrides, one call to decide."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson

from detector.engine import Engine, Result
from detector.events import Decision, parse_event, parse_timestamp
from detector.hashing import KeyedHasher
from detector.policy import Policy, default_policy_data, merge, policy_from_data
from detector.scoring import counter_plan
from detector.state.memory import MemoryStore
from detector.wiring import open_ip_classifier

T0 = 1_795_420_800.0  # 2026-11-23T08:00:00Z
_ids = itertools.count()


def request(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "otp_request",
        "request_id": f"r{next(_ids)}",
        "ts": T0,
        "phone": "+447400123456",
        "client_ip": "203.0.113.5",
    }
    event.update(fields)
    return event


def feedback(request_id: str, ts: float, outcome: str = "verified") -> dict[str, Any]:
    return {"type": "otp_feedback", "request_id": request_id, "ts": ts, "outcome": outcome}


def policy(**overrides: Any) -> Policy:
    data = merge(default_policy_data(), overrides)
    return policy_from_data(data)


def quiet_policy(**overrides: Any) -> Policy:
    """The default policy with every scored rule off, so one rule can be tested alone."""
    rules_off = {
        "velocity": {},
        "unverified": {},
        "conversion": {},
        "ip_country_mismatch": {"mode": "off"},
        "non_core_destination": {"mode": "off"},
        "third_country_client": {"mode": "off"},
        "never_verified_destination": {"mode": "off"},
        "distinct_countries_per_ip": {"mode": "off"},
        "upstream": {"mode": "off"},
        "number_type": {"mode": "off"},
        "retry_delay": {"mode": "off"},
    }
    data = default_policy_data()
    data["rules"] = merge(data["rules"], rules_off)
    data["rules"]["velocity"] = {}
    data["rules"]["unverified"] = {}
    data["rules"]["conversion"] = {}
    return policy_from_data(merge(data, overrides))


def engine(pol: Policy | None = None) -> Engine:
    pol = pol or policy()
    hasher = KeyedHasher(b"test-key-0123456789abcdef")
    return Engine(pol, MemoryStore(counter_plan(pol)), hasher, open_ip_classifier(pol.lists))


def run(events: list[dict[str, Any]], pol: Policy | None = None, batch_size: int = 100) -> list[Result]:
    eng = engine(pol)
    results: list[Result] = []

    async def go() -> None:
        for start in range(0, len(events), batch_size):
            part = events[start : start + batch_size]
            chunk = [parse_event(orjson.dumps(e)) for e in part]
            # The test is the trusted clock: each event's own time is the reference, so rules can be tested
            # across hours without the clamping of `detector.eventtime` (tested on its own).
            results.extend(await eng.process(chunk, [_reference(e) for e in part]))

    asyncio.run(go())
    return results


def _reference(event: dict[str, Any]) -> float | None:
    ts = event.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    try:
        return parse_timestamp(ts) if isinstance(ts, str) else None
    except ValueError:
        return None


def decisions(
    events: list[dict[str, Any]], pol: Policy | None = None, batch_size: int = 100
) -> list[Decision]:
    return [r for r in run(events, pol, batch_size) if isinstance(r, Decision)]


def codes(decision: Decision) -> set[str]:
    return {reason.code for reason in decision.reasons}
