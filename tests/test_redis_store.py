"""`RedisStore` on a real redis-server: the same answers as `MemoryStore`, shared safely between processes.

Every test uses its own key namespace on the session's server (``redis_url``); the outage tests get a
server of their own (``redis_server``) that they stop and start.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import multiprocessing
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from detector.engine import Engine, Result
from detector.events import Decision, parse_event
from detector.hashing import KeyedHasher
from detector.policy import Policy, default_policy_data, load_policy, merge, policy_from_data
from detector.scoring import counter_plan
from detector.state.base import (
    Answer,
    ChallengeUpdate,
    CounterPlan,
    Counts,
    FeedbackUpdate,
    Observation,
    Offence,
    Remembered,
    StoreUnavailable,
    Update,
)
from detector.state.memory import MemoryStore
from detector.state.redis import SCRIPT_SHA, RedisStore, _hiredis_packing, unpack_decision
from detector.testing.services import RedisServer, free_port, redis_ping
from detector.windows import Window

pytestmark = pytest.mark.redis

T0 = 1_795_420_800.0


def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


def small_plan(record_ttl: int = 100_000) -> CounterPlan:
    """Short windows, few buckets: a short stream evicts buckets, drops late events and fills the limit."""
    return CounterPlan(
        windows={
            "ip": (Window(60, 6), Window(600, 4)),
            "msisdn": (Window(120, 3),),
            "prefix": (Window(60, 6),),
            "phone_country": (Window(300, 5),),
        },
        peaks=frozenset({("ip", 600), ("phone_country", 300)}),
        limit_window=Window(90, 3),
        limit=3,
        distinct_window=200,
        record_ttl=record_ttl,
        pass_windows={"prefix": (Window(60, 6), Window(300, 5)), "ip": (Window(120, 4),)},
        quarantine_dimensions=frozenset({"prefix", "ip"}),
        quarantine_ttls=(30, 60, 120),
        quarantine_forget=100,
    )


def counts_of(plan: CounterPlan, windows: dict[tuple[str, int], tuple[int, int]], **fields: Any) -> Counts:
    """What a store answers a request with these window counts (by label) and these other fields."""
    counts = Counts.places(plan.window_count(), len(plan.pass_slots()))
    slots = plan.slots()
    for label, pair in windows.items():
        counts.windows[slots[label]] = pair
    for name, value in fields.items():
        setattr(counts, name, value)
    return counts


def random_stream(rng: random.Random, length: int, span: float = 2_000.0) -> list[Update]:
    """Requests on a few numbers and IPs, feedback of every kind, redeliveries and late events."""
    ids: list[str] = []
    stream: list[Update] = []
    ts = T0
    for _ in range(length):
        ts += rng.random() * span / length
        roll = rng.random()
        if ids and rng.random() < 0.1:  # a challenge's result: for a request, a stranger, or a ghost
            request_id = rng.choice(ids) if rng.random() < 0.9 else f"ghost{rng.randrange(1000)}"
            fingerprint = rng.choice(["", request_id, "someone else"])
            passed = rng.random() < 0.7
            stream.append(ChallengeUpdate(request_id, ts + rng.random() * 40, passed, fingerprint))
            continue
        if ids and roll < 0.3:
            request_id = rng.choice(ids) if rng.random() < 0.9 else f"ghost{rng.randrange(1000)}"
            stream.append(FeedbackUpdate(request_id, ts + rng.random() * 5, resolved=rng.random() < 0.7))
            continue
        request_id = rng.choice(ids) if ids and roll < 0.36 else f"r{len(ids)}"
        ids.append(request_id)
        when = ts - rng.random() * 400 if rng.random() < 0.12 else ts  # some late events, some very late
        keys = {
            "msisdn": f"n{rng.randrange(6)}",
            "ip": f"i{rng.randrange(4)}",
            "prefix": f"p{rng.randrange(3)}",
            "phone_country": rng.choice(["GB", "FR", "DE"]),
            "subnet": "uncounted",
        }
        for dim in ("ip", "prefix"):
            if rng.random() < 0.1:
                del keys[dim]
        member = rng.choice(["GB", "FR", "DE", "NG", None])
        # A repeated id is mostly a redelivery (same fingerprint), sometimes a reuse for something else.
        fingerprint = request_id if rng.random() < 0.7 else f"other{rng.randrange(3)}"
        take_slot = rng.random() < 0.85
        stream.append(Observation(request_id, when, keys, member, take_slot, fingerprint))
    return stream


def batches(stream: Sequence[Update], rng: random.Random, sizes: Sequence[int]) -> list[list[Update]]:
    out: list[list[Update]] = []
    start = 0
    while start < len(stream):
        size = rng.choice(sizes)
        out.append(list(stream[start : start + size]))
        start += size
    return out


async def run_both(
    redis: RedisStore, memory: MemoryStore, chunks: Sequence[Sequence[Update]]
) -> tuple[list[Answer], list[Answer]]:
    """Apply every batch to both stores, remembering a decision for each fresh request as the engine does."""
    got: list[Answer] = []
    want: list[Answer] = []
    for chunk in chunks:
        expected = await memory.apply(chunk)
        actual = await redis.apply(chunk)
        fresh = [  # every other fresh request opens a challenge for 30 s
            Remembered(
                item.request_id,
                item.ts,
                f"decision {item.request_id} {index}".encode(),
                item.ts + 30 if index % 2 else None,
            )
            for index, (item, answer) in enumerate(zip(chunk, expected, strict=True))
            if isinstance(item, Observation) and isinstance(answer, Counts) and not answer.duplicate
        ]
        offences = [  # every fifth fresh request quarantines its prefix or its address
            Offence(dim, item.keys[dim], item.ts, f"label {index}")
            for index, item in enumerate(chunk)
            if isinstance(item, Observation) and index % 5 == 0
            for dim in ("prefix", "ip")[index % 2 :][:1]
            if dim in item.keys
        ]
        await memory.remember(fresh, offences)
        await redis.remember(fresh, offences)
        want += expected
        got += actual
    return got, want


def assert_same(got: Sequence[object], want: Sequence[object], stream: Sequence[object]) -> None:
    assert len(got) == len(want)
    for index, (actual, expected) in enumerate(zip(got, want, strict=True)):
        assert actual == expected, f"update {index}: {stream[index]!r}"


@pytest.fixture
async def store_factory(redis_url: str) -> AsyncIterator[Callable[..., RedisStore]]:
    opened: list[RedisStore] = []

    def make(plan: CounterPlan, **options: Any) -> RedisStore:
        options.setdefault("namespace", namespace())
        options.setdefault("timeout", 5.0)
        store = RedisStore.from_url(redis_url, plan, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    ("seed", "sizes", "shards", "chunk_size"),
    [
        (1, [1], 64, 128),
        (2, [7, 3], 64, 128),
        (3, [50], 1, 128),
        (4, [200, 1, 13], 16, 128),
        (5, [500], 64, 128),
        (6, [2, 90], 3, 128),
        (7, [120, 45], 8, 5),  # many chunks per batch: claims, feedback and counts cross chunk boundaries
        (8, [300], 64, 1),
    ],
)
async def test_counts_match_the_memory_store(
    store_factory: Callable[..., RedisStore], seed: int, sizes: list[int], shards: int, chunk_size: int
) -> None:
    rng = random.Random(seed)
    plan = small_plan()
    stream = random_stream(rng, 600)
    store = store_factory(plan, shards=shards, chunk_size=chunk_size)
    got, want = await run_both(store, MemoryStore(plan), batches(stream, rng, sizes))
    assert_same(got, want, stream)
    # the stream exercised what it should
    assert any(isinstance(a, Counts) and a.duplicate and a.stored_decision for a in want)
    if max(sizes) >= 50:  # a request id twice in one batch: the second has no stored decision yet
        assert any(isinstance(a, Counts) and a.duplicate and a.stored_decision is None for a in want)
    assert {"applied", "failed", "unknown", "duplicate"} <= {a for a in want if isinstance(a, str)}
    assert any(isinstance(a, Counts) and not a.slot_taken for a in want)
    assert any(isinstance(a, Counts) and a.distinct >= 3 for a in want)


@pytest.mark.parametrize(("seed", "sizes", "chunk_size"), [(21, [1, 5], 128), (22, [60, 7], 16)])
async def test_remembering_with_the_next_flight_gives_the_same_answers(
    store_factory: Callable[..., RedisStore], seed: int, sizes: list[int], chunk_size: int
) -> None:
    """`remember_wait`: decisions and quarantines ride at the head of the next batch's flight, which sees
    them exactly as it would have seen them written in a round trip of their own."""
    rng = random.Random(seed)
    plan = small_plan()
    stream = random_stream(rng, 400)
    store = store_factory(plan, chunk_size=chunk_size, remember_wait=60.0)
    sent: list[tuple[Any, ...]] = []
    send, remember = store._send, store.remember

    async def spy(connection: Any, commands: list[tuple[Any, ...]]) -> None:
        sent.extend(commands)
        await send(connection, commands)

    async def remembering(decisions: Sequence[Remembered], offences: Sequence[Offence] = ()) -> None:
        before = len(sent)
        await remember(decisions, offences)
        assert len(sent) == before  # nothing sent of its own

    store._send = spy  # type: ignore[method-assign]
    store.remember = remembering  # type: ignore[method-assign]
    got, want = await run_both(store, MemoryStore(plan), batches(stream, rng, sizes))
    assert_same(got, want, stream)
    assert any(isinstance(a, Counts) and a.duplicate and a.stored_decision for a in want)
    assert any(command[3 + command[2]] == "R" for command in sent if command[0] == "EVALSHA")


async def test_remembered_decisions_go_on_their_own_when_no_flight_comes(
    store_factory: Callable[..., RedisStore],
) -> None:
    plan = small_plan()
    waiting = store_factory(plan, remember_wait=0.01)
    closing = store_factory(plan, namespace=waiting.namespace, remember_wait=60.0)
    reader = store_factory(plan, namespace=waiting.namespace)
    await waiting.apply([Observation("a", T0, {"msisdn": "n"})])
    await closing.apply([Observation("b", T0, {"msisdn": "n"})])
    await waiting.remember([Remembered("a", T0, b"kept a")])
    await closing.remember([Remembered("b", T0, b"kept b")])
    await closing.close()  # sends what waits
    deadline = time.monotonic() + 5
    while True:
        [a, b] = await reader.apply([Observation("a", T0 + 1, {"msisdn": "n"}), Observation("b", T0 + 1, {})])
        assert b == Counts(duplicate=True, stored_decision=b"kept b")
        if a == Counts(duplicate=True, stored_decision=b"kept a") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)
    assert a == Counts(duplicate=True, stored_decision=b"kept a")


@pytest.mark.parametrize(
    ("seed", "requests_only", "chunk_size"),
    [(41, True, 16), (42, False, 16), (43, False, 1), (44, True, 500)],
)
async def test_answers_are_handed_over_chunk_by_chunk_complete_and_in_order(
    store_factory: Callable[..., RedisStore], seed: int, requests_only: bool, chunk_size: int
) -> None:
    """`on_answers` gets each chunk's answers once, in batch order, already complete (a copy taken then
    equals what `apply` returns at the end, and the memory store's answers), with claims, feedback and counts
    crossing chunk boundaries, and later chunks' claims answered before earlier chunks' counts."""
    rng = random.Random(seed)
    plan = small_plan()
    stream = [item for item in random_stream(rng, 700) if isinstance(item, Observation) or not requests_only]
    store, memory = store_factory(plan, chunk_size=chunk_size), MemoryStore(plan)
    for batch in batches(stream, rng, [120, 37, 1]):
        parts: list[list[Any]] = []

        def take(part: Sequence[Any], parts: list[list[Any]] = parts) -> None:
            parts.append(copy.deepcopy(list(part)))

        got = await store.apply(batch, take)
        sizes = [len(batch[start : start + chunk_size]) for start in range(0, len(batch), chunk_size)]
        assert [len(part) for part in parts] == sizes
        assert [answer for part in parts for answer in part] == got
        assert got == await memory.apply(batch)


@pytest.mark.parametrize(
    ("seed", "sizes", "chunk_size", "wait"),
    [(31, [1, 4], 128, None), (32, [80, 9], 16, None), (33, [300], 64, 60.0), (34, [2, 30], 5, 60.0)],
)
async def test_requests_alone_take_one_round_trip_and_the_same_answers(
    store_factory: Callable[..., RedisStore], seed: int, sizes: list[int], chunk_size: int, wait: float | None
) -> None:
    """A batch of requests only is one fused call per chunk: redeliveries (in earlier batches and the same
    one), reused ids and requests without a send slot answer exactly as with claims and counts apart."""
    rng = random.Random(seed)
    plan = small_plan()
    stream = [item for item in random_stream(rng, 1200) if isinstance(item, Observation)]
    store = store_factory(plan, chunk_size=chunk_size, remember_wait=wait)
    kinds: list[str] = []
    send = store._send

    async def spy(connection: Any, commands: list[tuple[Any, ...]]) -> None:
        kinds.extend(command[3 + command[2]] for command in commands if command[0] == "EVALSHA")
        await send(connection, commands)

    store._send = spy  # type: ignore[method-assign]
    chunks = batches(stream, rng, sizes)
    got, want = await run_both(store, MemoryStore(plan), chunks)
    assert_same(got, want, stream)
    assert "Q" not in kinds and kinds.count("F") == sum(-(-len(chunk) // chunk_size) for chunk in chunks)
    assert any(isinstance(a, Counts) and a.duplicate and a.stored_decision for a in want)
    assert any(isinstance(a, Counts) and a.reused for a in want)
    assert any(isinstance(a, Counts) and not a.slot_taken for a in want)
    if max(sizes) >= 30:  # a request id twice in one batch: the second has no stored decision yet
        assert any(isinstance(a, Counts) and a.duplicate and a.stored_decision is None for a in want)


async def test_counts_match_with_the_default_policy_plan(store_factory: Callable[..., RedisStore]) -> None:
    rng = random.Random(11)
    plan = counter_plan(load_policy())
    stream = random_stream(rng, 800, span=3 * 86_400.0)
    for item in stream:
        if isinstance(item, Observation):
            item.keys["session"] = f"s{rng.randrange(50)}"
            item.keys["account"] = f"a{rng.randrange(5)}"
    got, want = await run_both(store_factory(plan), MemoryStore(plan), batches(stream, rng, [1, 40, 300]))
    assert_same(got, want, stream)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(1, 120),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    span=st.sampled_from([30.0, 500.0, 5_000.0]),
    chunk_size=st.sampled_from([1, 3, 128]),
)
def test_counts_match_on_generated_streams(
    redis_url: str, seed: int, length: int, sizes: list[int], span: float, chunk_size: int
) -> None:
    async def check() -> None:
        rng = random.Random(seed)
        plan = small_plan()
        stream = random_stream(rng, length, span)
        store = RedisStore.from_url(
            redis_url, plan, timeout=5.0, namespace=namespace(), shards=4, chunk_size=chunk_size
        )
        try:
            got, want = await run_both(store, MemoryStore(plan), batches(stream, rng, sizes))
        finally:
            await store.close()
        assert_same(got, want, stream)

    asyncio.run(check())


async def test_records_expire_in_event_time_like_the_memory_store(
    store_factory: Callable[..., RedisStore],
) -> None:
    plan = small_plan(record_ttl=100)
    keys = {"msisdn": "n1", "ip": "i1"}
    stream: list[Update] = [
        Observation("a", T0, dict(keys)),
        Observation("b", T0 + 50, dict(keys)),
        Observation("a", T0 + 99, dict(keys)),  # still remembered: a duplicate
        FeedbackUpdate("a", T0 + 99.5, resolved=True),
        Observation("c", T0 + 100, dict(keys)),  # a's record is now 100 s old
        Observation("a", T0 + 101, dict(keys)),  # forgotten: counted again
        FeedbackUpdate("b", T0 + 120, resolved=True),
    ]
    got, want = await run_both(store_factory(plan), MemoryStore(plan), [stream[:3], stream[3:]])
    assert_same(got, want, stream)
    assert isinstance(want[2], Counts) and want[2].duplicate
    assert isinstance(want[5], Counts) and not want[5].duplicate


async def test_a_flushed_script_cache_is_reloaded(
    store_factory: Callable[..., RedisStore], redis_url: str
) -> None:
    rng = random.Random(7)
    plan = small_plan()
    stream = random_stream(rng, 300)
    store, memory = store_factory(plan), MemoryStore(plan)
    admin = Redis.from_url(redis_url)
    got: list[Answer] = []
    want: list[Answer] = []
    try:
        for chunk in batches(stream, rng, [30]):
            await admin.script_flush()
            g, w = await run_both(store, memory, [chunk])
            got += g
            want += w
    finally:
        await admin.aclose()
    assert_same(got, want, stream)


async def test_a_script_flushed_before_remember_is_reloaded(
    store_factory: Callable[..., RedisStore], redis_url: str
) -> None:
    plan = small_plan()
    store = store_factory(plan)
    admin = Redis.from_url(redis_url)
    try:
        await store.apply([Observation("a", T0, {"msisdn": "n", "ip": "i"})])
        await admin.script_flush()
        await store.remember([Remembered("a", T0, b"kept")], [Offence("ip", "i", T0, "an address")])
        assert await admin.script_exists(SCRIPT_SHA) == [True]
    finally:
        await admin.aclose()
    [again] = await store.apply([Observation("a", T0 + 1, {"msisdn": "n", "ip": "i"})])
    assert again == Counts(duplicate=True, stored_decision=b"kept")
    assert [q.key for q in await store.quarantines(T0 + 1)] == ["i"]


async def test_decisions_are_shared_between_stores_byte_for_byte(
    store_factory: Callable[..., RedisStore],
) -> None:
    plan = small_plan()
    name = namespace()
    first, second = store_factory(plan, namespace=name), store_factory(plan, namespace=name)
    decisions = [b'{"decision":"kept"}', bytes(range(256)) * 9, b"\n", b""]
    await first.apply([Observation(f"x{index}", T0, {"msisdn": "n"}) for index in range(len(decisions))])
    await first.remember([Remembered(f"x{index}", T0, decision) for index, decision in enumerate(decisions)])
    await first.remember([Remembered("x0", T0, b"a second decision for a request is ignored")])
    again = await second.apply(
        [Observation(f"x{index}", T0 + 1, {"msisdn": "n"}) for index in range(len(decisions))]
    )
    assert again == [Counts(duplicate=True, stored_decision=decision) for decision in decisions]


async def test_records_of_earlier_versions_still_answer(
    store_factory: Callable[..., RedisStore], redis_url: str
) -> None:
    """Entity keys as a JSON list, and decisions in a format this version cannot read (0x02 was encrypted)."""
    plan = small_plan()
    store = store_factory(plan)
    keys = {"msisdn": "n1", "ip": "i1"}
    await store.apply([Observation("warm", T0, dict(keys))])
    client = Redis.from_url(redis_url)
    try:
        for request_id, decision in (("old", b"\x02" + bytes(60)), ("older", b"\x03garbage")):
            _, name = store.record_key(request_id)
            record = f"0{T0!r}\n" + '["msisdn","n1","ip","i1"]\n'
            await client.set(name, record.encode() + decision, px=100_000_000)
    finally:
        await client.aclose()
    got = await store.apply([
        Observation("old", T0 + 1, dict(keys)),
        Observation("older", T0 + 1, dict(keys)),
        FeedbackUpdate("old", T0 + 2, resolved=True),
        Observation("new", T0 + 3, dict(keys)),
    ])  # fmt: skip
    assert got[:3] == [Counts(duplicate=True), Counts(duplicate=True), "applied"]
    assert isinstance(got[3], Counts)
    expected = {("msisdn", 120): (2, 1), ("ip", 60): (2, 1), ("ip", 600): (2, 1)}
    assert got[3].windows == counts_of(plan, expected).windows


def test_hiredis_packs_commands_as_redis_py_does() -> None:
    fast, plain = _hiredis_packing(Connection)(), Connection()
    for command in [
        ("EVALSHA", "0" * 40, 2, b"det:{1}:ip:ab", b"det:{1}:msisdn:cd", "E", bytes(range(256)), "172800"),
        ("SCRIPT LOAD", "return 1"),
        (b"SCRIPT", b"LOAD", "return 'é'"),
        ("SET", "k", 1795420800.42, "PX", 10**12),
    ]:
        assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command)), command


# --------------------------------------------------------------------------- whole engine

PHONES = [f"+4474001{n:05d}" for n in range(0, 90_000, 7_919)] + [
    "+14155550123",
    "+33612345678",
    "+2348031234567",
]
IPS = ["203.0.113.5", "203.0.113.77", "198.51.100.23", "192.0.2.200", "2001:db8::17", "2001:db8:0:1::5"]


def engine_events(rng: random.Random, count: int, *, message: bool = False) -> list[bytes]:
    lines: list[bytes] = []
    sent: list[dict[str, Any]] = []
    ts = T0
    for index in range(count):
        ts += rng.expovariate(1 / 20)
        roll = rng.random()
        if sent and roll < 0.35:
            outcome = rng.choice(["verified", "verified", "failed", "completed_other"])
            request_id = rng.choice(sent)["request_id"] if rng.random() < 0.95 else "never-sent"
            lines.append(
                orjson.dumps(
                    {"type": "otp_feedback", "request_id": request_id, "ts": ts + 3, "outcome": outcome}
                )
            )
        elif sent and roll < 0.42:
            lines.append(orjson.dumps(rng.choice(sent)))  # a redelivery
        else:
            event = {
                "type": "otp_request", "request_id": f"req-{index}", "ts": ts,
                "phone": PHONES[0] if rng.random() < 0.3 else rng.choice(PHONES),
                "client_ip": rng.choice(IPS),
                "session_id": f"sess-{rng.randrange(10)}", "account_id": f"acct-{rng.randrange(4)}",
                "flow": "login",
            }  # fmt: skip
            if rng.random() < 0.3:
                event["ip_country"] = rng.choice(["GB", "US", "NG"])
            if message:
                event["message"] = {"text": f"Code 4821 for {event['phone']} from {event['client_ip']}"}
            sent.append(event)
            lines.append(orjson.dumps(event))
    return lines


async def run_engine(
    engine: Engine, lines: Sequence[bytes], sizes: Sequence[int], rng: random.Random
) -> list[Result]:
    results: list[Result] = []
    start = 0
    while start < len(lines):
        size = rng.choice(sizes)
        results += await engine.process([parse_event(line) for line in lines[start : start + size]])
        start += size
    return results


def policy_with(**overrides: Any) -> Policy:
    return policy_from_data(merge(default_policy_data(), overrides))


@pytest.mark.parametrize("chunk_size", [256, 7])
async def test_engine_decisions_match_the_memory_store(
    store_factory: Callable[..., RedisStore], chunk_size: int
) -> None:
    """The same decisions whether the engine gets a batch's answers at once or chunk by chunk (7)."""
    policy = load_policy()
    plan = counter_plan(policy)
    lines = engine_events(random.Random(5), 1_500)
    hasher = KeyedHasher(b"k" * 32)
    want = await run_engine(Engine(policy, MemoryStore(plan), hasher), lines, [1, 25, 200], random.Random(9))
    store = store_factory(plan, chunk_size=chunk_size)
    got = await run_engine(Engine(policy, store, hasher), lines, [1, 25, 200], random.Random(9))
    assert len(got) == len(want)
    for index, (actual, expected) in enumerate(zip(got, want, strict=True)):
        assert actual == expected, f"result {index}: {lines[index]!r}"
    decisions = [r for r in want if isinstance(r, Decision)]
    codes = {reason.code for decision in decisions for reason in decision.reasons}
    assert {"msisdn_rate_limit", "retry_too_soon", "ip_distinct_phone_countries"} <= codes, codes
    assert not {"state_unavailable", "redelivered_without_record"} & codes
    assert {"applied", "failed", "unknown", "duplicate"} <= {r for r in want if isinstance(r, str)}


