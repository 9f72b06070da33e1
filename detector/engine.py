"""`Engine.process(batch)` → results: the one engine that replay, evaluation and the Kafka worker share.

The engine knows nothing of files, Kafka or Redis. It turns a batch of parsed events into signals, asks the
store for every count in one call, and scores each request. Results come back in the order of the batch:
a `Decision` for each request (valid or not), a feedback status for each feedback, and the `BadEvent`
itself for input that is neither (the caller writes it as a dead letter).

Every event is counted at its `ts` bounded by a reference clock (`detector.eventtime`): the caller passes
one per event when it has a trusted one (a Kafka record's timestamp, the server's clock); otherwise the
engine's own watermark is the reference.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Sequence
from typing import Literal, TypeVar, cast

import msgspec

from detector.baseline import ALL
from detector.errors import ConfigurationError
from detector.events import (
    Action,
    BadEvent,
    Decision,
    Event,
    OtpChallenge,
    OtpFeedback,
    OtpRequest,
    Reason,
    UpstreamSignals,
    encode,
    format_timestamp,
    parse_timestamp,
)
from detector.eventtime import TimeBounds, Watermark
from detector.hashing import KeyedHasher
from detector.memo import Memo
from detector.policy import Policy, seconds
from detector.scoring import Conclusion, Hit, Scorer, Subject
from detector.signals.network import ClientResolver, IpClassifier, IpFacts, NetworkSet
from detector.signals.phone import PhoneParser
from detector.state.base import (
    DISTINCT_DIMENSION,
    ChallengeAnswer,
    ChallengeUpdate,
    Counts,
    FeedbackStatus,
    FeedbackUpdate,
    Observation,
    Offence,
    Remembered,
    Store,
    StoreUnavailable,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class _Network(msgspec.Struct, frozen=True):
    facts: IpFacts | None
    problem: str | None
    ip_key: str | None
    subnet_key: str


FeedbackResult = FeedbackStatus | Literal["unavailable"]
# A challenge result that yields no new decision: no open challenge for the request (or it was never one),
# the wrong challenge id, already resolved, the store did not answer, or a token nobody verified.
ChallengeStatus = Literal["unknown", "mismatch", "duplicate", "unavailable", "unverified"]
Result = Decision | FeedbackResult | ChallengeStatus | BadEvent
_decision_decoder = msgspec.json.Decoder(Decision)


class Engine:
    def __init__(
        self, policy: Policy, store: Store, hasher: KeyedHasher, ips: IpClassifier | None = None
    ) -> None:
        """`ips`: the client-address classifier (`detector.wiring` builds it from the policy's lists and
        files); without one, only the policy's inline allow and deny lists apply."""
        self.policy = policy
        self.store = store
        self.scorer = Scorer(policy)
        self.plan = self.scorer.plan
        self._hash = hasher
        self._phones = PhoneParser(policy.phone.prefix_digits, policy.phone.default_region)
        self._clients = ClientResolver(policy.trusted_proxies)
        lists = policy.lists
        if ips is None:
            if lists.datacenter_ip_files or lists.anonymizer_ip_files or lists.geoip_database:
                raise ConfigurationError(
                    "the policy names IP list files or a GeoIP database: build the engine with "
                    "detector.wiring.build_engine, which opens them"
                )
            ips = IpClassifier(NetworkSet(lists.allow_ips), NetworkSet(lists.deny_ips))
        self._ips = ips
        self._counted = frozenset(self.plan.record_dimensions) | {DISTINCT_DIMENSION, "msisdn"}
        self._networks: Memo[tuple[str | None, ...], _Network] = Memo(entry_bytes=600)  # ~550 B measured
        self._prefix_keys: Memo[str, str] = Memo()
        # A store that answers itself within its deadline (memory, Redis, the degrading wrapper around them)
        # says so and gets no timer here; this deadline is for one that could hang.
        self._timeout = 2 * policy.state.timeout_ms / 1000
        self._store_bounds_calls = getattr(store, "bounds_its_calls", False) is True
        self._clock = Watermark(TimeBounds(seconds(policy.time.max_skew), seconds(policy.time.max_lateness)))
        self._challenge_ttl = seconds(policy.challenge.ttl)

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()

    async def process(
        self, events: Sequence[Event | BadEvent], references: Sequence[float | None] | None = None
    ) -> list[Result]:
        """Decide a batch; `references`: a trusted time (epoch seconds) per event, or None for none."""
        results: list[Result | None] = [None] * len(events)
        updates: list[Observation | FeedbackUpdate | ChallengeUpdate] = []
        places: list[int] = []  # the event of each update
        work: list[_Request | None] = []  # what each update's answer decides: a request, or nothing
        challenges: list[tuple[int, OtpChallenge, Subject | None, float]] = []
        for index, event in enumerate(events):
            reference = references[index] if references is not None else None
            if isinstance(event, OtpRequest):
                subject = self.subject(event, reference)
                static = self.scorer.static_hits(subject)
                allow_listed = self.scorer.allow_listed(subject)
                updates.append(
                    Observation(
                        event.request_id,
                        subject.ts,
                        subject.keys,
                        subject.phone.region,
                        take_slot=not allow_listed and not self._blocked_before_counting(static),
                        fingerprint=self._fingerprint(event, subject),
                    )
                )
                places.append(index)
                work.append(_Request(event, subject, static, allow_listed))
            elif isinstance(event, OtpFeedback):
                ts = self._clock.count_at(parse_timestamp(event.ts), reference)
                updates.append(FeedbackUpdate(event.request_id, ts, resolved=event.outcome != "failed"))
                places.append(index)
                work.append(None)
            elif isinstance(event, OtpChallenge):
                if event.result is None:
                    results[index] = "unverified"  # a token: its adapter verifies it first
                elif not hmac.compare_digest(
                    # bytes: compare_digest refuses str with non-ASCII characters (a client's choice)
                    event.challenge_id.encode(),
                    self.challenge_id(event.request_id).encode(),
                ):
                    results[index] = "mismatch"
                else:
                    ts = self._clock.count_at(parse_timestamp(event.ts), reference)
                    claimed = _claimed_request(event)
                    claimer = self.subject(claimed, reference) if claimed is not None else None
                    fingerprint = self._fingerprint(claimed, claimer) if claimed and claimer else ""
                    updates.append(
                        ChallengeUpdate(event.request_id, ts, event.result == "passed", fingerprint)
                    )
                    places.append(index)
                    work.append(None)
                    challenges.append((index, event, claimer, ts))
            elif event.request_id is not None:
                results[index] = self.invalid_request(event)
            else:
                results[index] = event

        batch = _Deciding(self, updates, places, work, results)
        # The store is awaited here, not through a helper coroutine: this runs once per event at batch 1.
        answers: Sequence[object] = []
        if updates:
            try:
                answers = await self._within_deadline(self.store.apply(updates, batch.take))
            except (StoreUnavailable, TimeoutError) as exc:
                on_error = self.policy.state.on_error
                log.warning("state store unavailable, applying on_error=%s: %s", on_error, exc)
                answers = [None] * len(updates)
        batch.take(answers[batch.taken :])
        batch.raise_failure()
        for index, challenge, claimer, ts in challenges:
            results[index] = self._challenge_result(challenge, claimer, ts, batch.resolved[index])
        if batch.fresh or batch.offences:
            try:
                await self._within_deadline(self.store.remember(batch.fresh, batch.offences))
            except (StoreUnavailable, TimeoutError) as exc:
                log.warning("could not record %d decisions for redelivery: %s", len(batch.fresh), exc)
        if None in results:  # an update the store left unanswered (a broken store): its event has no result
            return [result for result in results if result is not None]
        return cast(list[Result], results)

    def challenge_id(self, request_id: str) -> str:
        """A challenge's id: a keyed digest of its request id, so nobody can answer a challenge not shown."""
        return self._hash("challenge", request_id)

    def _challenge_result(
        self, challenge: OtpChallenge, subject: Subject | None, ts: float, answer: ChallengeAnswer | None
    ) -> Decision | ChallengeStatus:
        """A challenge's end: a decision superseding the challenge, or why there is none."""
        if answer is None:
            return "unavailable"
        if answer.status in ("unknown", "mismatch", "duplicate"):
            return cast(ChallengeStatus, answer.status)
        if answer.status == "expired":
            hits = [Hit("challenge_expired", "enforce", verdict="block")]
        elif challenge.result != "passed":
            hits = [Hit("challenge_failed", "enforce", verdict="block")]
        else:
            hits = [Hit("challenge_passed", "enforce"), *self.scorer.pass_hits(answer.passes)]
        conclusion = self.scorer.conclude(hits)
        # A pass ends in a send unless the policy still blocks; it never opens a second challenge.
        verdict: Action = "block" if conclusion.verdict == "block" else "allow"
        action: Action = "block" if conclusion.action == "block" else "allow"
        return Decision(
            request_id=challenge.request_id,
            ts=format_timestamp(ts),
            action=action,
            verdict=verdict,
            mode=self.policy.mode,
            score=conclusion.score,
            reasons=tuple(hit.reason() for hit in conclusion.hits),
            policy_version=self.policy.version,
            client_ip=subject.ip.ip if subject is not None and subject.ip else None,
            phone=subject.phone.e164 if subject is not None else None,
            phone_country=subject.phone.region if subject is not None else None,
            message=challenge.message,
            supersedes="challenge",
        )

    def subject(self, request: OtpRequest, reference: float | None = None) -> Subject:
        own_ts = parse_timestamp(request.ts)
        ts = self._clock.count_at(own_ts, reference)
        phone = self._phones.parse(request.phone, request.phone_country)
        network = self._network(request)
        facts = network.facts
        ip_country = request.ip_country or (facts.country if facts else None)
        subject = Subject(ts, phone, facts, ip_country, request.signals)
        if ts != own_ts:
            subject.clamped_by = own_ts - ts
        if network.problem:
            subject.problems.append(network.problem)
        keys = subject.keys
        counted = self._counted
        if network.ip_key is not None:
            keys["ip"] = network.ip_key
            if "subnet" in counted:
                keys["subnet"] = network.subnet_key
        if phone.e164 is not None and phone.valid:
            keys["msisdn"] = self._hash("msisdn", phone.e164)
            if phone.prefix is not None and "prefix" in counted:
                keys["prefix"] = self._prefix_keys.get(phone.prefix) or self._prefix_keys.put(
                    phone.prefix, self._hash("prefix", phone.prefix)
                )
            if phone.region is not None:
                keys["phone_country"] = phone.region
        if ip_country is not None:
            keys["ip_country"] = ip_country
        if "all" in counted:
            keys["all"] = ALL
        region = phone.region
        if region is not None and "segment" in counted:
            flags = _flags(request.signals, facts)
            if flags:
                keys["segment"] = f"{flags}|{region}"
        if region is not None and ip_country is not None and ip_country != region and "route" in counted:
            keys["route"] = f"{ip_country}>{region}"
        if request.session_id and "session" in counted:
            keys["session"] = self._hash("session", request.session_id)
        if request.account_id and "account" in counted:
            keys["account"] = self._hash("account", request.account_id)
        if request.device_id and "device" in counted:
            keys["device"] = self._hash("device", request.device_id)
        return subject

    def invalid_request(self, bad: BadEvent) -> Decision:
        assert bad.request_id is not None
        return Decision(
            request_id=bad.request_id,
            ts=None,
            action="block",
            verdict="block",
            mode=self.policy.mode,
            score=0.0,
            reasons=(Reason(code="invalid_request", value=bad.error),),
            policy_version=self.policy.version,
        )

    def _decide(
        self,
        request: OtpRequest,
        subject: Subject,
        static: list[Hit],
        allow_listed: bool,
        counts: Counts | None,
    ) -> tuple[Decision, Conclusion]:
        problems = [Hit(problem, "enforce") for problem in subject.problems] if subject.problems else []
        if subject.clamped_by is not None:
            problems.append(Hit("ts_clamped", "enforce", value=round(subject.clamped_by, 3)))
        if counts is not None and counts.degraded:
            problems.append(Hit("state_degraded", "enforce"))
        if allow_listed:
            conclusion = Conclusion("allow", "allow", 0.0, (Hit("allow_listed", "enforce"), *problems))
        elif counts is None:
            conclusion = self.scorer.conclude(static + problems + self._unavailable())
        else:
            hits = static + self.scorer.counted_hits(subject, counts)
            hits += self.scorer.context_hits(subject, counts)
            hits += problems
            waited = None if counts.previous_ts is None else subject.ts - counts.previous_ts
            conclusion = self.scorer.conclude(hits, waited)
        return self._decision(request, subject, conclusion), conclusion

    def _decision(self, request: OtpRequest, subject: Subject, conclusion: Conclusion) -> Decision:
        challenged = conclusion.action == "challenge"
        # Fewer than 16 keyword arguments: CPython passes 16 or more in a dict, 4x slower to construct.
        return Decision(
            request.request_id,
            format_timestamp(subject.ts),
            action=conclusion.action,
            verdict=conclusion.verdict,
            mode=self.policy.mode,
            score=conclusion.score,
            reasons=tuple([hit.reason() for hit in conclusion.hits]),
            policy_version=self.policy.version,
            client_ip=subject.ip.ip if subject.ip else None,
            phone=subject.phone.e164,
            phone_country=subject.phone.region,
            message=request.message,
            flow=request.flow,
            retry_after=conclusion.retry_after,
            challenge_id=self.challenge_id(request.request_id) if challenged else None,
            challenge_expires=format_timestamp(subject.ts + self._challenge_ttl) if challenged else None,
        )

    def _unavailable(self) -> list[Hit]:
        fail = self.policy.state.on_error
        verdict: Action | None = fail if fail == "challenge" or fail == "block" else None
        return [Hit("state_unavailable", "enforce", verdict=verdict)]

    def _redelivered(
        self,
        request: OtpRequest,
        subject: Subject,
        static: list[Hit],
        counts: Counts,
        decided: dict[str, Decision],
    ) -> Decision:
        if counts.stored_decision is not None:
            stored = _decision_decoder.decode(counts.stored_decision)
            return msgspec.structs.replace(
                stored,
                phone=subject.phone.e164,
                client_ip=subject.ip.ip if subject.ip else None,
                message=request.message,
            )
        earlier = decided.get(request.request_id)
        if earlier is not None:
            return earlier
        hits = static + self.scorer.context_hits(subject) + [Hit("redelivered_without_record", "enforce")]
        return self._decision(request, subject, self.scorer.conclude(hits))

    def _within_deadline(self, call: Awaitable[_T]) -> Awaitable[_T]:
        """The store's call, bounded by the engine's deadline unless the store bounds its own (as is: one
        coroutine less per call)."""
        return call if self._store_bounds_calls else self._timed(call)

    async def _timed(self, call: Awaitable[_T]) -> _T:
        async with asyncio.timeout(self._timeout):  # no task of its own, unlike wait_for
            return await call

    def _offences(
        self,
        subject: Subject,
        conclusion: Conclusion,
        counts: Counts,
        begun: dict[tuple[str, str], tuple[float, int]],
    ) -> list[Offence]:
        """The entities this request's block quarantines, labelled for an operator without the number or
        the address; `begun` learns their quarantines for the rest of the batch."""
        offending = self.scorer.offences(conclusion)
        if not offending:
            return []
        found = []
        for dim in sorted(offending):
            key = subject.keys.get(dim)
            if key is None:
                continue
            following = self.plan.next_quarantine(counts.quarantines.get(dim), subject.ts)
            if following is not None:
                begun[(dim, key)] = following
                found.append(Offence(dim, key, subject.ts, _label(dim, subject)))
        return found

    def _meet_quarantines(
        self, subject: Subject, counts: Counts, begun: dict[tuple[str, str], tuple[float, int]]
    ) -> None:
        for dim in self.plan.quarantine_dimensions:
            key = subject.keys.get(dim)
            if key is not None and (dim, key) in begun:
                counts.quarantines[dim] = begun[(dim, key)]

    def _fingerprint(self, request: OtpRequest, subject: Subject) -> str:
        """What a redelivery must repeat: the number, the client and the message (keyed, like every key)."""
        message = request.message
        return self._hash(
            "fingerprint",
            "\x1f".join(
                (
                    subject.phone.e164 or request.phone,
                    subject.ip.ip if subject.ip else "",
                    (message.text or "") if message else "",
                    (message.source or "") if message else "",
                )
            ),
        )

    def _blocked_before_counting(self, static: list[Hit]) -> bool:
        """A request that will not be sent takes no slot of its number's send limit."""
        if not static or self.policy.mode != "enforce":
            return False
        return any(hit.verdict == "block" and hit.mode == "enforce" for hit in static)

    def _network(self, request: OtpRequest) -> _Network:
        """Client address, its facts and keyed hashes, memoised on the event's own strings.

        Long spellings (a forwarded_for header of many hops) are memoised by a digest, so a client cannot
        fill the memo with its own long strings; the memo's byte budget bounds the rest.
        """
        spelled = (request.client_ip, request.remote_addr, request.forwarded_for)
        known = self._networks.recall(spelled)
        if known is None:
            client = self._clients.resolve(*spelled)
            if client.ip is None:
                known = _Network(None, client.problem, None, "")
            else:
                facts = self._ips.facts(client.ip)
                ip_key, subnet_key = self._hash("ip", facts.ip), self._hash("subnet", facts.subnet)
                known = _Network(facts, client.problem, ip_key, subnet_key)
            self._networks.put(self._networks.compact(spelled), known)
        return known


