"""How well a policy does on a file of events: replay it, then count what happened to whom and what it cost.

Labelled files (the simulator's: `label` and `scenario` on every request, which the engine ignores) give,
overall and per scenario: attack requests blocked / challenged / allowed, legitimate requests blocked /
challenged, the attack cost let through against the total, and the time to detect (attack requests let
through before the first block). A request counts as *stopped* when its first decision blocks or
challenges it: a challenge (a CAPTCHA, a step-up) is where a script gives up, but not a CAPTCHA farm.

The outcome of a request is its `action` (what was enforced); for a decision made in shadow mode it is
the `verdict` (what would have been enforced). The `verdicts` section is always by verdict: what the
policy would block, by reason, country, prefix and client address, and what that costs — the view that
an unlabelled file (real traffic replayed in shadow mode) gets.

In enforce mode each challenge is then followed to its end (`detector.evaluation.challenges`): the
simulated client answers, the answer goes back into the engine, and its new decision says whether the SMS
was sent. `follow_through` reports what that made of each group: SMS actually sent (allowed at once, or
after a passed challenge), their cost (for an attack, the cost leaked), the share of people (sessions)
who got a code, and the delay a challenge added. "Stopped" alone overstates a challenge that a
CAPTCHA-solving service passes.

Costs come from `detector.evaluation.sim.prices.price_for` by the number's country.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import orjson

from detector.evaluation.challenges import FOLLOW_SPAN_S, ClientModel, ClosedLoop
from detector.evaluation.containment import ContainmentCounter
from detector.evaluation.result import (
    ClosedLoopSettings,
    Detection,
    Evaluation,
    FollowThrough,
    Outcomes,
    Ranked,
    ScenarioOutcomes,
    Scorecard,
    Scores,
    Target,
    Timeline,
    Verdicts,
)
from detector.evaluation.sim.prices import price_for
from detector.events import Action, Decision
from detector.policy import Policy

ACTIONS: tuple[Action, ...] = ("allow", "delay", "challenge", "block")
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

# The targets of issue 12, on each business profile with the default policy unchanged.
BUSINESS_TARGETS: dict[str, tuple[str, float]] = {
    "attack_stopped_pct": (">=", 97.0),
    "attack_blocked_pct": (">=", 95.0),
    "attack_cost_stopped_pct": (">=", 99.0),
    "legit_blocked_pct": ("<=", 0.1),
    "legit_challenged_pct": ("<=", 1.0),
    "worst_attack_stopped_pct": (">=", 90.0),
    "allowed_before_first_stop": ("<=", 10),
}


def _judge(values: Mapping[str, float], bounds: Mapping[str, tuple[str, float]]) -> dict[str, Target]:
    result: dict[str, Target] = {}
    for name, (op, bound) in bounds.items():
        value = values[name]
        met = value >= bound if op == ">=" else value <= bound
        result[name] = Target(value, f"{op} {bound:g}", met)
    return result


@dataclass(frozen=True, slots=True)
class RequestMeta:
    label: str | None
    scenario: str | None
    session: str | None = None
    pass_rate: float | None = None  # how its client answers a challenge (see `challenges`)
    delay_s: float | None = None


def read_meta(lines: Iterable[tuple[int, bytes]]) -> dict[str, RequestMeta]:
    """request_id → what the simulator wrote about it (label, scenario, session, how it answers a
    challenge), read from the raw lines (the engine drops fields it does not know)."""
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
        label, scenario, session = obj.get("label"), obj.get("scenario"), obj.get("session_id")
        meta[request_id] = RequestMeta(
            label if isinstance(label, str) else None,
            scenario if isinstance(scenario, str) else None,
            session if isinstance(session, str) else None,
            _number(obj.get("challenge_pass_rate"), 0.0, 1.0),
            _number(obj.get("challenge_delay_s"), 0.001, 86_400.0),
        )
    return meta


def _number(value: object, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        return None
    return float(value)


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
    stopped_ever: bool = False
    allowed_before_first_stop: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # every reason that fired
    stopping_reasons: Counter[str] = field(default_factory=Counter)  # reasons on blocked / challenged
    # the follow-through (enforced decisions): SMS sent at once or after a challenge, and to whom
    sent_at_once: int = 0
    challenges_sent: int = 0
    challenges_blocked: int = 0
    cost_sent: float = 0.0
    users: set[str] = field(default_factory=set)
    users_served: set[str] = field(default_factory=set)
    challenge_delays: list[float] = field(default_factory=list)
    delayed: int = 0  # requests whose first decision was delay (their outcome is their retry's)
    delay_waits: list[float] = field(default_factory=list)  # seconds a delay added before an SMS

    def add(
        self,
        outcome: Action,
        cost: float,
        ts: float,
        codes: Iterable[str],
        user: str = "",
        delayed: float | None = None,
    ) -> None:
        """One request's outcome; `delayed`: it was delayed first, and its outcome came that much later."""
        self.requests += 1
        self.users.add(user)
        if delayed is not None:
            self.delayed += 1
        if outcome == "allow":
            self.sent_at_once += 1
            self.cost_sent += cost
            self.users_served.add(user)
            if delayed is not None:
                self.delay_waits.append(delayed)
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
        if outcome != "allow":
            self.stopped_ever = True
        elif not self.stopped_ever:
            self.allowed_before_first_stop += 1
        for code in codes:
            self.reasons[code] += 1
            if outcome != "allow":
                self.stopping_reasons[code] += 1

    def end_challenge(self, sent: bool, cost: float, delay: float, user: str) -> None:
        """A challenged request's new decision: sent (after `delay` seconds) or not."""
        if not sent:
            self.challenges_blocked += 1
            return
        self.challenges_sent += 1
        self.cost_sent += cost
        self.users_served.add(user)
        self.challenge_delays.append(delay)

    def follow_through(self, total_cost: float) -> FollowThrough:
        challenged = self.outcomes["challenge"]
        sent = self.sent_at_once + self.challenges_sent
        delays = sorted(self.challenge_delays)
        waits = [0.0] * (self.sent_at_once - len(self.delay_waits)) + self.delay_waits + delays
        every = sorted(waits)
        return FollowThrough(
            challenged=challenged,
            challenges_sent=self.challenges_sent,
            challenges_blocked=self.challenges_blocked,
            challenges_unanswered=challenged - self.challenges_sent - self.challenges_blocked,
            sms_sent=sent,
            sms_sent_pct=_pct(sent, self.requests),
            cost_sent=round(self.cost_sent, 4),
            cost_sent_pct=_pct(self.cost_sent, total_cost),
            users=len(self.users),
            users_served=len(self.users_served),
            users_served_pct=_pct(len(self.users_served), len(self.users)),
            challenge_delay_median_s=_quantile(delays, 0.5),
            challenge_delay_p90_s=_quantile(delays, 0.9),
            delay_median_s=_quantile(every, 0.5),
            delay_mean_s=round(sum(every) / len(every), 3) if every else None,
        )

    def summary(self, follow: bool = False) -> Outcomes:
        total_cost = sum(self.cost.values())
        # A delay is stopped only when it never ended in a send (its retry's decision counts otherwise).
        stopped = self.outcomes["block"] + self.outcomes["challenge"] + self.outcomes["delay"]
        stopped_cost = self.cost["block"] + self.cost["challenge"] + self.cost["delay"]
        detect = Detection(
            blocked_ever=self.first_block_ts is not None,
            requests_before_first_block=self.before_first_block,
            allowed_before_first_block=self.allowed_before_first_block,
            seconds_to_first_block=(
                round(self.first_block_ts - self.first_ts, 3)
                if self.first_block_ts is not None and self.first_ts is not None
                else None
            ),
            stopped_ever=self.stopped_ever,
            allowed_before_first_stop=self.allowed_before_first_stop,
        )
        return Outcomes(
            requests=self.requests,
            allowed=self.outcomes["allow"],
            challenged=self.outcomes["challenge"],
            blocked=self.outcomes["block"],
            allowed_pct=_pct(self.outcomes["allow"], self.requests),
            challenged_pct=_pct(self.outcomes["challenge"], self.requests),
            blocked_pct=_pct(self.outcomes["block"], self.requests),
            delayed=self.delayed,
            delayed_pct=_pct(self.delayed, self.requests),
            delayed_unsent=self.outcomes["delay"],
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
            follow_through=self.follow_through(total_cost) if follow else None,
        )


