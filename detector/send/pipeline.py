"""One round of the send worker, free of Kafka: decisions in, SMS to 8x8, outcomes out.

For each ``otp_decision`` on the decisions topic:

* ``allow``: the SMS goes to 8x8 (``clientMessageId`` = request_id, ``clientIp`` = the decision's client IP,
  ``track: "Outcome"``); the single-message endpoint when one is ready, the batch endpoint when several are;
* ``delay`` / ``challenge`` / ``block``: nothing is sent (a delayed request's retry is a new request).

Either way exactly one ``otp_outcome`` event (schemas/otp_outcome.schema.json), keyed by request_id, goes to
the outcomes topic: ``sent`` (with 8x8's umid), ``rejected`` (8x8 answered REJECTED: its code and reason),
``failed`` (``code``: 8x8's error code when it gave one, else ours: timeout, rate_limited, in_doubt, ...),
or ``skipped`` (the decision's action and reason codes). On the feedback topic, ``verified`` feedback for a
sent request is reported to 8x8 as ``success`` for its umid, ``failed`` as ``failure``.

Each message is checked against 8x8's rules for an SmsRequest (destination pattern in ASCII, clientMessageId
up to 350 characters, source up to 16, text present: :meth:`SmsMessage.problem`) before it joins a batch; one
that breaks them fails alone (``invalid_message``) and the rest go out. Should 8x8 still refuse a whole
batch with a 400, the batch is halved until the message at fault stands alone.

Exactly one send per request_id
-------------------------------
Work goes in rounds of up to `round_size` records; the allowed ones are cut into chunks of `batch_size`,
and each chunk, on its own:

1. waits for the rate limit and a request slot, then **claims** its requests in the ledger (Redis, see
   :mod:`detector.send.ledger`) right before its HTTP call: a request that already has a record is never
   sent again, and a crash strands only the chunks whose calls were in flight;
2. **sends** (retries with backoff for what 8x8 cannot have queued: 429, 503, failures to connect);
3. **records** the outcome (and umid) in the ledger, only if the claim is still ours.

Then the round **publishes** the outcome events, waits for Kafka's acknowledgement, marks them published
in the ledger, and its offsets are **committed**.

A decision delivered again (a crash, a rebalance, a duplicate decision) finds its record first:

* with an outcome: nothing is sent; the stored outcome is published again unless it was marked published;
* with a claim but no outcome: its claimant is sending it, or died between its claim and its record. While
  the claimant is alive (its liveness key is fresh) the worker waits for its outcome, up to `claim_wait`.
  A dead claimant's request is **looked up** in 8x8's message log (below): there, it is ``sent`` with the
  umid 8x8 holds; absent, the claim is taken over and the request sent; if 8x8's log cannot tell (or
  `lookup` is off, or a live claimant never finishes), the outcome is ``failed`` / ``in_doubt``, written
  by compare-and-set on that claim so a late writer cannot contradict it. The ledger must survive what it
  guards: a Redis that loses its data (no persistence, failover to a stale replica) forgets claims.

Outcome events are published before the offset commit and after the ledger write, so they are at least
once: a crash between Kafka's acknowledgement and the commit publishes the same bytes again (from the
ledger) on redelivery; skipped outcomes may repeat in the same case. Consumers should treat the outcomes
topic as an upsert keyed by request_id.

Ambiguous failures
------------------
After a 500/502/504, a read timeout or a dropped connection, 8x8 may have queued the messages anyway, and
it does not promise to de-duplicate on clientMessageId: they are never resent blindly. After
`lookup_delay` (8x8 may still be working on the request) the worker searches 8x8's message log for the
chunk's clientMessageIds (a log export job, :meth:`EightByEightClient.find_logged`): those found are
``sent`` with their umid, those absent are retried (counted in
``detector_send_retries_total{ambiguous="yes"}``), and if the log cannot be searched they end ``in_doubt``.
429, 503 and failures to connect are retried without a lookup; other 4xx and REJECTED are final. Every
attempt waits for the rate limit (a 429's Retry-After pauses every send of this worker), within
`retry_attempts` and `retry_max_elapsed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import msgspec
import orjson

from detector.events import (
    Decision,
    OtpFeedback,
    OtpOutcome,
    OutcomeStatus,
    encode,
    format_timestamp,
    parse_event,
    parse_timestamp,
)
from detector.kafka.output import Output, acknowledged
from detector.send import outcomes
from detector.send.config import SendConfig
from detector.send.eightbyeight import (
    EightByEightClient,
    FeedbackAccepted,
    Logged,
    PermanentFailure,
    RetryableFailure,
    SendResult,
    SmsMessage,
)
from detector.send.gate import Gate, Stopped
from detector.send.ledger import Entry, LedgerUnavailable, SendLedger
from detector.send.metrics import SendMetrics
from detector.send.ratelimit import TokenBucket

log = logging.getLogger(__name__)

Positions = dict[tuple[str, int], int]


# --- what a round works on --------------------------------------------------------------------------


class Record(Protocol):
    """A consumed Kafka record (aiokafka's ConsumerRecord has these)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(slots=True, eq=False)
class _Chunk:
    """One chunk's sending: its claim token, when it started, attempts so far, what it claimed and what it
    found claimed by others."""

    token: str
    started: float
    attempts: int = 0
    claimed: list[_Item] = field(default_factory=list)
    lost: list[tuple[_Item, Entry]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Item:
    record: Record
    request_id: str | None = None
    decision: Decision | None = None
    feedback: OtpFeedback | None = None
    problem: str | None = None  # an allow (or unreadable) decision that cannot be sent: why
    problem_kind: Literal["decision", "message"] = "decision"  # the decision, or 8x8's rules for the SMS
    message: SmsMessage | None = None
    outcome: bytes | None = None  # the outcome event to publish (and/or that the ledger holds)
    status: OutcomeStatus | None = None
    umid: str | None = None
    publish: bool = False
    in_ledger: bool = False  # the outcome is the ledger's: mark it published once Kafka has it
    finished: bool = False  # may be committed
    abandoned: bool = False  # never tried: release the claim, do not commit


# --- one round --------------------------------------------------------------------------------------


class SendPipeline:
    """What the worker does with one round of records; knows 8x8, the ledger and the output, not Kafka's
    consumer. `handle` returns where each partition may be committed to."""

    def __init__(
        self,
        config: SendConfig,
        client: EightByEightClient,
        ledger: SendLedger,
        output: Output,
        metrics: SendMetrics,
        *,
        owner: str | None = None,
        stopping: asyncio.Event | None = None,
        limiter: TokenBucket | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.topics = config.topics
        self.client = client
        self.ledger = ledger
        self.output = output
        self.metrics = metrics
        self.owner = owner or new_owner_id()
        self.stopping = stopping or asyncio.Event()
        self.gate = Gate(config, metrics, self.stopping, limiter, rng)
        self._wall = wall_clock
        self._claims = 0  # makes each claim token unique

    # the round

    async def handle(
        self, records: Sequence[Record]
    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """Process one round. Returns (commit, rewind): per (topic, partition), the offset to commit
        (everything before it is finished) and, where something was left unfinished, the offset to read
        again from."""
        started = time.perf_counter()
        items = [self._read(record) for record in records]
        sends, feedback = self._sort(items)
        feedback_task = asyncio.ensure_future(self._feedback(feedback)) if feedback else None
        try:
            with contextlib.suppress(Stopped):
                await self._send(sends)
                await self._publish(items)
        finally:
            if feedback_task is not None:
                with contextlib.suppress(Stopped):
                    await feedback_task
        self.metrics.round_seconds.observe(time.perf_counter() - started)
        return _positions(items)

    def _read(self, record: Record) -> _Item:
        item = _Item(record)
        value = record.value or b""
        if record.topic == self.topics.decisions:
            try:
                item.decision = msgspec.json.decode(value, type=Decision)
                item.request_id = item.decision.request_id
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                item.request_id = _request_id_of(value)
                self.metrics.invalid.labels("decisions").inc()
                if item.request_id is None:
                    log.warning(
                        "skipping an unreadable decision without a request_id at %s/%d/%d: %s",
                        record.topic,
                        record.partition,
                        record.offset,
                        str(exc)[:200],
                    )
                    item.finished = True
                else:
                    item.problem = outcomes.clean(f"unreadable decision: {exc}")
        elif record.topic == self.topics.feedback:
            event = parse_event(value)
            if isinstance(event, OtpFeedback):
                item.feedback = event
                item.request_id = event.request_id
            else:  # the feedback topic may be shared with requests; anything else is not ours
                self.metrics.feedback.labels("ignored").inc()
                item.finished = True
        else:
            item.finished = True
        return item

    def _sort(self, items: list[_Item]) -> tuple[list[_Item], list[_Item]]:
        """Decisions to send, skipped ones answered at once, feedback to report; repeats within the round
        are covered by their first occurrence."""
        sends: list[_Item] = []
        feedback: list[_Item] = []
        # A decision that supersedes a challenge is a second decision for its request, not a repeat of the
        # first: both are handled, in order (the challenge's is skipped, the new one may be sent).
        seen: set[tuple[str, str | None]] = set()
        for item in items:
            if item.feedback is not None:
                feedback.append(item)
                continue
            if item.request_id is None or item.finished:
                continue
            version = (item.request_id, item.decision.supersedes if item.decision is not None else None)
            if version in seen:
                self.metrics.redelivered.labels("same_round").inc()
                item.finished = True
                continue
            seen.add(version)
            decision = item.decision
            if decision is not None and decision.action != "allow":
                self._set(
                    item,
                    OtpOutcome(
                        request_id=item.request_id,
                        status="skipped",
                        ts=self._now(),
                        action=decision.action,
                        reasons=tuple(reason.code for reason in decision.reasons),
                    ),
                )
                item.publish = True
                continue
            if decision is not None and item.problem is None:
                item.message, item.problem = _message_for(decision)
                if item.message is not None and (problem := item.message.problem()) is not None:
                    item.message, item.problem, item.problem_kind = None, problem, "message"
                    log.warning("request %.80r breaks 8x8's message rules: %s", item.request_id, problem)
            sends.append(item)
        return sends, feedback

    # steps 1 to 3: claim, send, record (per chunk)

    async def _send(self, items: list[_Item]) -> None:
        if not items:
            return
        entries = await self.gate.ledger(lambda: self.ledger.get([i.request_id or "" for i in items]))
        fresh: list[_Item] = []
        foreign: list[tuple[_Item, Entry]] = []
        for item, entry in zip(items, entries, strict=True):
            if entry is None:
                fresh.append(item)
            elif entry.outcome is not None:
                self.metrics.redelivered.labels("published" if entry.published else "unpublished").inc()
                self._adopt(item, entry)
            else:
                foreign.append((item, entry))
        refused = [item for item in fresh if item.message is None]
        ready = [item for item in fresh if item.message is not None]
        size = self.config.batch_size
        chunks = [ready[i : i + size] for i in range(0, len(ready), size)]
        await asyncio.gather(
            self._refuse(refused),
            *(self._deliver(chunk) for chunk in chunks),
            self._settle_many(foreign),
        )

    def _token(self) -> str:
        """A claim token of its own for each claim call: ``owner@epoch-ms.n`` (the time is when it was
        claimed, which is where a search of 8x8's log for it starts)."""
        self._claims += 1
        return f"{self.owner}@{int(self._wall() * 1000)}.{self._claims}"

    async def _refuse(self, items: list[_Item]) -> None:
        """Decisions that cannot be sent: claimed and recorded as failed at once, never sent."""
        if not items:
            return
        token = self._token()
        entries = await self.gate.ledger(
            lambda: self.ledger.claim([i.request_id or "" for i in items], token)
        )
        mine = []
        for item, entry in zip(items, entries, strict=True):
            if entry is None:
                error = "invalid_message" if item.problem_kind == "message" else "invalid_decision"
                self._set(
                    item,
                    outcomes.failed(
                        item.request_id or "", self._now(), error, item.problem or "invalid decision"
                    ),
                )
                mine.append(item)
            else:
                await self._settle(item, entry)
        await self._record(mine, token)

    async def _deliver(self, chunk: list[_Item]) -> None:
        """One chunk: claim it just before its HTTP call, send, settle ambiguity, record the outcomes."""
        token = self._token()
        state = _Chunk(token=token, started=time.monotonic())
        await self._attempt(chunk, state)
        for item, entry in state.lost:
            await self._settle(item, entry)
        await self._record([i for i in state.claimed if i.outcome is not None and not i.abandoned], token)

    async def _attempt(self, pending: list[_Item], state: _Chunk) -> None:
        """Send `pending` (none of which 8x8 has) until each has an outcome, or the worker stops."""
        while pending:
            if not await self.gate.enter(len(pending)):
                await self._abandon(pending, state)
                return
            try:
                if not state.claimed:
                    pending = await self._claim(pending, state)
                    if not pending:
                        return
                began, at = time.perf_counter(), self._wall()
                results = await self._call(pending)
            finally:
                self.gate.leave()
            state.attempts += 1
            operation = "single" if len(pending) == 1 else "batch"
            first = results[0]
            self.gate.count(operation, first, time.perf_counter() - began)
            if isinstance(first, PermanentFailure) and first.reason == "bad_request" and len(pending) > 1:
                # 8x8 refused the whole batch for what our own check did not catch: halve it until the
                # message at fault stands alone, so it fails alone and the rest go out.
                half = len(pending) // 2
                self.metrics.retries.labels(operation, "split", "no").inc()
                await asyncio.gather(
                    self._attempt(pending[:half], state), self._attempt(pending[half:], state)
                )
                return
            if not isinstance(first, RetryableFailure):
                for item, result in zip(pending, results, strict=True):
                    self._set(
                        item, outcomes.from_result(item.request_id or "", self._now(), result, state.attempts)
                    )
                return
            if first.may_have_queued:
                pending = await self._look_up(pending, first, at, state)
                if not pending:
                    return
            wait = self.gate.retry_in(operation, first, state.attempts, state.started)
            if wait is None:
                for item in pending:
                    self._set(
                        item, outcomes.from_result(item.request_id or "", self._now(), first, state.attempts)
                    )
                return
            if not await self.gate.nap(wait):
                await self._abandon(pending, state)
                return

    async def _claim(self, items: list[_Item], state: _Chunk) -> list[_Item]:
        """Claim the chunk (its slot is held: the HTTP call follows at once); the ones now ours."""
        entries = await self.gate.ledger(
            lambda: self.ledger.claim([i.request_id or "" for i in items], state.token)
        )
        won = []
        for item, entry in zip(items, entries, strict=True):
            if entry is None:
                won.append(item)
            else:  # another worker got there since this round looked (a rebalance)
                state.lost.append((item, entry))
        state.claimed.extend(won)
        return won

    async def _call(self, items: list[_Item]) -> list[SendResult]:
        messages = [item.message for item in items if item.message is not None]
        self.metrics.batch_messages.observe(len(messages))
        if len(messages) == 1:
            return [await self.client.send(messages[0])]
        return list(await self.client.send_batch(messages))

    async def _abandon(self, items: list[_Item], state: _Chunk) -> None:
        """Stopping before these were (re)sent; 8x8 does not have them: drop their claims, leave them
        uncommitted for the next worker."""
        self.metrics.abandoned.inc(len(items))
        for item in items:
            item.abandoned = True
        claimed = {id(c) for c in state.claimed}
        mine = [(i.request_id or "", state.token) for i in items if id(i) in claimed]
        if mine:
            try:
                await self.ledger.release(mine)
            except LedgerUnavailable as exc:
                log.warning("could not release %d claims (they will be looked up): %s", len(mine), exc)

    async def _look_up(
        self, items: list[_Item], failure: RetryableFailure, at: float, state: _Chunk
    ) -> list[_Item]:
        """After an ambiguous failure: which of `items` did 8x8 queue? Those get their outcome (sent, with
        the umid 8x8's log holds); the ones 8x8 does not have are returned, to be sent again. If 8x8's log
        cannot tell, they end failed / in_doubt: never resent blindly."""
        found = await self._search_log(items, at - 1.0, at)
        if found is False:  # stopping: keep the claims, unrecorded; the next worker looks them up
            self.metrics.abandoned.inc(len(items))
            for item in items:
                item.abandoned = True
            return []
        if found is None:
            for item in items:
                self._set(
                    item,
                    outcomes.failed(
                        item.request_id or "",
                        self._now(),
                        "in_doubt",
                        f"{outcomes.describe(failure)}; 8x8's message log did not answer",
                    ),
                )
                self.metrics.in_doubt.inc()
            return []
        absent = []
        for item in items:
            logged = found.get(item.request_id or "")
            if logged is None:
                absent.append(item)
            else:
                self._set(
                    item,
                    outcomes.from_log(
                        item.request_id or "", self._now(), logged, state.attempts, outcomes.describe(failure)
                    ),
                )
        self.metrics.lookups.labels("found").inc(len(items) - len(absent))
        self.metrics.lookups.labels("absent").inc(len(absent))
        return absent

    async def _search_log(
        self, items: list[_Item], since: float, sent_at: float
    ) -> dict[str, Logged] | Literal[False] | None:
        """8x8's log for these requests, searched from `since` (epoch s) once `lookup_delay` has passed
        after `sent_at`; None when the lookup is off or 8x8 cannot say, False if the worker stops first."""
        if not self.config.lookup:
            return None
        wait = sent_at + self.config.lookup_delay - self._wall()
        if wait > 0 and not await self.gate.nap(wait):
            return False
        window_end = datetime.fromtimestamp(self._wall(), UTC)
        work = self.client.find_logged(
            [i.request_id or "" for i in items],
            datetime.fromtimestamp(since, UTC),
            window_end,
            poll=self.config.lookup_poll,
            patience=self.config.lookup_patience,
        )
        answer = await self.gate.until_stopping(work)
        if answer is False:
            return False
        if not isinstance(answer, dict):
            self.metrics.lookups.labels("failed").inc(len(items))
            log.warning("8x8's message log could not be searched: %s", outcomes.describe(answer))
            return None
        return answer

    async def _record(self, items: list[_Item], token: str) -> None:
        """Write the outcomes of the claims `token` holds; adopt any another worker wrote first."""
        writes = [
            (i.request_id or "", token, i.outcome or b"", i.umid if i.status == "sent" else None)
            for i in items
        ]
        if not writes:
            return
        won = await self.gate.ledger(lambda: self.ledger.record(writes), must=True)
        for item, entry in zip(items, won, strict=True):
            item.in_ledger = True
            if entry is not None and entry.outcome is not None:  # someone settled it first
                log.warning(
                    "request %s was settled by another worker while this one sent it; publishing that one",
                    item.request_id,
                )
                self._adopt(item, entry)
            elif entry is None:
                item.publish = True

    async def _settle_many(self, foreign: list[tuple[_Item, Entry]]) -> None:
        """Claims found without an outcome: those of dead owners are looked up in 8x8's log together (one
        export job, not one per request); the rest are settled one by one."""
        if not foreign:
            return
        owners = sorted({entry.owner or "" for _, entry in foreign})
        with contextlib.suppress(Stopped):
            alive = await asyncio.gather(*(self._alive(owner) for owner in owners))
            dead = {owner for owner, up in zip(owners, alive, strict=True) if not up}
            orphans = [(i, e) for i, e in foreign if (e.owner or "") in dead and i.message is not None]
            others = [(i, e) for i, e in foreign if (e.owner or "") not in dead or i.message is None]
            await asyncio.gather(
                self._settle_orphans(orphans), *(self._settle(item, entry) for item, entry in others)
            )

    async def _alive(self, owner: str) -> bool:
        return await self.gate.ledger(lambda: self.ledger.alive(owner))

    async def _settle_orphans(self, orphans: list[tuple[_Item, Entry]]) -> None:
        """Dead owners' claims: found in 8x8's log, sent with that umid; absent, sent now under our own
        claim (one chunk); the log cannot tell, in doubt."""
        if not orphans:
            return
        if not self.config.lookup:
            for item, entry in orphans:
                await self._settle(item, entry)  # in doubt, unless its owner comes back
            return
        self.metrics.redelivered.labels("claimed").inc(len(orphans))
        times = [_claimed_at(entry.claim or "") for _, entry in orphans]
        items = [item for item, _ in orphans]
        logged = await self._search_log(items, min(times) - 1.0, max(times) + self.client.config.timeout)
        if logged is False:
            return  # stopping: leave them to whoever takes the partitions next
        absent: list[tuple[_Item, Entry]] = []
        for item, entry in orphans:
            hit = logged.get(item.request_id or "") if logged is not None else None
            if logged is None:
                await self._declare_in_doubt(item, entry, "that stopped before recording 8x8's answer")
            elif hit is None:
                absent.append((item, entry))
            else:
                outcome = outcomes.from_log(
                    item.request_id or "", self._now(), hit, None, "the worker that sent it stopped"
                )
                await self._write_settled(item, entry.claim or "", outcome)
        if logged is not None:
            self.metrics.lookups.labels("found").inc(len(orphans) - len(absent))
            self.metrics.lookups.labels("absent").inc(len(absent))
        if not absent:
            return
        released = [(item.request_id or "", entry.claim or "") for item, entry in absent]
        await self.gate.ledger(lambda: self.ledger.release(released))
        self.metrics.redelivered.labels("taken_over").inc(len(absent))
        log.info("%d requests whose claimant stopped before 8x8 had them: sending them now", len(absent))
        size = self.config.batch_size
        chunks = [absent[i : i + size] for i in range(0, len(absent), size)]
        await asyncio.gather(*(self._deliver([item for item, _ in chunk]) for chunk in chunks))

    async def _settle(self, item: _Item, entry: Entry) -> None:
        """A claim without an outcome: wait while its owner is alive (this worker too: another of its rounds
        may be sending it); a dead owner's claim is looked up in 8x8's log: found is sent, absent is sent
        now, unknown is in doubt. Left unfinished if the worker stops meanwhile."""
        with contextlib.suppress(Stopped):  # the rest of the round (sends made) still gets recorded
            for _ in range(3):  # a takeover lost to yet another worker: look again, a few times
                entry_or_none = await self._settle_claim(item, entry)
                if entry_or_none is None:
                    return
                entry = entry_or_none

    async def _settle_claim(self, item: _Item, entry: Entry) -> Entry | None:
        request_id = item.request_id or ""
        deadline = time.monotonic() + self.config.claim_wait
        self.metrics.redelivered.labels("claimed").inc()
        owner_alive = True
        while time.monotonic() < deadline:
            owner = entry.owner or ""
            owner_alive = await self.gate.ledger(lambda: self.ledger.alive(owner))  # noqa: B023 - awaited at once
            if not owner_alive:
                break
            if not await self.gate.nap(0.1):
                return None  # stopping: leave it to whoever takes the partition next
            (found,) = await self.gate.ledger(lambda: self.ledger.get([request_id]))
            if found is None:
                return None if item.message is None else await self._take_over(item, None)
            if found.outcome is not None:
                self._adopt(item, found)
                return None
            entry = found
        claim = entry.claim or ""
        if not owner_alive and item.message is not None:
            claimed_at = _claimed_at(claim)
            logged = await self._search_log([item], claimed_at - 1.0, claimed_at + self.client.config.timeout)
            if logged is False:
                return None  # stopping: leave it to whoever takes the partition next
            if logged is not None:
                hit = logged.get(request_id)
                self.metrics.lookups.labels("absent" if hit is None else "found").inc()
                if hit is None:
                    return await self._take_over(item, claim)
                outcome = outcomes.from_log(
                    item.request_id or "", self._now(), hit, None, "the worker that sent it stopped"
                )
                await self._write_settled(item, claim, outcome)
                return None
        why = "alive but not done" if owner_alive else "that stopped before recording 8x8's answer"
        await self._declare_in_doubt(item, entry, why)
        return None

    async def _declare_in_doubt(self, item: _Item, entry: Entry, why: str) -> None:
        outcome = outcomes.failed(
            item.request_id or "",
            self._now(),
            "in_doubt",
            f"claimed by a worker {why}; the SMS may have been sent, so it is not sent again",
        )
        self.metrics.in_doubt.inc()
        log.warning(
            "request %s was claimed by %s without an outcome: not resent, in_doubt",
            item.request_id,
            entry.owner,
        )
        await self._write_settled(item, entry.claim or "", outcome)

    async def _write_settled(self, item: _Item, claim: str, outcome: OtpOutcome) -> None:
        """Record a settled outcome by compare-and-set on the claim found, so a late writer cannot
        contradict it."""
        request_id = item.request_id or ""
        (won,) = await self.gate.ledger(
            lambda: self.ledger.record([(request_id, claim, encode(outcome), outcome.umid)]), must=True
        )
        item.in_ledger = True
        if won is not None and won.outcome is not None:
            self._adopt(item, won)
            return
        self._set(item, outcome)
        item.publish = True

    async def _take_over(self, item: _Item, claim: str | None) -> Entry | None:
        """8x8 does not have it and its claimant is gone: drop that claim and send it under our own."""
        request_id = item.request_id or ""
        if claim is not None:
            await self.gate.ledger(lambda: self.ledger.release([(request_id, claim)]))
        self.metrics.redelivered.labels("taken_over").inc()
        log.info("request %s: its claimant stopped before 8x8 had it; sending it now", request_id)
        token = self._token()
        state = _Chunk(token=token, started=time.monotonic())
        await self._attempt([item], state)
        await self._record([i for i in state.claimed if i.outcome is not None and not i.abandoned], token)
        return state.lost[0][1] if state.lost else None

    # step 4: publish

    async def _publish(self, items: list[_Item]) -> None:
        out = [item for item in items if item.publish and item.outcome is not None and item.request_id]
        if not out:
            for item in items:
                if item.outcome is not None and not item.publish:
                    item.finished = True
            return
        acks = [
            await self.output.send(
                self.topics.outcomes, (item.request_id or "").encode(), item.outcome or b""
            )
            for item in out
        ]
        await acknowledged(acks, f"{len(out)} outcomes")
        for item in out:
            self.metrics.outcomes.labels(item.status or outcomes.status_of(item.outcome)).inc()
        published = [item.request_id or "" for item in out if item.in_ledger]
        if published:
            # Should this fail, the only cost is the same outcome published again on redelivery.
            with contextlib.suppress(Stopped):
                await self.gate.ledger(lambda: self.ledger.mark_published(published))
        for item in items:
            if item.outcome is not None:
                item.finished = True

    # feedback

    async def _feedback(self, items: list[_Item]) -> None:
        wanted: list[tuple[_Item, Literal["success", "failure"]]] = []
        for item in items:
            event = item.feedback
            assert event is not None
            if event.outcome == "completed_other":
                self.metrics.feedback.labels("completed_other").inc()
                item.finished = True
            else:
                wanted.append((item, "success" if event.outcome == "verified" else "failure"))
        if not wanted:
            return
        claims = await self.gate.ledger(
            lambda: self.ledger.claim_feedback_many(
                [(item.request_id or "", outcome) for item, outcome in wanted]
            )
        )
        posts = []
        for (item, outcome), claim in zip(wanted, claims, strict=True):
            if claim.verdict == "post" and claim.umid:
                posts.append(self._post_feedback(item, claim.umid, outcome))
            else:
                self.metrics.feedback.labels(claim.verdict).inc()
                item.finished = True
        await asyncio.gather(*posts)

    async def _post_feedback(self, item: _Item, umid: str, outcome: Literal["success", "failure"]) -> None:
        event = item.feedback
        assert event is not None
        try:
            at: datetime | None = datetime.fromtimestamp(parse_timestamp(event.ts), UTC)
        except ValueError:
            at = None
        results, _, _ = await self.gate.attempts(
            "feedback", lambda: self._one_feedback(umid, outcome, at), tokens=0
        )
        result = results[0] if results else None
        if isinstance(result, FeedbackAccepted):
            self.metrics.feedback.labels("posted").inc()
            log.debug("feedback %s for request %s (umid %s) posted", outcome, item.request_id, umid)
        else:
            self.metrics.feedback.labels("failed").inc()
            log.warning(
                "feedback %s for request %s (umid %s) was not accepted: %s",
                outcome,
                item.request_id,
                umid,
                outcomes.describe(result),
            )
        item.finished = True

    async def _one_feedback(
        self, umid: str, outcome: Literal["success", "failure"], at: datetime | None
    ) -> list[Any]:
        return [await self.client.feedback(umid, outcome, at=at)]

    def _set(self, item: _Item, outcome: OtpOutcome) -> None:
        item.outcome = outcomes.encode_outcome(outcome)
        item.status = outcome.status
        item.umid = outcome.umid
        if outcome.status == "failed":
            self.metrics.failures.labels(outcome.error or "unknown").inc()

    def _adopt(self, item: _Item, entry: Entry) -> None:
        """Take the outcome the ledger holds; publish it unless Kafka already has it."""
        item.outcome = entry.outcome
        item.status = outcomes.status_of(entry.outcome)
        item.umid = entry.umid
        item.in_ledger = True
        item.publish = not entry.published

    def _now(self) -> str:
        return format_timestamp(self._wall())


def _message_for(decision: Decision) -> tuple[SmsMessage | None, str | None]:
    if not decision.phone:
        return None, "the allow decision has no phone number"
    text = decision.message.text if decision.message is not None else None
    if not text:
        return None, "the allow decision has no message text"
    source = decision.message.source if decision.message is not None else None
    return SmsMessage(
        destination=decision.phone,
        text=text,
        client_message_id=decision.request_id,
        client_ip=decision.client_ip,
        source=source,
        track_outcome=True,
    ), None


def _request_id_of(raw: bytes) -> str | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    request_id = obj.get("request_id") if isinstance(obj, dict) else None
    return request_id if isinstance(request_id, str) and request_id else None


def _claimed_at(claim: str) -> float:
    """When a claim token ``owner@epoch-ms.n`` was taken (epoch seconds); now if it cannot be read."""
    try:
        return int(claim.rsplit("@", 1)[1].split(".", 1)[0]) / 1000
    except (IndexError, ValueError):
        return time.time()


def _positions(items: Iterable[_Item]) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    commit: dict[tuple[str, int], int] = {}
    rewind: dict[tuple[str, int], int] = {}
    for item in sorted(items, key=lambda i: (i.record.topic, i.record.partition, i.record.offset)):
        tp = (item.record.topic, item.record.partition)
        if tp in rewind:
            continue
        if item.finished:
            commit[tp] = item.record.offset + 1
        else:
            rewind[tp] = item.record.offset
    return commit, rewind


def new_owner_id() -> str:
    host = socket.gethostname().replace("@", "_")[:40]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
