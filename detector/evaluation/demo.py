"""`detector demo`: a simulated day, replayed in shadow and in enforce mode, as a table and an HTML report.

What a new user sees first, in well under a minute: per scenario, how many requests there were, how many
were blocked or challenged, and how much SMS cost that stopped; then where the report is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from detector.evaluation.evaluate import evaluate_file
from detector.evaluation.report import duration_text, write_html
from detector.evaluation.result import NO_OUTCOMES, Evaluation
from detector.evaluation.sim import DAY, resolve, simulate, write_events
from detector.events import Decision
from detector.policy import Policy, load_policy

DEMO_SEED = 2026


@dataclass(frozen=True, slots=True)
class DemoResult:
    events_path: Path
    report_path: Path
    json_path: Path
    enforce: Evaluation
    shadow: Evaluation
    seconds: float
    seed: int = DEMO_SEED
    duration: float = DAY


@contextmanager
def _bar(total: int, description: str, wanted: bool, unit: str = "req") -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr when it is a terminal (and wanted); otherwise nothing."""
    if not wanted or not sys.stderr.isatty():
        yield lambda _n: None
        return
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=unit == "req",
        file=sys.stderr,
        leave=False,
        mininterval=0.2,
    )
    try:
        yield bar.update
    finally:
        bar.close()


def run_demo(
    out_dir: str | Path = "out",
    *,
    seed: int = DEMO_SEED,
    duration: float = DAY,
    policy: Policy | str | None = None,
    progress: bool = True,
) -> DemoResult:
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)

    names = resolve("mix")
    with _bar(len(names), "simulating traffic", progress, unit="scenario") as tick:
        events = simulate(names, duration=duration, seed=seed, on_scenario=lambda _name: tick(1))
    requests = sum(1 for event in events if event["type"] == "otp_request")
    events_path = out / "demo-events.jsonl"
    write_events(events, events_path)
    del events

    reports: dict[str, Evaluation] = {}
    for shadow in (True, False):
        label = "replaying in shadow mode" if shadow else "replaying in enforce mode"
        with _bar(requests, label, progress) as tick:

            def on_decision(_decision: Decision, tick: Callable[[int], None] = tick) -> None:
                tick(1)

            reports["shadow" if shadow else "enforce"] = evaluate_file(
                events_path, loaded, shadow=shadow, on_decision=on_decision
            )
    enforce, shadow_report = reports["enforce"], reports["shadow"]
    report_path = write_html(enforce, out / "demo-report.html", shadow=shadow_report)
    json_path = out / "demo-evaluation.json"
    both = msgspec.json.encode({"enforce": enforce, "shadow": shadow_report})
    json_path.write_bytes(msgspec.json.format(both, indent=2))
    return DemoResult(
        events_path,
        report_path,
        json_path,
        enforce,
        shadow_report,
        time.perf_counter() - started,
        seed,
        duration,
    )


def demo_table(result: DemoResult) -> str:
    """The ten-second read: per scenario, requests, blocked / challenged, and the cost stopped."""
    report = result.enforce
    rows = report.scenarios
    span = duration_text(result.duration)
    lines = [
        f"Simulated {span} of OTP traffic (seed {result.seed}): {report.requests:,} requests in "
        f"{len(rows)} "
        f"scenarios, replayed with policy {report.policy_version} in shadow and in enforce mode.",
        "",
        f"  {'scenario':<20} {'kind':<6} {'requests':>9} {'blocked':>8} {'challenged':>11} "
        f"{'cost stopped':>22}",
    ]
    for name, row in rows.items():
        cost = f"${row.cost_stopped:,.2f} of ${row.cost_total:,.2f}"
        lines.append(
            f"  {name:<20} {(row.label or ''):<6} {row.requests:>9,} {row.blocked_pct:>7.1f}% "
            f"{row.challenged_pct:>10.1f}% {cost:>22}"
        )
    labels = report.labels
    targets = report.targets or {}
    if "attack" in labels and targets:
        attack, legit = labels["attack"], labels.get("legit", NO_OUTCOMES)

        def flag(name: str) -> str:
            return "ok" if targets[name].met else f"target {targets[name].target}%"

        lines += [
            "",
            f"  attacks: {attack.stopped_pct:.1f}% stopped ({flag('attack_stopped_pct')}), "
            f"${attack.cost_stopped:,.2f} of ${attack.cost_total:,.2f} SMS cost stopped "
            f"= {attack.cost_stopped_pct:.1f}% ({flag('attack_cost_stopped_pct')})",
            f"  legit:   {legit.blocked_pct:.2f}% blocked ({flag('legit_blocked_pct')}), "
            f"{legit.challenged_pct:.2f}% challenged ({flag('legit_challenged_pct')})",
        ]
    shadow = result.shadow.verdicts
    enforced = report.overall
    lines += [
        f"  shadow mode (nothing enforced) would have blocked {shadow.blocked:,} and challenged "
        f"{shadow.challenged:,}; enforce mode blocked {enforced.blocked:,} and challenged "
        f"{enforced.challenged:,}.",
        "",
        f"  report: {result.report_path}",
        f"  events: {result.events_path}",
        f"  try:    detector evaluate {result.events_path} --policy my-policy.yaml --html my-report.html",
        f"  done in {result.seconds:.0f} s",
    ]
    return "\n".join(lines)