# --------------------------------------------------------------------------- privacy, TTL, cluster slots


def _readable(value: object) -> list[bytes]:
    """Every string and number inside a decoded value, as text."""
    if isinstance(value, dict):
        return [part for item in value.items() for inner in item for part in _readable(inner)]
    if isinstance(value, list | tuple):
        return [part for inner in value for part in _readable(inner)]
    if isinstance(value, bytes):
        return [value]
    return [str(value).encode(), repr(value).encode()]


def _views(key: bytes, value: bytes) -> list[bytes]:
    """The stored value as stored, and everything in it decoded: msgpack entity state, request records (their
    entity keys as JSON, their decision inflated and parsed), open challenges (their expiry, or 'done')."""
    if b"}:chl:" in key:
        return [value]
    if b"}:req:" not in key:
        return [value, *_readable(msgspec.msgpack.decode(value))]
    head, keys, decision = value.split(b"\n", 2)
    views = [value, head, *_readable(orjson.loads(keys))]
    if decision:
        plain = unpack_decision(decision)
        assert plain is not None, (key, value)
        views += [plain, *_readable(orjson.loads(plain))]
    return views


async def test_no_number_or_address_anywhere_and_every_key_expires(
    store_factory: Callable[..., RedisStore], redis_url: str
) -> None:
    """Nothing stored, once decoded, holds a phone number (or its digits) or a client IP in any spelling."""
    policy = policy_with(lists={"deny_ips": ["203.0.113.77/32"], "deny_phones": [PHONES[3]]})
    plan = counter_plan(policy)
    store = store_factory(plan)
    lines = engine_events(random.Random(8), 600, message=True)
    results = await run_engine(
        Engine(policy, store, KeyedHasher(b"k" * 32)), lines, [1, 50], random.Random(2)
    )
    reasons = {reason.code for result in results if isinstance(result, Decision) for reason in result.reasons}
    assert {"denied_ip", "denied_phone", "msisdn_rate_limit"} <= reasons, reasons

    needles: set[bytes] = set()
    for phone in PHONES:
        digits = phone.lstrip("+")
        needles |= {phone.encode(), digits.encode(), digits[-9:].encode(), digits[-7:].encode()}
    for ip in IPS:
        address = ipaddress.ip_address(ip)
        needles |= {ip.encode(), address.exploded.encode(), address.compressed.encode()}
        if address.version == 6:
            needles.add(address.packed)  # 4 packed bytes of an IPv4 address could turn up by chance
        else:
            needles |= {str(int(address)).encode(), ipaddress.ip_address(f"::ffff:{ip}").exploded.encode()}
    every_window = [w for windows in (*plan.windows.values(), *plan.pass_windows.values()) for w in windows]
    longest = max(plan.record_ttl, *(window.seconds + window.width for window in every_window))
    client = Redis.from_url(redis_url)
    decisions = 0
    try:
        keys = [key async for key in client.scan_iter(match=f"{store.namespace}*", count=1000)]
        assert len(keys) > 100
        for key in keys:
            assert await client.type(key) == b"string"
            value = await client.get(key)
            assert isinstance(value, bytes)
            views = [key, *_views(key, value)]
            decisions += any(view.startswith(b'{"type":"otp_decision"') for view in views)
            for needle in needles:
                for view in views:
                    assert needle not in view, (needle, key, view)
            ttl = await client.pttl(key)
            assert 0 < ttl <= longest * 1000, (key, ttl)
    finally:
        await client.aclose()
    assert decisions > 100  # the decisions were read, inflated and searched


