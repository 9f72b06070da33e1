"""The in-process store's own bounds: what it forgets, and when (its state is the compiled core).

What it answers is held to the Redis store's answers in tests/test_redis_store.py; these tests are about
memory: a replay of many days must cost what its windows hold, not what the file holds.
"""

from __future__ import annotations

from detector.policy import load_policy
from detector.scoring import counter_plan
from detector.state.base import Counts, FeedbackUpdate, Observation
from detector.state.memory import _SWEEP_EVERY, MemoryStore

T0 = 1_800_000_000.0
DAY = 86_400.0


def store() -> MemoryStore:
    return MemoryStore(counter_plan(load_policy()))


def observation(request_id: str, ts: float, number: str, address: str = "ip-1") -> Observation:
    return Observation(request_id, ts, {"msisdn": number, "ip": address, "all": "all"}, "GB")


async def test_records_expire_after_their_ttl_and_their_feedback_is_then_unknown() -> None:
    memory = store()
    ttl = memory.plan.record_ttl
    await memory.apply([observation("a", T0, "n-a")])
    [early] = await memory.apply([FeedbackUpdate("a", T0 + 60, resolved=True)])
    assert early == "applied"
    await memory.apply([observation("b", T0 + ttl + 1, "n-b")])  # moves time past a's record
    [late] = await memory.apply([FeedbackUpdate("a", T0 + ttl + 2, resolved=True)])
    assert late == "unknown"
    records, _ = memory._core.sizes()
    assert records == 1


async def test_a_sweep_forgets_entities_whose_windows_emptied_and_keeps_the_rest() -> None:
    memory = store()
    longest = max(w.seconds + w.width for ws in memory.plan.windows.values() for w in ws)
    await memory.apply([observation(f"old-{i}", T0 + i, f"n-old-{i}", f"ip-old-{i}") for i in range(50)])
    fresh = T0 + longest + DAY
    await memory.apply([observation("fresh", fresh, "n-fresh", "ip-fresh")])
    _, before = memory._core.sizes()
    memory._sweep(fresh)
    _, after = memory._core.sizes()
    assert before - after >= 100  # each old number and address (and their limits) went
    [counts] = await memory.apply([observation("fresh-2", fresh + 1, "n-fresh", "ip-fresh")])
    assert isinstance(counts, Counts)
    assert counts.windows[memory.plan.slots()[("ip", 600)]] == (2, 0)  # still in a window: kept
    assert counts.previous_ts == fresh


async def test_the_store_sweeps_by_itself_every_so_many_requests() -> None:
    memory = store()
    await memory.apply([observation("first", T0, "n-first", "ip-first")])
    later = T0 + 30 * DAY
    batch = [observation(f"r{i}", later + i / 1000, f"n-{i % 10}") for i in range(_SWEEP_EVERY)]
    await memory.apply(batch)
    [counts] = await memory.apply([observation("again", later + 300, "n-first", "ip-first")])
    assert isinstance(counts, Counts)
    assert counts.previous_ts is None  # the number was forgotten, not kept for ever
    assert counts.windows[memory.plan.slots()[("ip", 600)]] == (1, 0)
