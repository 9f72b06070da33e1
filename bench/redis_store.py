"""Throughput of `RedisStore.apply` against a real redis-server, next to `MemoryStore` on the same stream.

    python -m bench.redis_store [--requests N] [--sizes 1,100,500,1000] [--url redis://…] [--chunk-size 256]

Starts its own redis-server (no persistence) unless ``--url`` or ``REDIS_URL`` names one. The stream is
`bench.streams.mixed_stream` (mostly unique numbers, ~5k IPs, ~70% of requests get a verified feedback),
turned into store updates by the engine's own `subject()` with the default policy, so the keys and the
counter plan are the production ones. Each batch size runs on a fresh namespace, right after the memory
store on the same batches (the machine may be shared: the ratio compares runs a few seconds apart).

Columns: events/s and the p50/p99 latency of one `apply(batch)`; RT/event, the store's round trips (waits
for an answer the next write depends on: two per batch) per event; writes/event, every write on the wire
(redis-py's `Connection.send_packed_command`, counted independently of the store: a flight writes once per
chunk and once more); client CPU (this process) and server CPU per event, the latter twice: the
server's own CPU time (``used_cpu_user`` + ``used_cpu_sys`` deltas of INFO cpu, everything it did, the socket
work included) and the scripts' time alone (EVALSHA and SCRIPT LOAD usec, INFO commandstats); the memory
store's events/s on the same batches is the ceiling. Memory: ``MEMORY USAGE`` of every key the
whole-engine run left, grouped by kind, and ``used_memory`` before/after. Last, the whole engine in batches of
1 and 8 as `detector serve` runs it (its decisions remembered with the next flight), next to the memory store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.utils import HIREDIS_AVAILABLE

from bench.streams import mixed_stream
from detector.engine import Engine
from detector.events import OtpFeedback, OtpRequest, parse_event, parse_timestamp
from detector.hashing import KeyedHasher
from detector.policy import Policy, default_policy_data, load_policy, merge, policy_from_data
from detector.scoring import counter_plan
from detector.state.base import CounterPlan, FeedbackUpdate, Observation, Store
from detector.state.memory import MemoryStore
from detector.state.redis import DEFAULT_CHUNK_SIZE, DEFAULT_SHARDS, RedisStore
from detector.testing.services import RedisServer

Update = Observation | FeedbackUpdate
TARGET = 20_000  # events/s at batch 500, one process


class WireCounter:
    """Counts `send_packed_command` calls on every redis-py asyncio connection: one per round trip."""

    def __init__(self) -> None:
        self.sends = 0
        self._original: Any = None

    def __enter__(self) -> WireCounter:
        original = Connection.send_packed_command
        self._original = original
        counter = self

        async def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            counter.sends += 1
            await original(conn, command, check_health)

        Connection.send_packed_command = counted  # type: ignore[method-assign, assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        Connection.send_packed_command = self._original  # type: ignore[method-assign]


def updates(requests: int) -> list[Update]:
    """The store calls the engine would make for `mixed_stream(requests)`."""
    policy = load_policy()
    engine = Engine(policy, MemoryStore(counter_plan(policy)), KeyedHasher(b"bench-key-" * 4))
    out: list[Update] = []
    for raw in mixed_stream(requests):
        event = parse_event(raw)
        if isinstance(event, OtpRequest):
            subject = engine.subject(event)
            out.append(Observation(event.request_id, subject.ts, subject.keys, subject.phone.region))
        elif isinstance(event, OtpFeedback):
            out.append(FeedbackUpdate(event.request_id, parse_timestamp(event.ts), event.outcome != "failed"))
    return out


async def _server_cpu(client: Redis) -> float:
    """The server's CPU seconds so far (user + system, all its threads), from INFO cpu."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def drive(store: Store, stream: Sequence[Update], batch_size: int) -> tuple[float, list[float]]:
    """Push the stream through `apply` one batch at a time; (seconds, per-batch latencies)."""
    latencies = []
    started = time.perf_counter()
    for start in range(0, len(stream), batch_size):
        batch = stream[start : start + batch_size]
        began = time.perf_counter()
        await store.apply(batch)
        latencies.append(time.perf_counter() - began)
    return time.perf_counter() - started, latencies


