"""Replay's memory at two file sizes: it streams its input, so RSS follows the live state, not the file.

python -m bench.replay_rss [EVENTS ...]    (default: 200000 2000000)

For each size, simulates that many events (the `mix` scenarios, one seed, as many days as it takes) into a
temporary file, runs `detector replay` on it in a child process, and prints the child's peak RSS next to the
file's size. The state the memory store keeps is bounded by its windows and `state.record_ttl` (48 h), so a
file of many days should cost about what two days do.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from detector.evaluation.sim import DEFAULT_START, simulate

EVENTS_PER_DAY = 53_700  # the `mix` scenarios at their usual volumes, seed 3 (measured)


def write_days(path: Path, events: int) -> int:
    """About `events` simulated events, a day at a time (a different seed each day), so this process stays
    small; returns how many were written."""
    written = 0
    with path.open("wb") as out:
        for day in range(math.ceil(events / EVENTS_PER_DAY) + 1):
            for event in simulate("mix", duration=86400, seed=3 + day, start=DEFAULT_START + day * 86400):
                out.write(orjson.dumps(event) + b"\n")
                written += 1
                if written >= events:
                    return written
    return written


def measure(events: int, folder: Path) -> tuple[int, float, float, float]:
    """(events written, file MiB, the replay's peak RSS MiB, seconds) for a replay of `events` events."""
    path = folder / f"{events}.jsonl"
    written = write_days(path, events)
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "detector", "replay", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"detector replay failed on {path} (status {status})")
    size = path.stat().st_size / 2**20
    path.unlink()
    return written, size, usage.ru_maxrss / 1024, elapsed


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [200_000, 2_000_000]
    print(f"{'events':>10} {'file MiB':>9} {'peak RSS MiB':>13} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="replay-rss-") as folder:
        for events in sorted(sizes):
            written, size, rss, elapsed = measure(events, Path(folder))
            print(f"{written:>10,} {size:>9.0f} {rss:>13.0f} {elapsed:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
