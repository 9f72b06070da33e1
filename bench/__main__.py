"""`make bench`: every benchmark, each in a fresh process so one cannot warm or slow the next.

python -m bench [replay engine replay_rss redis_store redis_replay pipeline send serve businesses]
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    "replay",
    "engine",
    "replay_rss",
    "redis_store",
    "redis_replay",
    "pipeline",
    "send",
    "serve",
    "businesses",
]


def main() -> None:
    chosen = sys.argv[1:] or BENCHMARKS
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    for name in chosen:
        print(f"\n=== bench.{name} ===", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False).returncode != 0:
            failed.append(name)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
