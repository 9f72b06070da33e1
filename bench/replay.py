"""Replay throughput of the embedded engine, next to a bare parse+encode pass over the same lines.

python -m bench.replay [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import msgspec
import orjson

from bench.streams import mixed_stream
from detector.engine import Engine
from detector.events import Decision, encode, parse_event
from detector.replay import parse_lines
from detector.wiring import build_engine, tune_gc


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def baseline(lines: list[bytes]) -> float:
    """The floor any replay pays: parse each line and encode one object (events per CPU second)."""
    started = time.process_time()
    for raw in lines:
        msgspec.json.encode(orjson.loads(raw))
    return len(lines) / (time.process_time() - started)


async def throughput(engine: Engine, lines: list[bytes], batch_size: int) -> tuple[float, float]:
    """Events per CPU second of this process (one core, whatever else runs), and per wall-clock second."""
    started, wall = time.process_time(), time.perf_counter()
    parsed = list(parse_lines(enumerate(lines, start=1)))
    for start in range(0, len(parsed), batch_size):
        for result in await engine.process([line.event for line in parsed[start : start + batch_size]]):
            if isinstance(result, Decision):
                encode(result)
    return len(lines) / (time.process_time() - started), len(lines) / (time.perf_counter() - wall)


async def latencies(engine: Engine, lines: list[bytes]) -> tuple[list[float], list[float]]:
    """Per-event time, one event per call: parse, count, score, encode. Wall clock, and this thread's CPU
    time (what the event cost, whatever else the machine runs)."""
    wall, cpu = [], []
    for raw in lines:
        started, started_cpu = time.perf_counter(), time.thread_time()
        for result in await engine.process([parse_event(raw)]):
            if isinstance(result, Decision):
                encode(result)
        cpu.append(time.thread_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=150_000)
    args = parser.parse_args()
    lines = mixed_stream(args.requests)
    tune_gc()
    print(f"replay benchmark: {len(lines):,} events ({args.requests:,} requests, mostly unique numbers)")
    floor = baseline(lines)
    rate, wall_rate = asyncio.run(throughput(build_engine(), lines, batch_size=1000))
    samples, cpu = asyncio.run(latencies(build_engine(), lines[: min(len(lines), 50_000)]))
    print(f"  bare parse+encode baseline : {floor:>10,.0f} events/s   (events per CPU second)")
    print(
        f"  engine replay (batch 1000) : {rate:>10,.0f} events/s   ratio to baseline {rate / floor:.3f}"
        f"   (wall clock: {wall_rate:,.0f} events/s)"
    )
    print(
        f"  per-event latency (batch 1): p50 {_percentile(samples, 0.5) * 1e6:,.1f} us   "
        f"p99 {_percentile(samples, 0.99) * 1e6:,.1f} us   mean {statistics.fmean(samples) * 1e6:,.1f} us"
        "   (wall clock)"
    )
    print(
        f"  per-event CPU (batch 1)    : p50 {_percentile(cpu, 0.5) * 1e6:,.1f} us   "
        f"p99 {_percentile(cpu, 0.99) * 1e6:,.1f} us   mean {statistics.fmean(cpu) * 1e6:,.1f} us"
    )
    print("  target: 50,000 events/s on one core, ratio >= 0.05, p99 <= 100 us at batch 1 (issue 14)")


if __name__ == "__main__":
    main()