async def memory_report(url: str, namespace: str, active: dict[str, int]) -> None:
    """MEMORY USAGE of every key the run left, by kind (entity dimension, or request record)."""
    client = Redis.from_url(url)
    try:
        usage: dict[str, list[int]] = defaultdict(list)
        async for key in client.scan_iter(match=f"{namespace}*", count=1000):
            kind = key.decode().split("}:", 1)[1].split(":", 1)[0]
            usage[kind].append(await client.memory_usage(key, samples=0) or 0)
        print("  memory per key (MEMORY USAGE, bytes)      keys      mean    median")
        for kind, sizes in sorted(usage.items()):
            mean, median = statistics.fmean(sizes), statistics.median(sizes)
            print(f"    {kind:<36} {len(sizes):>8,} {mean:>9,.0f} {median:>9,.0f}")
        numbers, addresses = active.get("msisdn", 0), active.get("ip", 0)
        parts = []
        if numbers:
            parts.append(f"per active number {sum(usage.get('msisdn', [])) / numbers:,.0f} B")
        if addresses:
            parts.append(f"per active IP {sum(usage.get('ip', [])) / addresses:,.0f} B")
        if usage.get("req"):
            parts.append(f"per request record {statistics.fmean(usage['req']):,.0f} B")
        total = sum(sum(sizes) for sizes in usage.values())
        parts.append(f"all keys {total / 2**20:,.1f} MiB")
        print("    " + ";  ".join(parts))
    finally:
        await client.aclose()


