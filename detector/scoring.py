"""Rules and the risk score: from what is known about a request and what was counted, to a verdict.

Every rule that fires leaves a `Hit`: a hard verdict (deny lists, limits) or points (the log of a
multiplicative threat factor). The verdict comes from all rules that are on; the enforced action only from
rules in enforce mode, and is always allow when the policy is in shadow mode.
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import msgspec

from detector.baseline import Baseline
from detector.events import Action, Mode, Reason, UpstreamSignals, format_timestamp
from detector.policy import (
    ConversionRule,
    PassesRule,
    Policy,
    Rule,
    RuleMode,
    UnverifiedRule,
    VelocityRule,
    seconds,
)
from detector.prices import load_prices
from detector.signals.network import IpFacts
from detector.signals.phone import PhoneFacts
from detector.state.base import LIMIT_DIMENSION, CounterPlan, Counts
from detector.windows import Window

_Number = TypeVar("_Number", int, float)
_SEVERITY = {"allow": 0, "delay": 1, "challenge": 2, "block": 3}
SPEND_DIMENSION = "phone_country"  # the spend circuit breaker's budget is per destination country
_NO_SIGNALS = UpstreamSignals()


class Hit(msgspec.Struct, frozen=True):
    code: str
    mode: RuleMode
    points: float = 0.0
    verdict: Action | None = None
    value: float | int | str | None = None
    threshold: float | int | None = None
    retry_after: float | None = None
    dimension: str | None = None  # the entity a counted rule measured (a quarantine may follow)

    def reason(self) -> Reason:
        points = round(self.points, 2) if self.points else None
        mode: Mode | None = "shadow" if self.mode == "shadow" else None
        return Reason(self.code, self.value, self.threshold, points, mode)


class Subject(msgspec.Struct):
    """What is known about one request before anything is counted."""

    ts: float
    phone: PhoneFacts
    ip: IpFacts | None
    ip_country: str | None
    signals: UpstreamSignals | None
    keys: dict[str, str] = msgspec.field(default_factory=dict)
    problems: list[str] = msgspec.field(default_factory=list)
    clamped_by: float | None = None  # seconds the request's own ts was off its counting time


class Conclusion(msgspec.Struct, frozen=True):
    verdict: Action
    action: Action
    score: float
    hits: tuple[Hit, ...]
    delay: float | None = None  # a delay action: seconds until a retry to the number passes its rung

    @property
    def retry_after(self) -> float | None:
        longest = None  # the first of the longest, as max() keeps it
        for hit in self.hits:
            if hit.retry_after is not None and (longest is None or hit.retry_after > longest):
                longest = hit.retry_after
        if self.delay is not None and (longest is None or self.delay > longest):
            longest = self.delay
        return longest


def counter_plan(policy: Policy) -> CounterPlan:
    """The windows each dimension needs, from the rules that are on."""
    rules = policy.rules
    wanted: dict[str, set[int]] = {}
    peaks: set[tuple[str, int]] = set()

    def want(dim: str, duration: str) -> int:
        wanted.setdefault(dim, set()).add(seconds(duration))
        return seconds(duration)

    for velocity in rules.velocity.values():
        if velocity.mode != "off":
            want(velocity.dimension, velocity.window)
    for unverified in rules.unverified.values():
        if unverified.mode != "off":
            want(unverified.dimension, unverified.recent)
            peaks.add((unverified.dimension, want(unverified.dimension, unverified.history)))
    for conversion in rules.conversion.values():
        if conversion.mode != "off":
            want(conversion.dimension, conversion.recent)
            want(conversion.dimension, conversion.baseline)
    if rules.retry_delay.mode != "off":
        want(LIMIT_DIMENSION, rules.retry_delay.window)
    if rules.spend.mode != "off":
        want(SPEND_DIMENSION, rules.spend.window)
        peaks.add((SPEND_DIMENSION, want(SPEND_DIMENSION, rules.spend.baseline)))
    for dim, secs in Baseline(policy).windows().items():
        wanted.setdefault(dim, set()).update(secs)
    passes: dict[str, set[int]] = {}
    for rule in rules.passes.values():
        if rule.mode != "off":
            passes.setdefault(rule.dimension, set()).add(seconds(rule.window))
    buckets = policy.counters.buckets
    return CounterPlan(
        windows={
            dim: tuple(Window(s, buckets) for s in sorted(secs)) for dim, secs in sorted(wanted.items())
        },
        peaks=frozenset(peaks),
        limit_window=Window(seconds(rules.msisdn_rate_limit.window), buckets),
        limit=rules.msisdn_rate_limit.limit,
        distinct_window=seconds(rules.distinct_countries_per_ip.window),
        record_ttl=seconds(policy.state.record_ttl),
        quarantine_dimensions=frozenset(
            rules.quarantine.dimensions if rules.quarantine.mode != "off" else ()
        ),
        quarantine_ttls=tuple(seconds(ttl) for ttl in rules.quarantine.ttls),
        quarantine_forget=seconds(rules.quarantine.forget_after),
        pass_windows={
            dim: tuple(Window(s, buckets) for s in sorted(secs)) for dim, secs in sorted(passes.items())
        },
    )


class _Velocity(NamedTuple):
    code: str
    rule: VelocityRule
    window: int  # the place in `Counts.windows` of the count it reads
    unverified_only: bool


class _Unverified(NamedTuple):
    code: str
    rule: UnverifiedRule
    recent: int  # places in `Counts.windows` and `Counts.peaks`
    history: int
    recent_seconds: int
    history_width: float  # seconds of one bucket of the history window, whose busiest one is the peak


class _Conversion(NamedTuple):
    code: str
    rule: ConversionRule
    recent: int  # places in `Counts.windows`
    baseline: int


class _Passes(NamedTuple):
    code: str
    rule: PassesRule
    window: int  # the place in `Counts.passes`


class Scorer:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.plan = counter_plan(policy)
        rules = policy.rules
        self._deny_countries = frozenset(policy.lists.deny_phone_countries)
        self._deny_types = frozenset(policy.lists.deny_number_types)
        self._allow_phones = frozenset(policy.lists.allow_phones)
        self._deny_phones = frozenset(policy.lists.deny_phones)
        slot, pass_slot = self.plan.slots(), self.plan.pass_slots()
        self.baseline = Baseline(policy, slot)
        self._cap = policy.score.velocity_cap
        # The rules that are on, each with the places of the counts it reads, resolved once: scoring runs per
        # request.
        width = {(dim, w.seconds): w.width for dim, windows in self.plan.windows.items() for w in windows}
        self._velocity = [
            _Velocity(
                f"{name}_velocity",
                rule,
                slot[(rule.dimension, seconds(rule.window))],
                rule.count == "unverified",
            )
            for name, rule in rules.velocity.items()
            if rule.mode != "off"
        ]
        self._unverified = [
            _Unverified(
                f"{name}_unverified",
                rule,
                slot[(rule.dimension, seconds(rule.recent))],
                slot[(rule.dimension, seconds(rule.history))],
                seconds(rule.recent),
                width[(rule.dimension, seconds(rule.history))],
            )
            for name, rule in rules.unverified.items()
            if rule.mode != "off"
        ]
        self._passes = [
            _Passes(f"{name}_challenge_passes", rule, pass_slot[(rule.dimension, seconds(rule.window))])
            for name, rule in rules.passes.items()
            if rule.mode != "off"
        ]
        self._conversion = [
            _Conversion(
                f"{name}_conversion_collapse",
                rule,
                slot[(rule.dimension, seconds(rule.recent))],
                slot[(rule.dimension, seconds(rule.baseline))],
            )
            for name, rule in rules.conversion.items()
            if rule.mode != "off"
        ]
        self._limit = _on(rules.msisdn_rate_limit)
        self._retry = _on(rules.retry_delay)
        self._quarantine = _on(rules.quarantine)
        self._distinct = _on(rules.distinct_countries_per_ip)
        spend = rules.spend
        self._spend = _on(spend)
        self._prices = load_prices(policy.spend.prices_file) if spend.mode != "off" else None
        self._price_of: dict[str, float] = {}
        # -1: a window the plan does not count, as the rule is off
        self._spend_window = slot.get((SPEND_DIMENSION, seconds(spend.window)), -1)
        self._spend_peak = slot.get((SPEND_DIMENSION, seconds(spend.baseline)), -1)
        self._spend_seconds = seconds(spend.window)
        self._spend_peak_width = (
            width[(SPEND_DIMENSION, seconds(spend.baseline))] if self._spend is not None else 1.0
        )
        self._mode = policy.mode
        self._block_at = policy.score.block_at
        self._challenge_at = policy.score.challenge_at
        self._delay_at = policy.score.delay_at
        self._delay_for = seconds(policy.score.delay_for)
        self._retry_base = seconds(rules.retry_delay.base)
        self._retry_cap = seconds(rules.retry_delay.cap)
        self._retry_window = slot.get((LIMIT_DIMENSION, seconds(rules.retry_delay.window)), -1)

    def allow_listed(self, subject: Subject) -> bool:
        return bool(subject.ip and subject.ip.allowed) or subject.phone.e164 in self._allow_phones

    def static_hits(self, subject: Subject) -> list[Hit]:
        """Rules that need no counting: they also decide whether a request takes a send slot."""
        rules = self.policy.rules
        hits: list[Hit] = []
        phone = subject.phone
        if rules.invalid_number.mode != "off" and not phone.valid:
            hits.append(
                Hit(
                    phone.problem or "invalid_number",
                    rules.invalid_number.mode,
                    verdict="block",
                    value=phone.kind if phone.e164 else None,
                )
            )
        deny = rules.deny_lists.mode
        if deny != "off":
            if phone.region in self._deny_countries:
                hits.append(Hit("denied_phone_country", deny, verdict="block", value=phone.region))
            if phone.kind in self._deny_types:
                hits.append(Hit("denied_number_type", deny, verdict="block", value=phone.kind))
            if phone.e164 in self._deny_phones:
                hits.append(Hit("denied_phone", deny, verdict="block"))
            if subject.ip is not None and subject.ip.denied:
                hits.append(Hit("denied_ip", deny, verdict="block"))
        return hits

    def counted_hits(self, subject: Subject, counts: Counts) -> list[Hit]:
        hits: list[Hit] = []
        windows = counts.windows
        cap = self._cap

        limit = self._limit
        if limit is not None and not counts.slot_taken:
            hits.append(
                Hit(
                    "msisdn_rate_limit",
                    limit.mode,
                    verdict="block",
                    value=counts.slot_count,
                    threshold=limit.limit,
                )
            )

        retry = self._retry
        if retry is not None and counts.previous_ts is not None:
            requested, verified = windows[self._retry_window] or (0, 0)
            unverified_before = _larger(requested - 1 - verified, 0)
            if unverified_before:
                doubled = self._retry_base * 2.0 ** _smaller(unverified_before - 1, 64)
                delay = _smaller(doubled, self._retry_cap)
                waited = _larger(subject.ts - counts.previous_ts, 0.0)
                if waited < delay:
                    hits.append(
                        Hit(
                            "retry_too_soon",
                            retry.mode,
                            verdict=retry.action,
                            value=round(waited, 3),
                            threshold=delay,
                            retry_after=round(delay - waited, 3),
                        )
                    )

        for code, velocity, window, unverified_only in self._velocity:
            pair = windows[window]
            if pair is None:
                continue
            value = pair[0] - pair[1] if unverified_only else pair[0]
            if value >= velocity.threshold:  # at least 1: an unverified count below 0 never is
                ratio = _smaller(value / velocity.threshold, cap)
                hits.append(
                    Hit(
                        code,
                        velocity.mode,
                        points=velocity.points * ratio,
                        value=value,
                        threshold=velocity.threshold,
                        dimension=velocity.dimension,
                    )
                )

        for code, adaptive, recent, history, recent_seconds, history_width in self._unverified:
            pair = windows[recent]
            if pair is None:
                continue
            requested, verified = pair
            unverified = requested - verified if requested > verified else 0
            if unverified <= adaptive.floor:
                continue  # the threshold is at least the floor
            peak_per_recent = counts.peaks[history] * recent_seconds / history_width
            threshold = _larger(
                _larger(adaptive.floor, adaptive.peak_factor * peak_per_recent),
                adaptive.verified_factor * verified,
            )
            if unverified > threshold:
                ratio = _smaller(unverified / threshold, cap)
                hits.append(
                    Hit(
                        code,
                        adaptive.mode,
                        points=adaptive.points * ratio,
                        value=unverified,
                        threshold=round(threshold, 2),
                        dimension=adaptive.dimension,
                    )
                )

        for code, conversion, recent, baseline in self._conversion:
            now = windows[recent]
            if now is None or now[0] < conversion.min_requests:
                continue
            before = windows[baseline] or now
            older_requests, older_verified = before[0] - now[0], before[1] - now[1]
            base_rate = (
                older_verified / older_requests
                if older_requests >= conversion.min_requests
                else conversion.default_rate
            )
            threshold = _larger(conversion.min_rate, conversion.collapse_ratio * base_rate)
            rate = now[1] / now[0]
            if rate < threshold:
                ratio = _smaller(threshold / _larger(rate, threshold / cap), cap)
                hits.append(
                    Hit(
                        code,
                        conversion.mode,
                        points=conversion.points * ratio,
                        value=round(rate, 3),
                        threshold=round(threshold, 3),
                        dimension=conversion.dimension,
                    )
                )

        hits += self.pass_hits(counts.passes)
        hits += self._spend_hits(subject, counts)

        quarantine = self._quarantine
        if quarantine is not None and counts.quarantines:
            active = sorted(
                (dim, until) for dim, (until, _) in counts.quarantines.items() if until > subject.ts
            )
            if active and self.baseline.known_good(counts):
                exempt = ",".join(dim for dim, _ in active)
                hits.append(Hit("quarantine_exempt", quarantine.mode, value=exempt))
            else:
                for dim, until in active:
                    hits.append(
                        Hit(
                            "quarantined",
                            quarantine.mode,
                            verdict="block",
                            value=f"{dim} until {format_timestamp(until)}",
                            retry_after=round(until - subject.ts, 3),
                        )
                    )

        distinct = self._distinct
        if distinct is not None and counts.distinct >= distinct.threshold:
            ratio = _smaller(counts.distinct / distinct.threshold, cap)
            hits.append(
                Hit(
                    "ip_distinct_phone_countries",
                    distinct.mode,
                    points=distinct.points * ratio,
                    value=counts.distinct,
                    threshold=distinct.threshold,
                )
            )
        return hits

    def _spend_hits(self, subject: Subject, counts: Counts) -> list[Hit]:
        """The spend circuit breaker: this hour's spend (on codes not verified, by default) to the number's
        country over k × its busiest verified hour's; numbers with a verified history pass."""
        rule, region = self._spend, subject.phone.region
        if self._prices is None or rule is None or region is None:
            return []
        peak = counts.peaks[self._spend_peak]
        if not peak:
            return []  # no verified hour yet: no budget to measure against
        requests, verified = counts.windows[self._spend_window] or (0, 0)
        sent = requests if rule.count == "requests" else _larger(requests - verified, 0)
        price = self._price_of.get(region)
        if price is None:  # regions come from the number plan: a few hundred at most
            price = self._price_of[region] = self._prices.price_for(region)
        busiest = peak * self._spend_seconds / self._spend_peak_width
        budget = _larger(rule.k * busiest * price, rule.min_budget)
        spent = sent * price
        if spent <= budget or self.baseline.known_good(counts):
            return []
        return [
            Hit(
                "spend_circuit_breaker",
                rule.mode,
                verdict="block",
                value=round(spent, 4),
                threshold=round(budget, 4),
            )
        ]

    def pass_hits(self, passes: list[int]) -> list[Hit]:
        """Challenges passed per entity: a farm that solves CAPTCHAs still piles passes on its prefixes."""
        hits: list[Hit] = []
        for code, rule, window in self._passes:
            count = passes[window]
            if count >= rule.threshold:
                ratio = _smaller(count / rule.threshold, self._cap)
                points = rule.points * ratio
                hits.append(
                    Hit(
                        code,
                        rule.mode,
                        points=points,
                        value=count,
                        threshold=rule.threshold,
                        dimension=rule.dimension,
                    )
                )
        return hits

    def context_hits(self, subject: Subject, counts: Counts | None = None) -> list[Hit]:
        """Points from what the request says about itself: geography, number type, upstream signals,
        weighed by what this business's verified traffic says is normal (`detector.baseline`)."""
        rules = self.policy.rules
        baseline = self.baseline
        hits: list[Hit] = []
        known_good = baseline.known_good(counts)
        if known_good:
            hits.append(Hit("known_good_number", rules.known_good.mode, value=known_good))
        region = subject.phone.region
        mismatch = rules.ip_country_mismatch
        route = 0.0  # the route's factor: 0 without a mismatch, for a known-good number, or when it verifies
        judged = mismatch.mode != "off" or rules.third_country_client.mode != "off"
        if judged and subject.ip_country and region and subject.ip_country != region:
            route = 0.0 if known_good else self._health(hits, "route", counts)
            if mismatch.mode != "off":
                hits.append(
                    Hit(
                        "ip_country_mismatch",
                        mismatch.mode,
                        points=mismatch.points * route,
                        value=f"{subject.ip_country}->{region}",
                    )
                )
        foreign = rules.non_core_destination
        if foreign.mode != "off" and region and not known_good:
            home = baseline.home(region, counts)
            if not home.home:
                code = "non_core_destination" if home.basis == "configured" else "non_home_destination"
                shared = home.basis != "configured"  # a share of verified OTPs, or of requests in warmup
                share = round(home.share, 4) if shared else region
                threshold = self.policy.home.min_share if shared else None
                # Only a collapse counts here: a destination that verifies well may still be one an attack
                # hides among (its users' verifications would otherwise waive the attack's points).
                destination = self._health(hits, "phone_country", counts, label="destination")
                collapsed = destination > 1.0
                weighted = foreign.points * (rules.segments.foreign_boost if collapsed else 1.0)
                hits.append(Hit(code, foreign.mode, points=weighted, value=share, threshold=threshold))
                never = rules.never_verified_destination
                # The small-sample form of a collapse: counted once, not on top of one.
                unproven = home.basis == "learned" and home.share == 0.0 and home.asked >= never.min_requests
                if never.mode != "off" and unproven and not collapsed:
                    hits.append(
                        Hit(
                            "never_verified_destination",
                            never.mode,
                            points=never.points,
                            value=home.asked,
                            threshold=never.min_requests,
                        )
                    )
                if route and destination:  # a third country matters where the destination does not verify
                    hits += self._third_country(subject, counts)
        impossible = rules.impossible_client_ip
        if impossible.mode != "off" and subject.ip is not None and subject.ip.impossible:
            hits.append(
                Hit(
                    "impossible_client_ip",
                    impossible.mode,
                    points=impossible.points,
                    value=subject.ip.impossible,
                )
            )
        kinds = rules.number_type
        if kinds.mode != "off" and subject.phone.valid:
            points = kinds.points.get(subject.phone.kind)
            if points:
                hits.append(Hit("risky_number_type", kinds.mode, points=points, value=subject.phone.kind))
        upstream = rules.upstream
        if upstream.mode != "off":
            signals = subject.signals or _NO_SIGNALS
            ip = subject.ip
            flagged = (
                signals.bot
                or signals.anonymizer
                or signals.datacenter
                or (ip and (ip.anonymizer or ip.datacenter))
            )
            factor = self._health(hits, "segment", counts) if flagged else 1.0
            network = 0.0 if known_good else factor  # a known-good number behind a VPN is a traveller
            if signals.bot:
                hits.append(Hit("upstream_bot", upstream.mode, points=upstream.bot * factor))
            if signals.anonymizer or (ip is not None and ip.anonymizer):
                hits.append(Hit("anonymizer_ip", upstream.mode, points=upstream.anonymizer * network))
            if signals.datacenter or (ip is not None and ip.datacenter):
                hits.append(Hit("datacenter_ip", upstream.mode, points=upstream.datacenter * network))
            if signals.session_velocity == "high":
                hits.append(
                    Hit(
                        "upstream_session_velocity",
                        upstream.mode,
                        points=upstream.session_velocity_high,
                        value="high",
                    )
                )
            elif signals.session_velocity == "medium":
                hits.append(
                    Hit(
                        "session_velocity",
                        upstream.mode,
                        points=upstream.session_velocity_medium,
                        value="medium",
                    )
                )
        return hits

    def _third_country(self, subject: Subject, counts: Counts | None) -> list[Hit]:
        """A foreign destination asked for from a client country that is not home either."""
        rule, client = self.policy.rules.third_country_client, subject.ip_country
        if rule.mode == "off" or client is None:
            return []
        home = self.baseline.home(client, counts, "ip_country")
        if home.home:
            return []
        shared = home.basis != "configured"
        return [
            Hit(
                "third_country_client",
                rule.mode,
                points=rule.points,
                value=round(home.share, 4) if shared else client,
                threshold=self.policy.home.min_share if shared else None,
            )
        ]

    def _health(self, hits: list[Hit], dimension: str, counts: Counts | None, label: str = "") -> float:
        """The factor of a segment's signals, with a reason saying how the segment converts."""
        rule = self.policy.rules.segments
        health = (
            self.baseline.health(dimension, counts) if counts is not None and rule.mode != "off" else None
        )
        if health is None:
            return 1.0
        if health.factor == 0.0:
            threshold = round(rule.healthy_ratio * health.overall, 3)
            hits.append(
                Hit(f"{label or dimension}_verifies", rule.mode, value=health.rate, threshold=threshold)
            )
        elif health.factor > 1.0:
            threshold = round(rule.collapse_ratio * health.overall, 3)
            hits.append(
                Hit(
                    f"{label or dimension}_conversion_collapse",
                    rule.mode,
                    value=health.rate,
                    threshold=threshold,
                )
            )
        return health.factor if rule.mode == "enforce" else 1.0

    def offences(self, conclusion: Conclusion) -> set[str]:
        """The quarantinable dimensions whose counted rules pushed a request over the block line by score."""
        if self._quarantine is None or conclusion.score < self._block_at:
            return set()
        dims = self.plan.quarantine_dimensions
        offending = set()
        for hit in conclusion.hits:
            if hit.code == "quarantined":
                return set()  # already quarantined: blocked by that, not a new offence
            if hit.dimension in dims and hit.points > 0:
                offending.add(hit.dimension)
        return offending

    def conclude(self, hits: list[Hit], waited: float | None = None) -> Conclusion:
        """The verdict and action of `hits`. `waited`: seconds since the number's previous request (None:
        none known). The score's delay rung is served by waiting: a number whose previous request is at
        least `score.delay_for` old passes it (a retry after `retry_after`); otherwise the request is
        delayed. A rule's own delay (`retry_too_soon`) says how long itself; waiting less never passes it."""
        score = enforced_score = 0.0  # summed plainly in the hits' order (sum() compensates from 3.12 on)
        ruled: Action = "allow"  # the worst of the rules' own verdicts, and of those enforced
        enforced_ruled: Action = "allow"
        for hit in hits:
            points, verdict = hit.points, hit.verdict
            score += points
            if hit.mode == "enforce":
                enforced_score += points
                if verdict is not None:
                    enforced_ruled = _worse(enforced_ruled, verdict)
            if verdict is not None:
                ruled = _worse(ruled, verdict)
        by_score, by_enforced_score = self._verdict_for(score), self._verdict_for(enforced_score)
        if waited is not None and waited >= self._delay_for and "delay" in (by_score, by_enforced_score):
            hits = [*hits, Hit("delay_waited", "enforce", value=round(waited, 3), threshold=self._delay_for)]
            by_score = "allow" if by_score == "delay" else by_score
            by_enforced_score = "allow" if by_enforced_score == "delay" else by_enforced_score
        verdict, action = _worse(by_score, ruled), _worse(by_enforced_score, enforced_ruled)
        if self._mode == "shadow":
            action = "allow"
        delay = None
        if action == "delay" and by_enforced_score == "delay":
            delay = round(self._delay_for - _larger(waited or 0.0, 0.0), 3)
        return Conclusion(verdict, action, round(score, 2), tuple(hits), delay)

    def _verdict_for(self, score: float) -> Action:
        if score >= self._block_at:
            return "block"
        if score >= self._challenge_at:
            return "challenge"
        if self._delay_at is not None and score >= self._delay_at:
            return "delay"
        return "allow"


def quarantine_kinds(value: object) -> list[str]:
    """The kinds a quarantine reason's value names, as the engine writes them: `prefix until TIME`
    (`quarantined`), `prefix level 2 until TIME` (`quarantine_started`), `prefix,ip` (`quarantine_exempt`)."""
    if not isinstance(value, str):
        return []
    return [kind for kind in value.split(" ", 1)[0].split(",") if kind]


def _worse(one: Action, other: Action) -> Action:
    return other if _SEVERITY[other] > _SEVERITY[one] else one


# max() and min() of two numbers, exactly (the first of equals): a third of the builtins' cost, and the rules
# run them for every request.
def _larger(one: _Number, other: _Number) -> _Number:
    return other if other > one else one


def _smaller(one: _Number, other: _Number) -> _Number:
    return other if other < one else one


_RuleOn = TypeVar("_RuleOn", bound=Rule)


def _on(rule: _RuleOn) -> _RuleOn | None:
    """The rule, or None when it is off."""
    return rule if rule.mode != "off" else None
