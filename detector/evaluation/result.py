"""What an evaluation is: the typed result `evaluate` returns, `report` draws and `--json` writes.

Percentages are 0-100, costs in US dollars (the simulator's price table), times in epoch seconds.
"""

from __future__ import annotations

import msgspec


class Detection(msgspec.Struct, kw_only=True):
    """How long an attack ran before its first block, and before its first stop (a block or a challenge)."""

    blocked_ever: bool
    requests_before_first_block: int
    allowed_before_first_block: int
    seconds_to_first_block: float | None
    stopped_ever: bool = False
    allowed_before_first_stop: int = 0  # every request allowed when none was ever stopped


class FollowThrough(msgspec.Struct, kw_only=True):
    """What became of a group's requests once every enforced challenge was followed to its end: the SMS
    actually sent (allowed at once, or allowed after a passed challenge) and what they cost."""

    challenged: int
    challenges_sent: int  # ended in an SMS: passed, and the new decision allowed it
    challenges_blocked: int  # ended in a block: failed, expired, or still blocked after a pass
    challenges_unanswered: int  # no new decision by the end: never answered, or the answer not acted on
    sms_sent: int
    sms_sent_pct: float  # of the group's requests
    cost_sent: float  # price of the SMS sent: for an attack, the cost leaked
    cost_sent_pct: float  # of cost_total
    users: int  # sessions (a person's requests for one code), or requests without one
    users_served: int  # sessions with at least one SMS sent
    users_served_pct: float
    challenge_delay_median_s: float | None  # added before the SMS, for challenges that ended in one
    challenge_delay_p90_s: float | None
    delay_median_s: float | None  # added before the SMS, over every SMS sent (0 when allowed at once)
    delay_mean_s: float | None


class Outcomes(msgspec.Struct, kw_only=True):
    """What happened to one group of requests, and what it cost.

    The counts are of the first decision on each request; `follow_through` (enforce mode only) follows its
    challenges to their end.
    """

    requests: int
    allowed: int
    challenged: int
    blocked: int
    allowed_pct: float
    challenged_pct: float
    blocked_pct: float
    stopped_pct: float
    # Requests delayed first (then counted by their retry's decision), and those whose delay never ended in
    # a send (counted as stopped, not blocked).
    delayed: int = 0
    delayed_pct: float = 0.0
    delayed_unsent: int = 0
    cost_total: float
    cost_let_through: float
    cost_challenged: float
    cost_blocked: float
    cost_stopped: float
    cost_stopped_pct: float
    time_to_detect: Detection
    reasons: dict[str, int]  # every reason that fired, most frequent first
    stopping_reasons: dict[str, int]  # reasons on blocked or challenged requests
    follow_through: FollowThrough | None = None


class ScenarioOutcomes(Outcomes, kw_only=True):
    label: str | None


class Ranked(msgspec.Struct):
    """One entry of a top list: a reason, country, prefix or address."""

    key: str
    requests: int
    cost: float


class Verdicts(Outcomes, kw_only=True):
    """Outcomes by verdict (what the policy would do), whatever was enforced."""

    would_block_by_reason: list[Ranked]
    would_block_by_country: list[Ranked]
    would_block_by_prefix: list[Ranked]
    would_block_by_ip: list[Ranked]
    would_challenge_by_reason: list[Ranked]


class Target(msgspec.Struct):
    value: float
    target: str  # e.g. ">= 95"
    met: bool


class Scorecard(msgspec.Struct, kw_only=True):
    """The figures a default policy must reach on a business it was never tuned on (issue 12), with
    `targets` saying which it met. "Stopped" is a first decision that blocks or challenges."""

    attack_stopped_pct: float
    attack_blocked_pct: float
    attack_cost_stopped_pct: float
    legit_blocked_pct: float
    legit_challenged_pct: float
    worst_attack_scenario: str | None  # the attack scenario with the smallest stopped share
    worst_attack_stopped_pct: float
    allowed_before_first_stop: int  # the most attack requests any attack scenario got through first
    allowed_before_first_stop_scenario: str | None
    targets: dict[str, Target]