class _Request(msgspec.Struct):
    """A request of the batch, as far as it is known before its counts (a struct: built in C, unlike a
    NamedTuple)."""

    request: OtpRequest
    subject: Subject
    static: list[Hit]
    allow_listed: bool


class _Deciding:
    """A batch's store answers turned into results as they come.

    A store may hand over the answers of the batch's first updates while later ones are still on their way
    (`Store.apply`'s `on_answers`): their requests are decided meanwhile. Requests are decided in batch
    order either way, so every decision is what it would be with all the answers at once.
    """

    __slots__ = (
        "_begun",
        "_decided",
        "_engine",
        "_failure",
        "_places",
        "_results",
        "_updates",
        "_work",
        "fresh",
        "offences",
        "resolved",
        "taken",
    )

    def __init__(
        self,
        engine: Engine,
        updates: list[Observation | FeedbackUpdate | ChallengeUpdate],
        places: list[int],
        work: list[_Request | None],
        results: list[Result | None],
    ) -> None:
        self._engine = engine
        self._updates = updates
        self._places = places
        self._work = work
        self._results = results
        self.taken = 0  # updates answered so far
        self.resolved: dict[int, ChallengeAnswer | None] = {}
        self.fresh: list[Remembered] = []
        self.offences: list[Offence] = []
        self._decided: dict[str, Decision] = {}
        # Quarantines begun in this batch: later requests of the batch meet them as they would in the next.
        self._begun: dict[tuple[str, str], tuple[float, int]] = {}
        self._failure: Exception | None = None

    def take(self, answers: Sequence[object]) -> None:
        """The answers of the next updates, in order. A failure is kept for `raise_failure`, so that the
        store, which may call this in the middle of reading its answers, is not cut short."""
        if self._failure is not None:
            return
        try:
            for answer in answers:
                position = self.taken
                self.taken = position + 1
                index = self._places[position]
                work = self._work[position]
                if work is not None:
                    self._results[index] = self._decide(work, answer if isinstance(answer, Counts) else None)
                elif isinstance(self._updates[position], FeedbackUpdate):
                    feedback = cast(FeedbackStatus, answer) if isinstance(answer, str) else "unavailable"
                    self._results[index] = feedback
                else:
                    self.resolved[index] = answer if isinstance(answer, ChallengeAnswer) else None
        except Exception as exc:
            self._failure = exc

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _decide(self, work: _Request, counts: Counts | None) -> Decision:
        engine, begun = self._engine, self._begun
        request, subject, static = work.request, work.subject, work.static
        if begun and counts is not None:
            engine._meet_quarantines(subject, counts, begun)
        if counts is not None and counts.duplicate:
            return engine._redelivered(request, subject, static, counts, self._decided)
        if counts is not None and counts.reused:
            reused = Hit("request_id_reused", "enforce", verdict="block")
            return engine._decide(request, subject, [*static, reused], False, counts)[0]
        decision, conclusion = engine._decide(request, subject, static, work.allow_listed, counts)
        if counts is not None and (found := engine._offences(subject, conclusion, counts, begun)):
            self.offences += found
            decision = _quarantines_started(decision, found, begun)
        expires = subject.ts + engine._challenge_ttl if decision.action == "challenge" else None
        kept = encode(_without_personal_data(decision))
        self.fresh.append(Remembered(request.request_id, subject.ts, kept, expires))
        self._decided[request.request_id] = decision
        return decision