def _quantile(ordered: list[float], q: float) -> float | None:
    """The q-quantile of sorted values (the lower middle for an even count's median), to the millisecond."""
    if not ordered:
        return None
    return round(ordered[max(math.ceil(q * len(ordered)) - 1, 0)], 3)


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
        loop: ClosedLoop | None = None,
    ) -> None:
        self.meta = meta or {}
        self.loop = loop
        # delayed requests awaiting their retry's decision: request_id -> (ts, cost, codes, user, tallies)
        self.pending_delays: dict[str, tuple[float, float, list[str], str, list[Tally]]] = {}
        self.containment = ContainmentCounter()
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
        # enforced challenges awaiting their end: request_id -> (ts, cost, user, the tallies it counts in)
        self.open_challenges: dict[str, tuple[float, float, str, list[Tally]]] = {}

    @property
    def labelled(self) -> bool:
        return bool(self.by_label)

    @property
    def follows(self) -> bool:
        """Whether the decisions were enforced (mostly): then a request's fate is its follow-through."""
        return bool(self.modes) and self.modes.most_common(1)[0][0] == "enforce"

    def add(self, decision: Decision, ts: float) -> None:
        """One decision at event time `ts`; a superseding one (a challenge's end) at the answer's time."""
        if decision.supersedes is not None:
            self._end_challenge(decision, ts)
            return
        self.containment.add(decision, ts)
        outcome = outcome_of(decision)
        cost = price_for(decision.phone_country)
        codes = [reason.code for reason in decision.reasons]
        loop = self.loop
        retried = outcome == "delay" and loop is not None and loop.retried(decision.request_id)
        if loop is not None and decision.request_id in loop.retry_of:
            self._end_delay(decision, ts, loop.retry_of[decision.request_id], retried)
            return
        info = self.meta.get(decision.request_id)
        label = info.label if info is not None and info.label in LABELS else None
        scenario = (info.scenario if info is not None else None) or (label or "unlabelled")
        self.modes[decision.mode] += 1
        self.policy_versions[decision.policy_version] += 1
        if self.start_ts is None:
            self.start_ts = ts
        self.end_ts = ts if self.end_ts is None else max(self.end_ts, ts)

        user = (info.session if info is not None else None) or decision.request_id
        tallies = [self.overall, self.by_scenario.setdefault(scenario, Tally())]
        if label is not None:
            tallies.append(self.by_label.setdefault(label, Tally()))
            self.scenario_label.setdefault(scenario, label)
        if retried:  # its fate is its retry's
            self.pending_delays[decision.request_id] = (ts, cost, codes, user, tallies)
        else:
            for tally in tallies:
                tally.add(outcome, cost, ts, codes, user, 0.0 if outcome == "delay" else None)
        if decision.mode == "enforce" and decision.action == "challenge":
            self.open_challenges.setdefault(decision.request_id, (ts, cost, user, tallies))

        bucket = int((ts - self.start_ts) // self.bucket_seconds)
        series = self.timeline.setdefault(scenario, {})
        cell = series.get(bucket)
        if cell is None:
            cell = series[bucket] = [0] * len(ACTIONS)
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

    def _end_delay(self, decision: Decision, ts: float, delayed_id: str, retried: bool) -> None:
        """A retry's decision: the delayed request's outcome (or, delayed again, it waits on)."""
        pending = self.pending_delays.pop(delayed_id, None)
        if pending is None:
            return
        if retried:
            self.pending_delays[decision.request_id] = pending
            return
        started, cost, codes, user, tallies = pending
        outcome = outcome_of(decision)
        later = [reason.code for reason in decision.reasons if reason.code not in codes]
        for tally in tallies:
            tally.add(outcome, cost, ts, [*codes, *later], user, max(ts - started, 0.0))
        if decision.mode == "enforce" and decision.action == "challenge":
            self.open_challenges.setdefault(decision.request_id, (started, cost, user, tallies))
        if outcome == "block":
            self.blocked["country"].add(decision.phone_country or "?", cost)
            self.blocked["prefix"].add(self._prefix(decision.phone), cost)
            self.blocked["ip"].add(decision.client_ip or "?", cost)

    def _flush_delays(self) -> None:
        """Delays whose retry never came to a decision: nothing was sent."""
        for started, cost, codes, user, tallies in self.pending_delays.values():
            for tally in tallies:
                tally.add("delay", cost, started, codes, user, 0.0)
        self.pending_delays.clear()

    def _end_challenge(self, decision: Decision, ts: float) -> None:
        opened = self.open_challenges.pop(decision.request_id, None)
        if opened is None:
            return  # not a challenge of this run, or already ended
        started, cost, user, tallies = opened
        for tally in tallies:
            tally.end_challenge(decision.action == "allow", cost, max(ts - started, 0.0), user)

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
        self._flush_delays()
        follow = self.follows
        scenarios = {
            name: ScenarioOutcomes(
                label=self.scenario_label.get(name), **msgspec.structs.asdict(tally.summary(follow))
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
            overall=self.overall.summary(follow),
            labels={
                label: self.by_label[label].summary(follow) for label in LABELS if label in self.by_label
            },
            scenarios=scenarios,
            targets=self.targets() if self.labelled else None,
            scorecard=self.scorecard() if self.labelled else None,
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
                        action: [self.timeline[name].get(b, [0] * len(ACTIONS))[i] for b in range(buckets)]
                        for i, action in enumerate(ACTIONS)
                    }
                    for name in scenarios
                },
            ),
            scores=Scores(bin=SCORE_BIN, bins=SCORE_BINS, by_label=dict(self.scores)),
            containment=self.containment.result(),
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
        return _judge(values, TARGETS)

    def scorecard(self) -> Scorecard:
        """The figures of issue 12, from each request's first decision, judged against its targets."""
        attack = self.by_label.get("attack", Tally()).summary()
        legit = self.by_label.get("legit", Tally()).summary()
        attacks = {
            name: tally.summary()
            for name, tally in self.by_scenario.items()
            if self.scenario_label.get(name) == "attack"
        }
        worst = min(attacks, key=lambda name: (attacks[name].stopped_pct, name), default=None)
        latest = max(
            attacks,
            key=lambda name: (attacks[name].time_to_detect.allowed_before_first_stop, name),
            default=None,
        )
        values = {
            "attack_stopped_pct": attack.stopped_pct,
            "attack_blocked_pct": attack.blocked_pct,
            "attack_cost_stopped_pct": attack.cost_stopped_pct,
            "legit_blocked_pct": legit.blocked_pct,
            "legit_challenged_pct": legit.challenged_pct,
            "worst_attack_stopped_pct": attacks[worst].stopped_pct if worst is not None else 100.0,
            "allowed_before_first_stop": (
                attacks[latest].time_to_detect.allowed_before_first_stop if latest is not None else 0
            ),
        }
        return Scorecard(
            attack_stopped_pct=values["attack_stopped_pct"],
            attack_blocked_pct=values["attack_blocked_pct"],
            attack_cost_stopped_pct=values["attack_cost_stopped_pct"],
            legit_blocked_pct=values["legit_blocked_pct"],
            legit_challenged_pct=values["legit_challenged_pct"],
            worst_attack_scenario=worst,
            worst_attack_stopped_pct=values["worst_attack_stopped_pct"],
            allowed_before_first_stop=int(values["allowed_before_first_stop"]),
            allowed_before_first_stop_scenario=latest,
            targets=_judge(values, BUSINESS_TARGETS),
        )


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
    follow: bool = True,
    client: ClientModel | None = None,
) -> Evaluation:
    """Replay `path` through a new engine and return its evaluation.

    With `follow` (and enforce mode), each challenge of a labelled request is answered as `client` says
    and the answer replayed at its time. `progress` shows replay's own progress bar (on a terminal);
    `on_decision` sees every decision, superseding ones included.
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
    model = client or ClientModel()
    loop = ClosedLoop(meta, model) if follow and loaded.mode == "enforce" else None
    evaluator = Evaluator(meta, prefix_digits=loaded.phone.prefix_digits, loop=loop)

    def collect(line: Line, decision: Decision) -> None:
        if loop is not None:  # first: the evaluator asks it whether a delay is retried
            loop.on_decision(line, decision)
        evaluator.add(decision, line.ts)
        if on_decision is not None:
            on_decision(decision)

    async def run() -> Summary:
        try:
            await check_store(engine.store, store_url)
            if loop is None:
                return await replay(
                    engine, lines, batch_size=batch_size, on_decision=collect, progress=progress
                )
            summary = await replay(
                engine,
                loop.lines(lines),
                batch_size=batch_size,
                max_span=FOLLOW_SPAN_S,
                on_decision=collect,
                progress=progress,
            )
            while loop.pending:  # answers to the last challenges, after the file's end
                tail = await replay(
                    engine, loop.drain(), batch_size=batch_size, max_span=FOLLOW_SPAN_S, on_decision=collect
                )
                summary.events += tail.events
                summary.feedback += tail.feedback
                summary.challenges += tail.challenges
                summary.challenge_status.update(tail.challenge_status)
            return summary
        finally:
            await engine.store.close()

    summary = asyncio.run(run())
    report = evaluator.report(
        source=str(path), events=summary.events, feedback=summary.feedback, bad_input=summary.bad_input
    )
    settings = None
    if loop is not None:
        settings = ClosedLoopSettings(
            legit_pass_rate=model.legit_pass_rate,
            legit_delay_s=model.legit_delay_s,
            seed=model.seed,
            answers=loop.scheduled,
            feedback_delayed=loop.feedback_delayed,
            feedback_dropped=loop.dropped,
            not_acted_on=dict(sorted(summary.challenge_status.items())),
            retries=loop.retries,
            delays_completed=loop.delays_completed,
        )
    return msgspec.structs.replace(
        report,
        policy_version=loaded.version,
        mode=loaded.mode,
        basis="verdict" if loaded.mode == "shadow" else "action",
        delay_at=loaded.score.delay_at,
        challenge_at=loaded.score.challenge_at,
        block_at=loaded.score.block_at,
        closed_loop=settings,
    )


# --- the human table --------------------------------------------------------------------------------------


def format_scorecard(card: Scorecard) -> str:
    """One line per figure of issue 12: the value, the target, and whether it was met."""
    notes = {
        "worst_attack_stopped_pct": card.worst_attack_scenario,
        "allowed_before_first_stop": card.allowed_before_first_stop_scenario,
    }
    lines = []
    for name, target in card.targets.items():
        value = f"{target.value:,.0f}" if name == "allowed_before_first_stop" else f"{target.value:.2f}%"
        note = f"  ({notes[name]})" if notes.get(name) else ""
        verdict = "ok" if target.met else "MISSED"
        lines.append(f"  {_FIGURE_NAMES[name]:<44} {value:>9}  {target.target:>7}  {verdict:<6}{note}")
    return "\n".join(lines)


_FIGURE_NAMES = {
    "attack_stopped_pct": "attack requests stopped",
    "attack_blocked_pct": "attack requests blocked",
    "attack_cost_stopped_pct": "attack cost stopped",
    "legit_blocked_pct": "legitimate requests blocked",
    "legit_challenged_pct": "legitimate requests challenged",
    "worst_attack_stopped_pct": "worst attack scenario stopped",
    "allowed_before_first_stop": "attack requests let through before first stop",
}


def format_table(report: Evaluation) -> str:
    """A short plain-text table: per scenario, what happened and what it cost.

    With challenges followed to their end: "sent" is the share of requests whose SMS went out (at once or
    after a passed challenge), "sent $" its cost, "got code" the share of people (sessions) who got one,
    "+delay" the median a challenge added before it.
    """
    follow = report.closed_loop is not None
    lines = [
        f"policy {report.policy_version} ({report.mode} mode, outcome = {report.basis}); "
        f"{report.requests:,} requests",
    ]
    header = (
        f"{'scenario':<20} {'label':<6} {'requests':>8} {'blocked':>8} {'challgd':>8} {'allowed':>8} "
        f"{'cost $':>9} {'stopped $':>10} {'let thru $':>10} {'detect':>7}"
    )
    if follow:
        header += f" {'sent':>8} {'sent $':>9} {'got code':>8} {'+delay':>7}"
    lines += [header, "-" * len(header)]

    def row_text(name: str, label: str, row: Outcomes, detect_text: str) -> str:
        text = (
            f"{name[:20]:<20} {label:<6} {row.requests:>8,} {row.blocked_pct:>7.2f}% "
            f"{row.challenged_pct:>7.2f}% {row.allowed_pct:>7.2f}% {row.cost_total:>9.2f} "
            f"{row.cost_stopped:>10.2f} {row.cost_let_through:>10.2f} {detect_text:>7}"
        )
        done = row.follow_through
        if done is not None:
            served = f"{done.users_served_pct:.2f}%" if label == "legit" else ""
            delay = done.challenge_delay_median_s
            text += (
                f" {done.sms_sent_pct:>7.2f}% {done.cost_sent:>9.2f} {served:>8} "
                f"{'' if delay is None else f'{delay:.0f} s':>7}"
            )
        return text

    for name, row in report.scenarios.items():
        detect = row.time_to_detect
        if row.label == "attack":
            detect_text = str(detect.allowed_before_first_block) if detect.blocked_ever else "never"
        else:
            detect_text = ""
        lines.append(row_text(name, row.label or "-", row, detect_text))
    if report.labels:
        lines.append("-" * len(header))
        for label, total in report.labels.items():
            lines.append(row_text("all " + label, label, total, ""))
        lines.append("detect = attack requests allowed before the scenario's first block")
        if follow:
            lines.append(
                "sent = SMS sent, at once or after a passed challenge (for attacks, sent $ is the cost "
                "leaked); got code = people (sessions) who got one; +delay = median added by a challenge"
            )
    overall = report.overall
    if overall.delayed:
        lines.append(
            f"delayed first: {overall.delayed:,} requests ({overall.delayed_pct:.2f}%), counted by their "
            f"retry's decision; {overall.delayed_unsent:,} never ended in a send (counted as stopped)"
        )
    loop = report.closed_loop
    if loop is not None and loop.not_acted_on:
        statuses = ", ".join(f"{status} {count:,}" for status, count in loop.not_acted_on.items())
        lines.append(f"challenge answers the engine did not act on: {statuses}")
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