class QuarantineKind(msgspec.Struct, kw_only=True):
    """Quarantines of one kind of entity (prefix, subnet or client ip)."""

    opened: int  # quarantines begun (decisions with `quarantine_started`)
    by_level: dict[str, int]  # opened per level of the TTL ladder ("1", "2", ...): repeat offences climb it
    blocked: int  # requests blocked with `quarantined` on this kind
    exempt: int  # requests of known-good numbers that passed this kind's quarantine (`quarantine_exempt`)


class BreakerTrip(msgspec.Struct):
    """The spend circuit breaker open for one destination country in one hour (UTC)."""

    country: str
    hour: str  # e.g. 2026-11-23T08
    blocked: int  # requests it blocked in that hour
    cost: float


class Containment(msgspec.Struct, kw_only=True):
    """What quarantines and the spend circuit breaker did, read from the decisions' reasons."""

    quarantines: dict[str, QuarantineKind]  # by kind: prefix, subnet, ip
    quarantines_opened: int
    quarantine_blocked: int  # requests blocked by at least one quarantine
    quarantine_exempt: int  # requests of known-good numbers let past a quarantine
    breaker_trips: list[BreakerTrip]  # per country and hour, in time order
    breaker_blocked: int
    breaker_cost: float


class Timeline(msgspec.Struct):
    bucket_seconds: float
    buckets: int
    series: dict[str, dict[str, list[int]]]  # scenario -> action -> requests per bucket


class Scores(msgspec.Struct):
    bin: float
    bins: int
    by_label: dict[str, list[int]]  # label -> requests per score bin


class ClosedLoopSettings(msgspec.Struct, kw_only=True):
    """How the simulated clients answered the challenges of an enforced evaluation."""

    legit_pass_rate: float
    legit_delay_s: float  # median
    seed: int
    answers: int  # challenge results fed back into the engine
    feedback_delayed: int  # the file's feedback on challenges that ended in an SMS, moved that much later
    feedback_dropped: int  # on challenges that did not: nobody enters a code never sent
    not_acted_on: dict[str, int]  # the engine's status for answers that gave no new decision
    retries: int = 0  # delayed requests asked again after retry_after (new requests)
    delays_completed: int = 0  # delayed requests reported completed_other once their retry was verified


class Evaluation(msgspec.Struct, kw_only=True):
    source: str | None
    policy_version: str | None
    mode: str | None
    basis: str  # "action" (enforced) or "verdict" (shadow mode)
    labelled: bool
    events: int | None
    requests: int
    feedback: int | None
    bad_input: int
    start_ts: float | None
    end_ts: float | None
    overall: Outcomes
    labels: dict[str, Outcomes]
    scenarios: dict[str, ScenarioOutcomes]
    targets: dict[str, Target] | None
    blocked: dict[str, list[Ranked]]  # by country, prefix, ip
    verdicts: Verdicts
    timeline: Timeline
    scores: Scores
    delay_at: float | None = None
    challenge_at: float | None = None
    block_at: float | None = None
    closed_loop: ClosedLoopSettings | None = None  # None: challenges were not followed (shadow mode)
    scorecard: Scorecard | None = None  # None: no labels
    containment: Containment | None = None

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)


NO_OUTCOMES = Outcomes(
    requests=0,
    allowed=0,
    challenged=0,
    blocked=0,
    allowed_pct=0.0,
    challenged_pct=0.0,
    blocked_pct=0.0,
    stopped_pct=0.0,
    cost_total=0.0,
    cost_let_through=0.0,
    cost_challenged=0.0,
    cost_blocked=0.0,
    cost_stopped=0.0,
    cost_stopped_pct=0.0,
    time_to_detect=Detection(
        blocked_ever=False,
        requests_before_first_block=0,
        allowed_before_first_block=0,
        seconds_to_first_block=None,
    ),
    reasons={},
    stopping_reasons={},
)
"""A group nobody was in (e.g. the legitimate requests of a file of attacks only)."""
