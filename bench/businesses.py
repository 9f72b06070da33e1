"""The default policy, unchanged, on each business profile: a simulated day, evaluated, and the figures of
issue 12 per business (one table each), then per scenario what happened and which reasons stopped it.

python -m bench.businesses [--business NAME ...] [--duration 24h] [--policy FILE]

Each profile has a fixed seed of its own here (not the tests' seeds), so the tuning cannot fit one day.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from detector.evaluation.evaluate import evaluate_file, format_scorecard
from detector.evaluation.result import Evaluation
from detector.evaluation.sim import BUSINESSES, DAY, simulate, write_events
from detector.policy import load_policy

SEEDS = {"gulf": 4101, "north_america": 4202, "south_east_asia": 4303}


def run(name: str, seed: int, duration: float, policy: str | None, workdir: Path) -> Evaluation:
    events = workdir / f"{name}-{seed}.jsonl"
    write_events(simulate(business=name, seed=seed, duration=duration), events)
    return evaluate_file(events, load_policy(policy))


def scenario_lines(report: Evaluation) -> list[str]:
    lines = [
        f"  {'scenario':<20} {'label':<6} {'requests':>8} {'blocked':>8} {'challgd':>8} "
        f"{'before stop':>11}  stopping reasons"
    ]
    for name, row in report.scenarios.items():
        before = str(row.time_to_detect.allowed_before_first_stop) if row.label == "attack" else ""
        reasons = ", ".join(f"{code} {n}" for code, n in list(row.stopping_reasons.items())[:4])
        lines.append(
            f"  {name[:20]:<20} {row.label or '-':<6} {row.requests:>8,} {row.blocked_pct:>7.2f}% "
            f"{row.challenged_pct:>7.2f}% {before:>11}  {reasons}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--business", action="append", choices=list(BUSINESSES))
    parser.add_argument("--duration", type=float, default=DAY, help="seconds of traffic per business")
    parser.add_argument("--policy", default=None, help="a policy file (default: the bundled default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-businesses-") as tmp:
        for name in args.business or list(BUSINESSES):
            seed = SEEDS[name]
            started = time.perf_counter()
            report = run(name, seed, args.duration, args.policy, Path(tmp))
            card = report.scorecard
            assert card is not None  # the simulator's files are labelled
            elapsed = time.perf_counter() - started
            print(
                f"\n{name} (seed {seed}, policy {report.policy_version}): {report.requests:,} requests, "
                f"{report.labels['attack'].requests:,} of them attacks; {elapsed:.0f} s"
            )
            print(format_scorecard(card))
            print("\n".join(scenario_lines(report)), flush=True)


if __name__ == "__main__":
    main()