def _label(dimension: str, subject: Subject) -> str:
    """What a quarantined entity is, for an operator: a block of numbers, a subnet, a masked address."""
    if dimension == "prefix" and subject.phone.prefix is not None:
        hidden = len(subject.phone.e164 or "") - len(subject.phone.prefix)
        return subject.phone.prefix + "x" * hidden
    if dimension == "subnet" and subject.ip is not None:
        return subject.ip.subnet
    if dimension == "ip" and subject.ip is not None:
        return (
            subject.ip.subnet.split("/")[0].rsplit(".", 1)[0] + ".x"
            if "." in subject.ip.ip
            else subject.ip.subnet
        )
    return dimension


def _flags(signals: UpstreamSignals | None, facts: IpFacts | None) -> str:
    """The upstream flags of a request, as a segment's name: "anonymizer", "bot+datacenter", or ""."""
    flags = []  # in the name's (alphabetical) order
    if (signals is not None and signals.anonymizer) or (facts is not None and facts.anonymizer):
        flags.append("anonymizer")
    if signals is not None and signals.bot:
        flags.append("bot")
    if (signals is not None and signals.datacenter) or (facts is not None and facts.datacenter):
        flags.append("datacenter")
    return "+".join(flags)


def _claimed_request(challenge: OtpChallenge) -> OtpRequest | None:
    """The request a challenge result says it is for, when it repeats it (to compare fingerprints)."""
    if challenge.phone is None:
        return None
    return OtpRequest(
        request_id=challenge.request_id,
        ts=challenge.ts,
        phone=challenge.phone,
        phone_country=challenge.phone_country,
        client_ip=challenge.client_ip,
        remote_addr=challenge.remote_addr,
        forwarded_for=challenge.forwarded_for,
        message=challenge.message,
    )


def _without_personal_data(decision: Decision) -> Decision:
    """What the store keeps for redelivery: the answer, not the number, address or message it was for.

    A redelivered request carries those again, and they are put back from it.
    """
    return msgspec.structs.replace(decision, phone=None, client_ip=None, message=None)


def _quarantines_started(
    decision: Decision, offences: list[Offence], begun: dict[tuple[str, str], tuple[float, int]]
) -> Decision:
    """A decision that quarantines says so: which kind, at which level of the ladder, until when."""
    started = []
    for offence in offences:
        until, level = begun[(offence.dimension, offence.key)]
        value = f"{offence.dimension} level {level} until {format_timestamp(until)}"
        started.append(Reason(code="quarantine_started", value=value))
    return msgspec.structs.replace(decision, reasons=(*decision.reasons, *started))
