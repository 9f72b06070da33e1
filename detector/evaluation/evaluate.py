"""How well a policy does on a file of events: replay it, then count what happened to whom and what it cost.

Labelled files (the simulator's: `label` and `scenario` on every request, which the engine ignores) give,
overall and per scenario: attack requests blocked / challenged / allowed, legitimate requests blocked /
challenged, the attack cost let through against the total, and the time to detect (attack requests let
through before the first block). A request counts as *stopped* when it is blocked or challenged: a
challenge (a CAPTCHA, a step-up) is where a script gives up, so its SMS is not paid for.

The outcome of a request is its `action` (what was enforced); for a decision made in shadow mode it is
the `verdict` (what would have been enforced). The `verdicts` section is always by verdict: what the
policy would block, by reason, country, prefix and client address, and what that costs — the view that
an unlabelled file (real traffic replayed in shadow mode) gets.

Costs come from `detector.evaluation.sim.prices.price_for` by the number's country.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import orjson

from detector.evaluation.result import (
    Detection,
    Evaluation,
    Outcomes,
    Ranked,
    ScenarioOutcomes,
    Scores,
    Target,
    Timeline,
    Verdicts,
)
from detector.evaluation.sim.prices import price_for
from detector.events import Action, Decision
from detector.policy import Policy

ACTIONS: tuple[Action, ...] = ("allow", "challenge", "block")
LABELS = ("legit", "attack")
TIMELINE_BUCKET = 900.0  # seconds: 15 minutes
SCORE_BIN = 10.0
SCORE_BINS = 16  # 0-10, ..., 140-150, and 150+ in the last
TOP = 15

# The detection targets of the issue, on the demo mix with the default policy.
TARGETS: dict[str, tuple[str, float]] = {
    "attack_stopped_pct": (">=", 95.0),
    "attack_cost_stopped_pct": (">=", 98.0),
    "legit_blocked_pct": ("<=", 0.5),
    "legit_challenged_pct": ("<=", 2.0),
}


@dataclass(frozen=True, slots=True)
class RequestMeta:
    label: str | None
    scenario: str | None


def read_meta(lines: Iterable[tuple[int, bytes]]) -> dict[str, RequestMeta]:
    """request_id → (label, scenario), read from the raw lines (the engine drops fields it does not know)."""
    meta: dict[str, RequestMeta] = {}
    for _, raw in lines:
        if b'"label"' not in raw and b'"scenario"' not in raw:
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or obj.get("type") != "otp_request":
            continue
        request_id = obj.get("request_id")
        if not isinstance(request_id, str) or request_id in meta:
            continue
        label, scenario = obj.get("label"), obj.get("scenario")
        meta[request_id] = RequestMeta(
            label if isinstance(label, str) else None, scenario if isinstance(scenario, str) else None
        )
    return meta


def outcome_of(decision: Decision) -> Action:
    """What happened to the request: the action when enforced, the verdict when decided in shadow mode."""
    return decision.verdict if decision.mode == "shadow" else decision.action


@dataclass
class Tally:
    """Counts and costs of one group of requests, in event-time order."""

    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    cost: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0.0))
    first_ts: float | None = None
    first_block_ts: float | None = None
    before_first_block: int = 0
    allowed_before_first_block: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # every reason that fired
    stopping_reasons: Counter[str] = field(default_factory=Counter)  # reasons on blocked / challenged

    def add(self, outcome: Action, cost: float, ts: float, codes: Iterable[str]) -> None:
        self.requests += 1
        self.outcomes[outcome] += 1
        self.cost[outcome] += cost
        if self.first_ts is None:
            self.first_ts = ts
        if self.first_block_ts is None:
            if outcome == "block":
                self.first_block_ts = ts
            else:
                self.before_first_block += 1
                if outcome == "allow":
                    self.allowed_before_first_block += 1
        for code in codes:
            self.reasons[code] += 1
            if outcome != "allow":
                self.stopping_reasons[code] += 1

    def summary(self) -> Outcomes:
        total_cost = sum(self.cost.values())
        stopped = self.outcomes["block"] + self.outcomes["challenge"]
        stopped_cost = self.cost["block"] + self.cost["challenge"]
        detect = Detection(
            blocked_ever=self.first_block_ts is not None,
            requests_before_first_block=self.before_first_block,
            allowed_before_first_block=self.allowed_before_first_block,
            seconds_to_first_block=(
                round(self.first_block_ts - self.first_ts, 3)
                if self.first_block_ts is not None and self.first_ts is not None
                else None
            ),
        )
        return Outcomes(
            requests=self.requests,
            allowed=self.outcomes["allow"],
            challenged=self.outcomes["challenge"],
            blocked=self.outcomes["block"],
            allowed_pct=_pct(self.outcomes["allow"], self.requests),
            challenged_pct=_pct(self.outcomes["challenge"], self.requests),
            blocked_pct=_pct(self.outcomes["block"], self.requests),
            stopped_pct=_pct(stopped, self.requests),
            cost_total=round(total_cost, 4),
            cost_let_through=round(self.cost["allow"], 4),
            cost_challenged=round(self.cost["challenge"], 4),
            cost_blocked=round(self.cost["block"], 4),
            cost_stopped=round(stopped_cost, 4),
            cost_stopped_pct=_pct(stopped_cost, total_cost),
            time_to_detect=detect,
            reasons=dict(self.reasons.most_common()),
            stopping_reasons=dict(self.stopping_reasons.most_common()),
        )


@dataclass
class _Breakdown:
    """Requests and cost of one outcome, by a key (reason, country, prefix, address)."""

    counts: Counter[str] = field(default_factory=Counter)
    cost: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, key: str, cost: float) -> None:
        self.counts[key] += 1
        self.cost[key] += cost

    def top(self, n: int = TOP) -> list[Ranked]:
        return [Ranked(key, count, round(self.cost[key], 4)) for key, count in self.counts.most_common(n)]


class Evaluator:
    """Collects decisions (in event-time order) against what the file says each request was."""

    def __init__(
        self,
        meta: Mapping[str, RequestMeta] | None = None,
        *,
        prefix_digits: int = 3,
        bucket_seconds: float = TIMELINE_BUCKET,
    ) -> None:
        self.meta = meta or {}
        self.prefix_digits = prefix_digits
        self.bucket_seconds = bucket_seconds
        self.overall = Tally()
        self.by_label: dict[str, Tally] = {}
        self.by_scenario: dict[str, Tally] = {}
        self.scenario_label: dict[str, str] = {}
        self.start_ts: float | None = None
        self.end_ts: float | None = None
        self.timeline: dict[str, dict[int, list[int]]] = {}
        self.scores: dict[str, list[int]] = {}
        self.verdicts = Tally()
        self.would_block = {name: _Breakdown() for name in ("reason", "country", "prefix", "ip")}
        self.would_challenge_reasons = _Breakdown()
        self.blocked = {name: _Breakdown() for name in ("country", "prefix", "ip")}
        self.modes: Counter[str] = Counter()
        self.policy_versions: Counter[str] = Counter()

    @property
    def labelled(self) -> bool:
        return bool(self.by_label)

    def add(self, decision: Decision, ts: float) -> None:
        outcome = outcome_of(decision)
        cost = price_for(decision.phone_country)
        codes = [reason.code for reason in decision.reasons]
        info = self.meta.get(decision.request_id)
        label = info.label if info is not None and info.label in LABELS else None
        scenario = (info.scenario if info is not None else None) or (label or "unlabelled")
        self.modes[decision.mode] += 1
        self.policy_versions[decision.policy_version] += 1
        if self.start_ts is None:
            self.start_ts = ts
        self.end_ts = ts if self.end_ts is None else max(self.end_ts, ts)

        self.overall.add(outcome, cost, ts, codes)
        if label is not None:
            self.by_label.setdefault(label, Tally()).add(outcome, cost, ts, codes)
            self.scenario_label.setdefault(scenario, label)
        self.by_scenario.setdefault(scenario, Tally()).add(outcome, cost, ts, codes)

        bucket = int((ts - self.start_ts) // self.bucket_seconds)
        series = self.timeline.setdefault(scenario, {})
        cell = series.get(bucket)
        if cell is None:
            cell = series[bucket] = [0, 0, 0]
        cell[ACTIONS.index(outcome)] += 1

        bins = self.scores.setdefault(label or "unlabelled", [0] * SCORE_BINS)
        bins[min(int(max(decision.score, 0.0) // SCORE_BIN), SCORE_BINS - 1)] += 1

        self.verdicts.add(decision.verdict, cost, ts, codes)
        prefix = self._prefix(decision.phone)
        if decision.verdict == "block":
            for code in codes:
                self.would_block["reason"].add(code, cost)
            self.would_block["country"].add(decision.phone_country or "?", cost)
            self.would_block["prefix"].add(prefix, cost)
            self.would_block["ip"].add(decision.client_ip or "?", cost)
        elif decision.verdict == "challenge":
            for code in codes:
                self.would_challenge_reasons.add(code, cost)
        if outcome == "block":
            self.blocked["country"].add(decision.phone_country or "?", cost)
            self.blocked["prefix"].add(prefix, cost)
            self.blocked["ip"].add(decision.client_ip or "?", cost)

    def _prefix(self, phone: str | None) -> str:
        if not phone:
            return "?"
        digits = self.prefix_digits
        return phone[: len(phone) - digits] + "x" * digits if digits else phone

    def report(
        self,
        *,
        source: str | None = None,
        events: int | None = None,
        feedback: int | None = None,
        bad_input: int = 0,
    ) -> Evaluation:
        scenarios = {
            name: ScenarioOutcomes(
                label=self.scenario_label.get(name), **msgspec.structs.asdict(tally.summary())
            )
            for name, tally in sorted(self.by_scenario.items(), key=lambda kv: _scenario_order(kv[0], self))
        }
        mode = self.modes.most_common(1)[0][0] if self.modes else None
        buckets = self._bucket_count()
        return Evaluation(
            source=source,
            policy_version=self.policy_versions.most_common(1)[0][0] if self.policy_versions else None,
            mode=mode,
            basis="verdict" if mode == "shadow" else "action",
            labelled=self.labelled,
            events=events,
            requests=self.overall.requests,
            feedback=feedback,
            bad_input=bad_input,
            start_ts=self.start_ts,
            end_ts=self.end_ts,
            overall=self.overall.summary(),
            labels={label: self.by_label[label].summary() for label in LABELS if label in self.by_label},
            scenarios=scenarios,
            targets=self.targets() if self.labelled else None,
            blocked={name: breakdown.top() for name, breakdown in self.blocked.items()},
            verdicts=Verdicts(
                **msgspec.structs.asdict(self.verdicts.summary()),
                would_block_by_reason=self.would_block["reason"].top(50),
                would_block_by_country=self.would_block["country"].top(),
                would_block_by_prefix=self.would_block["prefix"].top(),
                would_block_by_ip=self.would_block["ip"].top(),
                would_challenge_by_reason=self.would_challenge_reasons.top(50),
            ),
            timeline=Timeline(
                bucket_seconds=self.bucket_seconds,
                buckets=buckets,
                series={
                    name: {
                        action: [self.timeline[name].get(b, [0, 0, 0])[i] for b in range(buckets)]
                        for i, action in enumerate(ACTIONS)
                    }
                    for name in scenarios
                },
            ),
            scores=Scores(bin=SCORE_BIN, bins=SCORE_BINS, by_label=dict(self.scores)),
        )

    def _bucket_count(self) -> int:
        if self.start_ts is None or self.end_ts is None:
            return 0
        return int((self.end_ts - self.start_ts) // self.bucket_seconds) + 1

    def targets(self) -> dict[str, Target]:
        attack = self.by_label.get("attack", Tally()).summary()
        legit = self.by_label.get("legit", Tally()).summary()
        values = {
            "attack_stopped_pct": attack.stopped_pct,
            "attack_cost_stopped_pct": attack.cost_stopped_pct,
            "legit_blocked_pct": legit.blocked_pct,
            "legit_challenged_pct": legit.challenged_pct,
        }
        result: dict[str, Target] = {}
        for name, (op, bound) in TARGETS.items():
            value = values[name]
            met = value >= bound if op == ">=" else value <= bound
            result[name] = Target(value, f"{op} {bound:g}", met)
        return result


def _scenario_order(name: str, evaluator: Evaluator) -> tuple[int, int, str]:
    from detector.evaluation.sim.scenarios import SCENARIOS

    label = evaluator.scenario_label.get(name)
    known = list(SCENARIOS)
    return (
        0 if label == "legit" else 1 if label == "attack" else 2,
        known.index(name) if name in known else len(known),
        name,
    )


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 3) if whole else 0.0


# --- running it ---------------------------------------------------------------------------------------


def evaluate_file(
    path: str | Path,
    policy: Policy | str | None = None,
    store_url: str = "memory://",
    *,
    shadow: bool = False,
    progress: bool = False,
    batch_size: int = 1000,
    on_decision: Callable[[Decision], None] | None = None,
) -> Evaluation:
    """Replay `path` through a new engine and return its evaluation.

    `progress` shows replay's own progress bar (on a terminal); `on_decision` sees every decision.
    """
    from detector.policy import load_policy
    from detector.replay import Line, Summary, parse_lines, read_lines, replay
    from detector.wiring import build_engine, check_store

    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    if shadow:
        loaded = msgspec.structs.replace(loaded, mode="shadow")
    meta = read_meta(read_lines(path))
    lines = parse_lines(read_lines(path))
    engine = build_engine(loaded, store_url)
    evaluator = Evaluator(meta, prefix_digits=loaded.phone.prefix_digits)

    def collect(line: Line, decision: Decision) -> None:
        evaluator.add(decision, line.ts)
        if on_decision is not None:
            on_decision(decision)

    async def run() -> Summary:
        try:
            await check_store(engine.store, store_url)
            return await replay(engine, lines, batch_size=batch_size, on_decision=collect, progress=progress)
        finally:
            await engine.store.close()

    summary = asyncio.run(run())
    report = evaluator.report(
        source=str(path), events=summary.events, feedback=summary.feedback, bad_input=summary.bad_input
    )
    return msgspec.structs.replace(
        report,
        policy_version=loaded.version,
        mode=loaded.mode,
        basis="verdict" if loaded.mode == "shadow" else "action",
        challenge_at=loaded.score.challenge_at,
        block_at=loaded.score.block_at,
    )


# --- the human table --------------------------------------------------------------------------------------


def format_table(report: Evaluation) -> str:
    """A short plain-text table: per scenario, what happened and what it cost."""
    lines = [
        f"policy {report.policy_version} ({report.mode} mode, outcome = {report.basis}); "
        f"{report.requests:,} requests",
    ]
    header = (
        f"{'scenario':<20} {'label':<6} {'requests':>8} {'blocked':>8} {'challgd':>8} {'allowed':>8} "
        f"{'cost $':>9} {'stopped $':>10} {'let thru $':>10} {'detect':>7}"
    )
    lines += [header, "-" * len(header)]
    for name, row in report.scenarios.items():
        detect = row.time_to_detect
        if row.label == "attack":
            detect_text = str(detect.allowed_before_first_block) if detect.blocked_ever else "never"
        else:
            detect_text = ""
        lines.append(
            f"{name[:20]:<20} {(row.label or '-'):<6} {row.requests:>8,} "
            f"{row.blocked_pct:>7.2f}% "
            f"{row.challenged_pct:>7.2f}% {row.allowed_pct:>7.2f}% {row.cost_total:>9.2f} "
            f"{row.cost_stopped:>10.2f} {row.cost_let_through:>10.2f} {detect_text:>7}"
        )
    if report.labels:
        lines.append("-" * len(header))
        for label, total in report.labels.items():
            lines.append(
                f"{'all ' + label:<20} {label:<6} {total.requests:>8,} {total.blocked_pct:>7.2f}% "
                f"{total.challenged_pct:>7.2f}% {total.allowed_pct:>7.2f}% {total.cost_total:>9.2f} "
                f"{total.cost_stopped:>10.2f} {total.cost_let_through:>10.2f}"
            )
        lines.append("detect = attack requests allowed before the scenario's first block")
    if report.targets:
        parts = [
            f"{name} {t.value:.2f} ({t.target}) {'ok' if t.met else 'MISSED'}"
            for name, t in report.targets.items()
        ]
        lines.append("targets: " + "; ".join(parts))
    if not report.labels:
        verdicts = report.verdicts
        lines.append(
            f"would block {verdicts.blocked:,} and challenge {verdicts.challenged:,} of "
            f"{verdicts.requests:,} requests; cost of the would-be-blocked: "
            f"${verdicts.cost_blocked:,.2f}"
        )
        for entry in verdicts.would_block_by_reason[:8]:
            lines.append(f"  {entry.key:<36} {entry.requests:>8,}  ${entry.cost:>10,.2f}")
    return "\n".join(lines)
