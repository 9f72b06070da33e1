"""The simulated client's side of a challenge: who answers, how, and after how long; and the closed loop
that feeds those answers back into a replay at their own event time.

When the engine decides `challenge` (enforced), the client behind the request answers as its labels say:
people pass at `legit_pass_rate` after a human delay, bots never pass, and a scenario may say otherwise
on its requests (`challenge_pass_rate`, `challenge_delay_s`: a CAPTCHA-solving service passes most, in
seconds). A challenge not passed is reported `failed` (a wrong answer) or abandoned: then nothing is sent
and it expires. Requests without a label (real traffic) get no simulated answer.

A delayed request (`delay`, enforced) is retried by the client's backend once `retry_after` has passed:
the retry is a new request (the original id with `~retry` and its number), counted by the engine like any
other, for people and bots alike; its decision is the request's fate. The file's feedback on the original
follows the retry, as late as the delay made the code; when the retry's code is verified, the backend also
reports `completed_other` for the delayed request(s) it stood for (their flow ended through the retry), so a
delay is not left counting as an unverified code against the number and its country. A bot never verifies,
so its delays stay unverified. A chain of more than `MAX_RETRIES` is abandoned.

Every draw comes from a generator seeded by (seed, request id), so the answers do not depend on batch
boundaries or on what else is in the file: the same file and seed give the same evaluation.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from detector.evaluation.sim.generate import lognormal, sub_rng
from detector.events import (
    ChallengeResult,
    Decision,
    OtpChallenge,
    OtpFeedback,
    OtpRequest,
    format_timestamp,
)
from detector.replay import Line

LEGIT_PASS_RATE = 0.9
LEGIT_DELAY_S = 15.0  # median seconds from the challenge to a person's answer
BOT_DELAY_S = 4.0  # a script that tries, and fails, answers at once
FAILED_SHARE = 0.5  # of the challenges not passed, the share answered wrong; the rest are abandoned
LATE_SHARE = 0.08  # answers in the long tail: switched apps, a hard puzzle, came back later
MAX_DELAY_S = 3600.0
# The closed loop's batches span at most this much event time, so an answer joins the stream at most
# this late (the engine's own lateness bound is minutes).
FOLLOW_SPAN_S = 30.0
MAX_RETRIES = 3  # delays in a row before the client gives up
RETRY_MARK = "~retry"


class Labelled(Protocol):
    """What the evaluation knows of a request from the file (`detector.evaluation.evaluate.RequestMeta`)."""

    @property
    def label(self) -> str | None: ...
    @property
    def pass_rate(self) -> float | None: ...
    @property
    def delay_s(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Answer:
    result: ChallengeResult
    delay: float  # seconds after the request


@dataclass(frozen=True, slots=True)
class ClientModel:
    legit_pass_rate: float = LEGIT_PASS_RATE
    legit_delay_s: float = LEGIT_DELAY_S
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.legit_pass_rate <= 1.0:
            raise ValueError(f"the legitimate pass rate must be between 0 and 1, not {self.legit_pass_rate}")
        if not 0.0 < self.legit_delay_s <= MAX_DELAY_S:
            raise ValueError(f"the legitimate delay must be between 0 and 1 h, not {self.legit_delay_s} s")

    def answer(self, request_id: str, meta: Labelled | None) -> Answer | None:
        """How the client of `request_id` answers its challenge; None: it never does (or is not simulated)."""
        if meta is None or meta.label not in ("legit", "attack"):
            return None
        legit = meta.label == "legit"
        rate = meta.pass_rate if meta.pass_rate is not None else (self.legit_pass_rate if legit else 0.0)
        median = meta.delay_s if meta.delay_s is not None else (self.legit_delay_s if legit else BOT_DELAY_S)
        rng = sub_rng(self.seed, "challenge", request_id)
        if rng.random() < min(max(rate, 0.0), 1.0):
            result: ChallengeResult = "passed"
        elif rng.random() < FAILED_SHARE:
            result = "failed"
        else:
            return None
        late = rng.random() < LATE_SHARE
        delay = lognormal(rng, median * 6.0, 0.8) if late else lognormal(rng, median, 0.5)
        return Answer(result, min(max(delay, 1.0), MAX_DELAY_S))


@dataclass
class ClosedLoop:
    """Answers each enforced challenge of a replay, merged into the stream at the answer's event time.

    `lines(source)` is what the replay reads; `on_decision` must see every decision, so it can schedule
    the answer. An answer scheduled after its time has been read joins with the next batch (the slop of
    one batch, bounded by `FOLLOW_SPAN_S`); answers still pending when the file ends come from `drain()`.

    The file's feedback on a simulated request waits for its decision: a request that was not challenged
    gets it as written (at most a batch late); a challenge that ended in an SMS gets it as late as the
    challenge made the code; one that did not (failed, expired, never answered) gets none, since nobody
    can enter a code that was never sent.
    """

    meta: Mapping[str, Labelled]
    client: ClientModel = field(default_factory=ClientModel)
    scheduled: int = 0
    feedback_delayed: int = 0
    feedback_dropped: int = 0
    _pending: list[tuple[float, int, Line]] = field(default_factory=list)
    _answered: set[str] = field(default_factory=set)
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _undecided: set[str] = field(default_factory=set)  # simulated requests read, not yet decided
    _open: dict[str, float] = field(default_factory=dict)  # challenged: request_id -> request time
    _held: dict[str, list[Line]] = field(default_factory=dict)  # their feedback, until decided / ended
    _shift: dict[str, float] = field(default_factory=dict)  # sent after a challenge: seconds later
    _unsent: set[str] = field(default_factory=set)  # challenges that ended without an SMS
    retries: int = 0
    delays_completed: int = 0  # completed_other reported for delayed requests whose retry was verified
    retry_of: dict[str, str] = field(default_factory=dict)  # a retry's id -> the delayed request's id
    _retried: dict[str, tuple[str, float]] = field(default_factory=dict)  # delayed id -> (retry id, shift)

    def on_decision(self, line: Line, decision: Decision) -> None:
        request_id = decision.request_id
        if decision.supersedes is not None:
            self._end(request_id, line.ts, decision.action == "allow")
            return
        self._undecided.discard(request_id)
        if self._answerable(line, decision) and request_id not in self._answered:  # once, not per redelivery
            self._answered.add(request_id)
            self._open[request_id] = line.ts
            self._schedule(line, decision)
        elif self._retryable(line, decision) and request_id not in self._retried:
            self._retry(line, decision)
        self._settle(request_id)

    def origin(self, request_id: str) -> str:
        """The request a retry stands for (itself, when it is not a retry)."""
        return self._chain(request_id)[0]

    def _chain(self, request_id: str) -> tuple[str, int]:
        """The request a retry stands for, and how many retries lead from it to `request_id`."""
        tries = 0
        while request_id in self.retry_of:
            request_id, tries = self.retry_of[request_id], tries + 1
        return request_id, tries

    def retried(self, request_id: str) -> bool:
        """Whether a delayed request was retried (its fate is its retry's)."""
        return request_id in self._retried

    def _retryable(self, line: Line, decision: Decision) -> bool:
        return (
            decision.mode == "enforce"
            and decision.action == "delay"
            and decision.retry_after is not None
            and isinstance(line.event, OtpRequest)
            and self._simulated(decision.request_id)
        )

    def _retry(self, line: Line, decision: Decision) -> None:
        """The client's backend asks again once retry_after has passed: a new request, at that time."""
        assert isinstance(line.event, OtpRequest) and decision.retry_after is not None
        origin, tries = self._chain(decision.request_id)
        if tries >= MAX_RETRIES:
            self._unsent.add(decision.request_id)  # given up: nothing was ever sent
            return
        retry_id = f"{origin}{RETRY_MARK}{tries + 1}"
        ts = math.ceil((line.ts + decision.retry_after) * 1000) / 1000  # never before the wait is over
        self.retry_of[retry_id] = decision.request_id
        self._retried[decision.request_id] = (retry_id, ts - line.ts)
        event = msgspec.structs.replace(line.event, request_id=retry_id, ts=format_timestamp(ts))
        self._undecided.add(retry_id)
        self._push(Line(0, event, ts))
        self.retries += 1

    def _schedule(self, line: Line, decision: Decision) -> None:
        answer = self.client.answer(decision.request_id, self.meta.get(self.origin(decision.request_id)))
        if answer is None or decision.challenge_id is None:
            return
        ts = _millis(line.ts + answer.delay)
        event = OtpChallenge(
            request_id=decision.request_id,
            challenge_id=decision.challenge_id,
            ts=format_timestamp(ts),
            result=answer.result,
        )
        self._push(Line(0, event, ts))
        self.scheduled += 1

    def _settle(self, request_id: str) -> None:
        """Feedback held while its request was undecided: on as written, later, dropped, or held on."""
        for line in self._held.pop(request_id, []):
            if self._follow_feedback(line, request_id):
                self._push(line)  # as written, a batch late at most

    def lines(self, source: Iterable[Line]) -> Iterator[Line]:
        pending = self._pending
        for line in source:
            while pending and pending[0][0] <= line.ts:
                yield heapq.heappop(pending)[2]
            event = line.event
            if isinstance(event, OtpFeedback):
                if not self._follow_feedback(line, event.request_id):
                    continue
            elif isinstance(event, OtpRequest) and self._simulated(event.request_id):
                self._undecided.add(event.request_id)
            yield line

    def drain(self) -> Iterator[Line]:
        """What is still pending once the file is read (answers, delayed feedback), in time order."""
        while self._pending:
            yield heapq.heappop(self._pending)[2]

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    @property
    def dropped(self) -> int:
        """Feedback never passed on: its challenge ended without an SMS, or never ended."""
        return self.feedback_dropped + sum(len(held) for held in self._held.values())

    def _answerable(self, line: Line, decision: Decision) -> bool:
        return (
            decision.mode == "enforce"
            and decision.action == "challenge"
            and bool(decision.challenge_id)  # nothing to answer with otherwise
            and isinstance(line.event, OtpRequest)
            and self._simulated(decision.request_id)
        )

    def _simulated(self, request_id: str) -> bool:
        meta = self.meta.get(self.origin(request_id))
        return meta is not None and meta.label in ("legit", "attack")

    def _end(self, request_id: str, ts: float, sent: bool) -> None:
        started = self._open.pop(request_id, None)
        if started is None:
            return
        if sent:
            self._shift[request_id] = ts - started
        else:
            self._unsent.add(request_id)
        self._settle(request_id)

    def _follow_feedback(self, line: Line, request_id: str) -> bool:
        """Whether to pass feedback on now; otherwise it is held, moved later, or dropped."""
        if request_id in self._retried:  # a delayed request: its feedback is its retry's, that much later
            retry_id, shift = self._retried[request_id]
            moved = self._moved(line, retry_id, shift)
            if self._follow_feedback(moved, retry_id):
                self._push(moved)
        elif request_id in self._undecided or request_id in self._open:
            self._held.setdefault(request_id, []).append(line)
        elif request_id in self._shift:
            self._push(self._shifted(line, request_id))
        elif request_id in self._unsent:
            self.feedback_dropped += 1
        else:
            return True
        return False

    def _shifted(self, line: Line, request_id: str) -> Line:
        self.feedback_delayed += 1
        ts = _millis(line.ts + self._shift[request_id])
        event = line.event
        assert isinstance(event, OtpFeedback)
        return Line(line.number, msgspec.structs.replace(event, ts=format_timestamp(ts)), ts)

    def _moved(self, line: Line, request_id: str, shift: float) -> Line:
        event = line.event
        assert isinstance(event, OtpFeedback)
        ts = _millis(line.ts + shift)
        moved = msgspec.structs.replace(event, request_id=request_id, ts=format_timestamp(ts))
        return Line(line.number, moved, ts)

    def _push(self, line: Line) -> None:
        heapq.heappush(self._pending, (line.ts, next(self._seq), line))
        event = line.event
        if isinstance(event, OtpFeedback) and event.outcome == "verified":
            delayed = self.retry_of.get(event.request_id)
            while delayed is not None:  # the delayed requests this retry stood for: completed through it
                done = OtpFeedback(request_id=delayed, ts=event.ts, outcome="completed_other")
                heapq.heappush(self._pending, (line.ts, next(self._seq), Line(0, done, line.ts)))
                self.delays_completed += 1
                delayed = self.retry_of.get(delayed)


def _millis(ts: float) -> float:
    """Event time to the millisecond, as written (so the answer's line and its event agree)."""
    return math.floor(ts * 1000) / 1000