async def run(url: str, requests: int, sizes: list[int], shards: int, chunk_size: int) -> None:
    plan: CounterPlan = counter_plan(load_policy())
    stream = updates(requests)
    observed = sum(isinstance(item, Observation) for item in stream)
    active: dict[str, set[str]] = defaultdict(set)
    for item in stream:
        if isinstance(item, Observation):
            for dim, key in item.keys.items():
                active[dim].add(key)
    print(
        f"redis store benchmark: {len(stream):,} updates ({observed:,} requests, {len(stream) - observed:,} "
        f"feedback), {len(active['msisdn']):,} numbers, {len(active['ip']):,} IPs, default policy plan, "
        f"{shards} shards, chunks of {chunk_size}, hiredis {'on' if HIREDIS_AVAILABLE else 'OFF'}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )

    client = Redis.from_url(url)
    before = (await client.info("memory"))["used_memory"]
    print(
        f"  {'batch':>5} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'RT/event':>9} {'writes/event':>12} "
        f"{'client CPU':>10} {'server CPU':>10} {'scripts':>10} {'memory ev/s':>11} {'ratio':>6}"
    )
    for size in sizes:
        seconds, _ = await drive(MemoryStore(plan), stream, size)
        memory_rate = len(stream) / seconds
        namespace = f"bench{size}-{os.getpid()}:"
        store = RedisStore.from_url(
            url, plan, timeout=30.0, namespace=namespace, shards=shards, chunk_size=chunk_size
        )
        await store.apply(stream[:1])  # connect and load the script outside the measurement
        rest = stream[1:]
        store.round_trips = 0
        await client.config_resetstat()
        server_cpu = await _server_cpu(client)
        cpu = time.process_time()
        with WireCounter() as wire:
            seconds, latencies = await drive(store, rest, size)
        cpu = time.process_time() - cpu
        server_cpu = await _server_cpu(client) - server_cpu
        stats = await client.info("commandstats")
        scripts = sum(
            stats.get(name, {}).get("usec", 0) for name in ("cmdstat_evalsha", "cmdstat_script|load")
        )
        await store.close()
        rate = len(rest) / seconds
        print(
            f"  {size:>5} {rate:>9,.0f} {_percentile(latencies, 0.5) * 1e3:>7.2f} "
            f"{_percentile(latencies, 0.99) * 1e3:>7.2f} {store.round_trips / len(rest):>9.4f} "
            f"{wire.sends / len(rest):>12.4f} {cpu / len(rest) * 1e6:>7.1f} us "
            f"{server_cpu / len(rest) * 1e6:>7.1f} us {scripts / len(rest):>7.1f} us "
            f"{memory_rate:>11,.0f} {rate / memory_rate:>6.3f}"
        )
    after = (await client.info("memory"))["used_memory"]
    await client.aclose()
    print(
        f"  used_memory grew by {(after - before) / 2**20:,.1f} MiB over all runs; "
        f"target: {TARGET:,} events/s at batch 500 in one process"
    )

    # The whole engine (parse, score, count, remember decisions) at batch 500, on both stores.
    lines = mixed_stream(requests)
    namespace = f"engine-{os.getpid()}:"
    rates = {}
    trips = 0.0
    engine_client = Redis.from_url(url)
    engine_server = 0.0
    # A generous store deadline, so the figure is throughput: with the default 250 ms a slow batch fails open.
    policy = policy_from_data(merge(default_policy_data(), {"state": {"timeout_ms": 30_000}}))
    for name in ("memory", "redis"):
        engine_store: Store = (
            MemoryStore(plan) if name == "memory"
            else RedisStore.from_url(url, plan, timeout=30.0, namespace=namespace, shards=shards,
                                     chunk_size=chunk_size)
        )  # fmt: skip
        engine = Engine(policy, engine_store, KeyedHasher(b"bench-key-" * 4))
        events = [parse_event(line) for line in lines]
        engine_server = await _server_cpu(engine_client)
        started = time.perf_counter()
        for start in range(0, len(events), 500):
            await engine.process(events[start : start + 500])
        rates[name] = len(events) / (time.perf_counter() - started)
        if isinstance(engine_store, RedisStore):
            trips = engine_store.round_trips / len(events)
            engine_server = (await _server_cpu(engine_client) - engine_server) / len(events)
        await engine_store.close()
    await engine_client.aclose()
    print(
        f"  whole engine at batch 500 (parse excluded, decisions remembered): "
        f"redis {rates['redis']:,.0f} events/s ({trips:.4f} RT/event, "
        f"server CPU {engine_server * 1e6:.1f} us/event), "
        f"memory {rates['memory']:,.0f} events/s, "
        f"ratio {rates['redis'] / rates['memory']:.3f}"
    )
    print(f"  keys left by the engine run ({namespace}, request records hold compressed decisions):")
    await memory_report(url, namespace, {dim: len(keys) for dim, keys in active.items()})
    await small_batches(url, policy, plan, lines[: max(2, requests // 10)], shards, chunk_size)


async def small_batches(
    url: str, policy: Policy, plan: CounterPlan, lines: Sequence[bytes], shards: int, chunk_size: int
) -> None:
    """The whole engine in the small batches of `detector serve` (its store waits 5 ms to remember with
    the next flight, as the service's does), next to the memory store on the same batches."""
    client = Redis.from_url(url)
    events = [parse_event(line) for line in lines]
    print("  whole engine in small batches, as `detector serve` runs it (remember_wait 5 ms):")
    print(f"    {'batch':>5} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'client CPU':>10} "
          f"{'server CPU':>10} {'memory ev/s':>11}")  # fmt: skip
    for size in (1, 8):
        rates: dict[str, float] = {}
        for name in ("memory", "redis"):
            store: Store = (
                MemoryStore(plan) if name == "memory"
                else RedisStore.from_url(url, plan, timeout=30.0, namespace=f"small{size}-{os.getpid()}:",
                                         shards=shards, chunk_size=chunk_size, remember_wait=0.005)
            )  # fmt: skip
            engine = Engine(policy, store, KeyedHasher(b"bench-key-" * 4))
            await engine.process(events[:1])  # connect and load the script outside the measurement
            rest = events[1:]
            latencies = []
            server = await _server_cpu(client)
            cpu = time.process_time()
            started = time.perf_counter()
            for start in range(0, len(rest), size):
                began = time.perf_counter()
                await engine.process(rest[start : start + size])
                latencies.append(time.perf_counter() - began)
            rates[name] = len(rest) / (time.perf_counter() - started)
            cpu = (time.process_time() - cpu) / len(rest)
            server = (await _server_cpu(client) - server) / len(rest)
            await store.close()
        print(
            f"    {size:>5} {rates['redis']:>9,.0f} {_percentile(latencies, 0.5) * 1e3:>7.2f} "
            f"{_percentile(latencies, 0.99) * 1e3:>7.2f} {cpu * 1e6:>7.0f} us {server * 1e6:>7.0f} us "
            f"{rates['memory']:>11,.0f}"
        )
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--sizes", default="1,100,500,1000")
    parser.add_argument("--url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.url:
        asyncio.run(run(args.url, args.requests, sizes, args.shards, args.chunk_size))
        return
    with tempfile.TemporaryDirectory() as workdir, RedisServer(Path(workdir)) as server:
        asyncio.run(run(server.url, args.requests, sizes, args.shards, args.chunk_size))


if __name__ == "__main__":
    main()
