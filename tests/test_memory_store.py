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


async def test_dimension_names_are_found_by_value_and_odd_keys_are_ignored() -> None:
    """The core matches a request's key names by identity first; names built at run time (equal strings,
    other objects), a key that is not a dimension, a non-string name and a None key are all read as the
    plain dict would be."""
    memory = store()
    msisdn, ip = "".join(["ms", "isdn"]), "".join(["i", "p"])
    keys: dict = {msisdn: "n-1", ip: "ip-1", "all": "all", "not-a-dimension": "x", 7: "7", "session": None}
    [first] = await memory.apply([Observation("a", T0, keys, "GB")])
    [second] = await memory.apply([observation("b", T0 + 1, "n-1", "ip-1")])
    assert isinstance(first, Counts) and isinstance(second, Counts)
    slots = memory.plan.slots()
    assert second.windows[slots[("msisdn", 86400)]] == (2, 0)
    assert second.windows[slots[("ip", 600)]] == (2, 0)
    assert second.previous_ts == T0
    assert first.windows[slots[("session", 3600)]] is None  # a None key: no entity


async def test_keys_of_any_length_are_entities_of_their_own() -> None:
    """Keys up to 24 bytes are held inline in the core's tables, longer ones on the heap: both count apart,
    even when they share their first 24 bytes."""
    memory = store()
    prefix = "k" * 24
    numbers = ["", "n", prefix, prefix + "a", prefix + "b", "é" * 30, prefix * 4]
    for round_ in range(3):
        batch = [observation(f"r{round_}-{i}", T0 + round_, n, f"ip-{i}") for i, n in enumerate(numbers)]
        answers = await memory.apply(batch)
    slot = memory.plan.slots()[("msisdn", 86400)]
    assert [a.windows[slot] for a in answers if isinstance(a, Counts)] == [(3, 0)] * len(numbers)


async def test_counts_above_the_shared_small_ones_are_exact() -> None:
    memory = store()
    slot = memory.plan.slots()[("ip", 600)]
    seen = []
    for i in range(40):
        [counts] = await memory.apply([observation(f"r{i}", T0 + i, f"n-{i}", "ip-busy")])
        await memory.apply([FeedbackUpdate(f"r{i}", T0 + i + 1, resolved=i % 2 == 0)])
        assert isinstance(counts, Counts)
        seen.append(counts.windows[slot])
    assert seen == [(i + 1, (i + 1) // 2) for i in range(40)]
