"""Degraded, not open: an attack during a Redis outage meets the per-process limits (real redis-server)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from detector.engine import Engine
from detector.events import Decision, parse_event
from detector.hashing import KeyedHasher
from detector.scoring import counter_plan
from detector.state.memory import MemoryStore
from detector.state.open import open_store
from detector.testing.services import RedisServer
from tests.factories import codes, policy, request

pytestmark = pytest.mark.redis

OUTAGE = 10.0
KEY = KeyedHasher(b"an-outage-test-key-4f9c2a71")


async def _burst(engine: Engine, seconds: float, first: int) -> list[Decision]:
    """Requests from one IP to fresh numbers, 10 every 0.1 s of wall time, for `seconds`, stamped now."""
    out: list[Decision] = []
    index = first
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = time.time()
        events = [
            request(ts=now, phone=f"+4474005{n:05d}", client_ip="198.51.100.66")
            for n in range(index, index + 10)
        ]
        index += 10
        results = await engine.process([parse_event(orjson.dumps(e)) for e in events], [now] * len(events))
        out += [r for r in results if isinstance(r, Decision)]
        await asyncio.sleep(0.1)
    return out


def _allowed(decisions: list[Decision]) -> int:
    return sum(d.action == "allow" for d in decisions)


@pytest.mark.parametrize("on_error", ["degrade", "open"])
async def test_an_attack_during_an_outage_meets_per_process_limits(
    redis_server: RedisServer, on_error: str
) -> None:
    pol = policy(state={"on_error": on_error, "timeout_ms": 250})
    store = open_store(redis_server.url, counter_plan(pol), pol)
    engine = Engine(pol, store, KEY)
    try:
        before = await _burst(engine, 1.0, 0)
        assert not any("state_unavailable" in codes(d) or "state_degraded" in codes(d) for d in before)
        await asyncio.to_thread(redis_server.stop)
        during = await _burst(engine, OUTAGE, 10_000)
        await asyncio.to_thread(redis_server.start)
        after = await _burst(engine, 3.0, 20_000)
    finally:
        await store.close()

    # The same attack against one fresh process of its own: what one process allows from one IP.
    alone = Engine(pol, MemoryStore(counter_plan(pol)), KEY)
    per_process = _allowed(await _burst(alone, 1.0, 30_000))
    print(
        f"\n{on_error}: {len(during)} attack requests during a {OUTAGE:.0f} s outage, "
        f"{_allowed(during)} allowed (one process alone allows {per_process})"
    )
    if on_error == "degrade":
        assert _allowed(during) <= per_process
        assert all("state_degraded" in codes(d) or "state_unavailable" in codes(d) for d in during)
        assert "state_degraded" in codes(during[-1])
        assert not any("state_degraded" in codes(d) for d in after[-10:])  # back on the shared store
    else:
        assert _allowed(during) == len(during)  # what degrading is for: open lets the whole outage through