async def test_every_script_call_stays_in_one_cluster_slot(store_factory: Callable[..., RedisStore]) -> None:
    """The calls a cluster gets (one pipeline per round trip, split by node) each touch one hash slot."""
    rng = random.Random(3)
    plan = small_plan()
    store = store_factory(plan, shards=64)
    store._pool = None  # the cluster's path, on the one server this test has
    store._by_shard = 1
    calls: list[tuple[Any, ...]] = []
    execute = store._execute

    async def spy(commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        calls.extend(commands)
        return await execute(commands)

    store._execute = spy  # type: ignore[method-assign]
    stream = random_stream(rng, 400)
    await run_both(store, MemoryStore(plan), batches(stream, rng, [100]))
    assert len(calls) > 64
    for command in calls:
        assert command[0] == "EVALSHA"
        keys = command[3 : 3 + command[2]]
        assert keys, command[:4]
        assert len({key_slot(key) for key in keys}) == 1, keys


async def test_one_server_gets_one_call_per_chunk_and_kind(store_factory: Callable[..., RedisStore]) -> None:
    """On one server a chunk's claims go in one call and its counts in another, whatever their shards; the
    script is sent once per connection, not with every flight."""
    rng = random.Random(3)
    plan = small_plan()
    store = store_factory(plan, shards=64, chunk_size=50)
    calls: list[tuple[Any, ...]] = []
    loads: list[tuple[Any, ...]] = []
    send = store._send

    async def spy(connection: Any, commands: list[tuple[Any, ...]]) -> None:
        calls.extend(command for command in commands if command[0] != b"SCRIPT")
        loads.extend(command for command in commands if command[0] == b"SCRIPT")
        await send(connection, commands)

    store._send = spy  # type: ignore[method-assign]
    stream = random_stream(rng, 400)
    await run_both(store, MemoryStore(plan), batches(stream, rng, [100]))
    chunks = -(-len(stream) // 50)
    kinds = [command[3 + command[2]] for command in calls]
    assert kinds.count("Q") == chunks
    assert 0 < kinds.count("E") <= chunks + kinds.count("R")  # remember: one call of each, quarantines
    assert max(len({key_slot(key) for key in command[3 : 3 + command[2]]}) for command in calls) > 1
    assert len(loads) == 1, loads


# --------------------------------------------------------------------------- Redis Cluster


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10_000 <= 65_535:
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 10_000))
                return port
            except OSError:
                continue


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[int]]:
    """A three-master Redis Cluster on loopback (slots split evenly); yields the masters' ports."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    ports: list[int] = []
    while len(ports) < 3:
        port = _cluster_port()
        if port not in ports:
            ports.append(port)
    processes = []
    try:
        for port in ports:
            workdir = tmp_path / str(port)
            workdir.mkdir()
            processes.append(subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
                 "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        deadline = time.monotonic() + 15
        while not all(redis_ping(port) for port in ports):
            assert time.monotonic() < deadline, "cluster nodes did not start"
            time.sleep(0.05)
        nodes = [sync_redis.Redis(port=port) for port in ports]
        step = 16_384 // len(ports)
        for index, node in enumerate(nodes):
            last = 16_383 if index == len(nodes) - 1 else (index + 1) * step - 1
            node.execute_command("CLUSTER", "ADDSLOTSRANGE", index * step, last)
        for port in ports[1:]:
            nodes[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        deadline = time.monotonic() + 30
        while not all(
            b"cluster_state:ok" in node.execute_command("CLUSTER", "INFO")
            and b"cluster_known_nodes:3" in node.execute_command("CLUSTER", "INFO")
            for node in nodes
        ):
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.05)
        for node in nodes:
            node.close()
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


async def test_a_redis_cluster_gives_the_same_answers(redis_cluster: list[int]) -> None:
    url = f"redis://127.0.0.1:{redis_cluster[0]}/0?cluster=1"
    rng = random.Random(21)
    plan = small_plan()
    stream = random_stream(rng, 500)
    store = RedisStore.from_url(url, plan, timeout=5.0, namespace=namespace(), shards=32)
    try:
        got, want = await run_both(store, MemoryStore(plan), batches(stream, rng, [1, 60, 200]))
    finally:
        await store.close()
    assert_same(got, want, stream)

    policy = load_policy()
    lines = engine_events(random.Random(6), 600)
    hasher = KeyedHasher(b"k" * 32)
    expected = await run_engine(
        Engine(policy, MemoryStore(counter_plan(policy)), hasher), lines, [1, 100], random.Random(4)
    )
    store = RedisStore.from_url(url, counter_plan(policy), timeout=5.0)
    try:
        actual = await run_engine(Engine(policy, store, hasher), lines, [1, 100], random.Random(4))
    finally:
        await store.close()
    assert actual == expected

    for port in redis_cluster:  # every master holds some of the keys
        with sync_redis.Redis(port=port) as node:
            assert node.dbsize() > 10, port


# --------------------------------------------------------------------------- the send limit across processes

RACERS = 4
PER_RACER = 12


def _race(url: str, name: str, racer: int, start: Any, results: Any) -> None:
    async def go() -> list[bool]:
        plan = counter_plan(load_policy())
        store = RedisStore.from_url(url, plan, timeout=10.0, namespace=name)
        try:
            taken: list[bool] = []
            start.wait()
            for round_ in range(PER_RACER // 3):
                batch = [
                    Observation(f"p{racer}-{round_}-{i}", T0, {"msisdn": "same-number"}) for i in range(3)
                ]
                answers = await store.apply(batch)
                taken += [answer.slot_taken for answer in answers if isinstance(answer, Counts)]
            return taken
        finally:
            await store.close()

    results.put((racer, asyncio.run(go())))


def test_racing_processes_never_share_the_last_slot(redis_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(RACERS)
    results = context.Queue()
    name = namespace()
    workers = [
        context.Process(target=_race, args=(redis_url, name, r, start, results)) for r in range(RACERS)
    ]
    for worker in workers:
        worker.start()
    collected = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    taken = [flag for flags in collected.values() for flag in flags]
    assert len(taken) == RACERS * PER_RACER
    assert sum(taken) == counter_plan(load_policy()).limit


# --------------------------------------------------------------------------- outages


def request_line(index: int, phone: str = "+447400123456") -> bytes:
    return orjson.dumps(
        {
            "type": "otp_request",
            "request_id": f"o-{index}-{uuid.uuid4().hex[:6]}",
            "ts": T0 + index,
            "phone": phone,
            "client_ip": "203.0.113.9",
        }
    )


async def decide(engine: Engine, index: int) -> tuple[Decision, float]:
    started = time.monotonic()
    [decision] = await engine.process([parse_event(request_line(index))])
    assert isinstance(decision, Decision)
    return decision, time.monotonic() - started


def codes(decision: Decision) -> set[str]:
    return {reason.code for reason in decision.reasons}


def wait_for_ping(url: str, deadline: float) -> None:
    async def ping() -> bool:
        client = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    while not asyncio.run(ping()):
        assert time.monotonic() < deadline, "redis did not come back"


@pytest.mark.parametrize(("on_error", "action"), [("open", "allow"), ("block", "block")])
async def test_an_outage_follows_the_fail_mode_and_counting_resumes(
    redis_server: RedisServer, on_error: str, action: str
) -> None:
    policy = policy_with(state={"on_error": on_error, "timeout_ms": 300})
    timeout = policy.state.timeout_ms / 1000
    bound = 2 * timeout + 0.5  # the store's deadline, the engine's own, and scheduling slack
    store = RedisStore.from_url(redis_server.url, counter_plan(policy), timeout=timeout)
    engine = Engine(policy, store, KeyedHasher(b"k" * 32))
    try:
        decision, _ = await decide(engine, 0)
        assert "state_unavailable" not in codes(decision)

        await asyncio.to_thread(redis_server.stop)
        for index in range(1, 4):
            decision, elapsed = await decide(engine, index)
            assert elapsed < bound, elapsed
            assert "state_unavailable" in codes(decision)
            assert decision.action == action

        await asyncio.to_thread(redis_server.start)  # same port, empty: the script must be loaded again
        decision, elapsed = await decide(engine, 10)
        assert "state_unavailable" not in codes(decision), decision
        assert elapsed < bound
    finally:
        await store.close()


async def test_a_server_that_stops_answering_times_out_and_does_not_poison_the_pool(
    redis_server: RedisServer,
) -> None:
    plan = small_plan()
    timeout = 0.3
    store = RedisStore.from_url(redis_server.url, plan, timeout=timeout, namespace=namespace())
    admin = Redis.from_url(redis_server.url)
    try:
        assert (await store.apply([Observation("warm", T0, {"msisdn": "a"})]))[0] == counts_of(
            plan, {("msisdn", 120): (1, 0)}, slot_taken=True, slot_count=1
        )
        await admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.apply([Observation("lost", T0, {"msisdn": "b", "ip": "x"})])
        assert time.monotonic() - started < timeout + 0.25
        with pytest.raises(StoreUnavailable):
            await store.remember([Remembered("warm", T0, b"d")])
        assert time.monotonic() - started < 2 * timeout + 0.5
        with pytest.raises(StoreUnavailable):  # each SCAN bounded too: no socket timeout
            await store.quarantines(T0)
        assert time.monotonic() - started < 3 * timeout + 0.5

        await asyncio.to_thread(wait_for_ping, redis_server.url, time.monotonic() + 10)
        [fresh] = await store.apply([Observation("fresh", T0 + 1, {"msisdn": "c"})])
        assert fresh == counts_of(plan, {("msisdn", 120): (1, 0)}, slot_taken=True, slot_count=1)
        [again] = await store.apply([Observation("warm", T0 + 2, {"msisdn": "a"})])
        assert isinstance(again, Counts) and again.duplicate
    finally:
        await admin.aclose()
        await store.close()
