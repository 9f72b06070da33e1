"""Replay a file of events through the engine in event-time order: the embedded, no-server way to run it.

The input is streamed: lines are read, parsed and decided as they come, so memory stays flat whatever the
file's size. Order comes from a bounded reorder buffer: events leave it in (event time, line) order once
`REORDER_EVENTS` newer ones have arrived, which sorts any file whose disorder spans fewer events than that
(logs merged from several servers, say). An event that arrives later still is decided when it leaves the
buffer, and counted at its time bounded by the stream's watermark (`detector.eventtime`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import signal
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from detector.engine import Engine
from detector.events import (
    BadEvent,
    Decision,
    Event,
    OtpChallenge,
    describe_bad_input,
    encode,
    parse_event,
    parse_timestamp,
)

REORDER_EVENTS = 10_000


class Line(msgspec.Struct, frozen=True):
    number: int
    event: Event | BadEvent
    ts: float


def read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield number, line


def parse_lines(lines: Iterable[tuple[int, bytes]], reorder: int = REORDER_EVENTS) -> Iterator[Line]:
    """Parsed events in event-time order, `reorder` events at a time; a bad line keeps its place (the time of
    the good line before it)."""
    # The buffer is a priority queue on (ts, line number): lines that arrive in order queue in `run` at O(1)
    # (most files are in order), the others in the heap `late`; the earliest of both heads leaves first.
    run: deque[tuple[float, int, Line]] = deque()
    late: list[tuple[float, int, Line]] = []

    def earliest() -> Line:
        return (heapq.heappop(late) if late and (not run or late[0] < run[0]) else run.popleft())[2]

    last_ts = 0.0
    for number, raw in lines:
        event = parse_event(raw)
        if not isinstance(event, BadEvent):
            last_ts = parse_timestamp(event.ts)
        entry = (last_ts, number, Line(number, event, last_ts))
        if not run or entry > run[-1]:  # line numbers differ: a Line is never compared
            run.append(entry)
        else:
            heapq.heappush(late, entry)
        if len(run) + len(late) > reorder:
            yield earliest()
    while run or late:
        yield earliest()


@dataclass
class Summary:
    events: int = 0
    requests: int = 0
    feedback: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    feedback_status: Counter[str] = field(default_factory=Counter)
    challenges: int = 0  # challenge results read; each gives a superseding decision or a status
    superseding: int = 0
    challenge_status: Counter[str] = field(default_factory=Counter)
    bad_input: int = 0
    invalid_requests: int = 0
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    def as_dict(self, policy_version: str, mode: str) -> dict[str, Any]:
        return {
            "policy_version": policy_version,
            "mode": mode,
            "events": self.events,
            "requests": self.requests,
            "feedback": self.feedback,
            "actions": dict(sorted(self.actions.items())),
            "verdicts": dict(sorted(self.verdicts.items())),
            "reasons": dict(self.reasons.most_common()),
            "feedback_status": dict(sorted(self.feedback_status.items())),
            "bad_input": self.bad_input,
            "invalid_requests": self.invalid_requests,
            "dead_letter_examples": self.dead_letters[:10],
            **(
                {
                    "challenges": self.challenges,
                    "superseding": self.superseding,
                    "challenge_status": dict(sorted(self.challenge_status.items())),
                }
                if self.challenges
                else {}
            ),
            **({"interrupted": True} if self.interrupted else {}),
        }


OnDecision = Callable[[Line, Decision], None]


async def replay(
    engine: Engine,
    lines: Iterable[Line],
    *,
    batch_size: int = 1000,
    max_span: float | None = None,
    decisions_out: IO[bytes] | None = None,
    dead_letters_out: IO[bytes] | None = None,
    on_decision: OnDecision | None = None,
    progress: bool = False,
    stop_on_sigterm: bool = False,
) -> Summary:
    """Feed `lines` to the engine in batches of at most `batch_size` lines and, with `max_span`, at most
    that many seconds of event time. With `stop_on_sigterm`, SIGTERM ends the run after the current
    batch: everything decided so far is written and the summary says `interrupted`."""
    summary = Summary()
    bar = _progress_bar(progress)
    stop = asyncio.Event()
    if stop_on_sigterm:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await _run_batches(
            engine,
            batches(lines, batch_size, max_span),
            summary,
            stop,
            decisions_out,
            dead_letters_out,
            on_decision,
            bar,
        )
    finally:
        if stop_on_sigterm:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        if bar is not None:
            bar.close()
    return summary


async def _run_batches(
    engine: Engine,
    chunks: Iterable[list[Line]],
    summary: Summary,
    stop: asyncio.Event,
    decisions_out: IO[bytes] | None,
    dead_letters_out: IO[bytes] | None,
    on_decision: OnDecision | None,
    bar: Any,
) -> None:
    def digest(raw: bytes) -> str:
        return engine._hash.digest("dead_letter", raw, 16)

    for chunk in chunks:
        # Turn the event loop once per batch so a SIGTERM handler runs: an in-process store never suspends.
        await asyncio.sleep(0)
        if stop.is_set():
            summary.interrupted = True
            return
        results = await engine.process([line.event for line in chunk])
        for line, result in zip(chunk, results, strict=True):
            summary.events += 1
            if isinstance(line.event, OtpChallenge):
                summary.challenges += 1
                if isinstance(result, Decision):
                    summary.superseding += 1
                    _write_decision(result, line, decisions_out, on_decision)
                elif isinstance(result, str):
                    summary.challenge_status[result] += 1
                continue
            if isinstance(result, Decision):
                summary.requests += 1
                summary.actions[result.action] += 1
                summary.verdicts[result.verdict] += 1
                for reason in result.reasons:
                    summary.reasons[reason.code] += 1
                if isinstance(line.event, BadEvent):
                    summary.bad_input += 1
                    summary.invalid_requests += 1
                _write_decision(result, line, decisions_out, on_decision)
            elif isinstance(result, BadEvent):
                summary.bad_input += 1
                letter = {"line": line.number, **describe_bad_input(result, result.raw, digest)}
                if len(summary.dead_letters) < 10:
                    summary.dead_letters.append(letter)
                if dead_letters_out is not None:
                    dead_letters_out.write(orjson.dumps(letter) + b"\n")
            else:
                summary.feedback += 1
                summary.feedback_status[result] += 1
        if bar is not None:
            bar.update(len(chunk))


def _write_decision(
    decision: Decision, line: Line, out: IO[bytes] | None, on_decision: OnDecision | None
) -> None:
    if out is not None:
        out.write(encode(decision) + b"\n")
    if on_decision is not None:
        on_decision(line, decision)


def batches(lines: Iterable[Line], size: int, max_span: float | None = None) -> Iterator[list[Line]]:
    """`lines` in lists of at most `size`, each spanning at most `max_span` seconds of event time.

    A list is made only when the one before it has been used: what the caller did with it (decided it,
    and perhaps scheduled more lines into `lines`) is seen by the next one.
    """
    stream = iter(lines)
    if max_span is None:
        while chunk := list(itertools.islice(stream, size)):
            yield chunk
        return
    held: Line | None = None
    while True:
        chunk = [held] if held is not None else []
        held = None
        for line in stream:
            if chunk and (len(chunk) >= size or line.ts - chunk[0].ts > max_span):
                held = line
                break
            chunk.append(line)
        if not chunk:
            return
        yield chunk


def _progress_bar(wanted: bool) -> Any:
    if not wanted or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit="ev", unit_scale=True, file=sys.stderr, leave=False)
