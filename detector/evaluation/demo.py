"""`detector demo`: a simulated day, replayed in shadow and in enforce mode, as a table and an HTML report.

What a new user sees first, in well under a minute: per scenario, how many requests there were, how many
were blocked or challenged, and, with every challenge followed to its end, how many SMS were sent anyway,
who got a code and how much later, and the attack cost leaked; then where the report is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from detector.evaluation.challenges import ClientModel
from detector.evaluation.containment import containment_text
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
    client: ClientModel | None = None,
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

            def on_decision(decision: Decision, tick: Callable[[int], None] = tick) -> None:
                if decision.supersedes is None:  # the bar counts requests, not the ends of challenges
                    tick(1)

            reports["shadow" if shadow else "enforce"] = evaluate_file(
                events_path, loaded, shadow=shadow, on_decision=on_decision, client=client
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
    """The ten-second read: per scenario, requests, blocked / challenged / stopped at the first decision,
    and, with every challenge followed to its end, the SMS actually sent, who got a code, the delay a
    challenge added, and the attack cost leaked."""
    report = result.enforce
    rows = report.scenarios
    span = duration_text(result.duration)
    lines = [
        f"Simulated {span} of OTP traffic (seed {result.seed}): {report.requests:,} requests in "
        f"{len(rows)} "
        f"scenarios, replayed with policy {report.policy_version} in shadow and in enforce mode.",
        "",
        f"  {'scenario':<20} {'kind':<6} {'requests':>9} {'blocked':>8} {'challenged':>11} {'stopped':>8} "
        f"{'SMS sent':>15} {'got code':>9} {'+delay':>7} {'cost leaked':>20}",
    ]
    for name, row in rows.items():
        done = row.follow_through
        sent = served = delay = leaked = ""
        if done is not None:
            sent = f"{done.sms_sent:,} ({done.sms_sent_pct:.1f}%)"
            if row.label == "legit":
                served = f"{done.users_served_pct:.2f}%"
            else:
                leaked = f"${done.cost_sent:,.2f} of ${row.cost_total:,.2f}"
            if done.challenge_delay_median_s is not None:
                delay = f"{done.challenge_delay_median_s:.0f} s"
        lines.append(
            f"  {name:<20} {(row.label or ''):<6} {row.requests:>9,} {row.blocked_pct:>7.1f}% "
            f"{row.challenged_pct:>10.1f}% {row.stopped_pct:>7.1f}% {sent:>15} {served:>9} {delay:>7} "
            f"{leaked:>20}"
        )
    labels = report.labels
    targets = report.targets or {}
    if "attack" in labels and targets:
        attack, legit = labels["attack"], labels.get("legit", NO_OUTCOMES)

        def flag(name: str) -> str:
            return "ok" if targets[name].met else f"target {targets[name].target}%"

        lines += [
            "",
            f"  attacks: {attack.stopped_pct:.1f}% stopped at the first decision "
            f"({flag('attack_stopped_pct')}), ${attack.cost_stopped:,.2f} of ${attack.cost_total:,.2f} SMS "
            f"cost stopped = {attack.cost_stopped_pct:.1f}% ({flag('attack_cost_stopped_pct')})",
        ]
        done = attack.follow_through
        if done is not None:
            lines.append(
                f"           followed to the end: {done.sms_sent:,} attack SMS sent ({attack.allowed:,} "
                f"allowed at once, {done.challenges_sent:,} after a passed challenge), "
                f"${done.cost_sent:,.2f} leaked ({done.cost_sent_pct:.1f}% of the attack cost)"
            )
        lines.append(
            f"  legit:   {legit.blocked_pct:.2f}% blocked ({flag('legit_blocked_pct')}), "
            f"{legit.challenged_pct:.2f}% challenged ({flag('legit_challenged_pct')})"
        )
        done = legit.follow_through
        if done is not None:
            median, p90 = done.challenge_delay_median_s, done.challenge_delay_p90_s
            added = (
                f"; a passed challenge added {median:.0f} s (median; 90% within {p90:.0f} s)"
                if median is not None and p90 is not None
                else ""
            )
            lines.append(
                f"           {done.users_served_pct:.2f}% of {done.users:,} people got their code{added}"
            )
    loop = report.closed_loop
    if loop is not None:
        lines.append(
            f"  challenges answered by simulated clients: people pass {100 * loop.legit_pass_rate:.0f}% "
            f"after {loop.legit_delay_s:.0f} s (median), bots never, a CAPTCHA farm mostly; "
            f"{loop.answers:,} answers replayed"
        )
    if "attack" in labels and report.overall.delayed:  # the delay rung is on (it is off by default)
        attack, legit = labels["attack"], labels.get("legit", NO_OUTCOMES)
        lines.append(
            f"  delayed first (then counted by the retry's decision): {legit.delayed_pct:.2f}% of legitimate "
            f"requests, {attack.delayed_pct:.2f}% of attack requests ({attack.delayed_unsent:,} never sent)"
        )
    if report.containment is not None:
        lines += ["  " + line for line in containment_text(report.containment).splitlines()]
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
