"""The store protocol: what the engine asks of shared state, one call per batch.

A batch is a sequence of `Observation` (a request), `FeedbackUpdate` (a verification outcome) and
`ChallengeUpdate` (a challenge's result), in event-time order. The store applies them in that order and
answers each: a request gets its `Counts` (every window of every dimension, including this request), a
feedback gets a status string, a challenge result a `ChallengeAnswer`. The store also remembers each request
(its entity keys and time, for feedback; its decision, for redelivery; an open challenge, until it expires).

Entity keys arrive already hashed with the operator's secret: a store never sees a phone number or an IP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, Self

import msgspec

from detector.errors import UnavailableError
from detector.windows import Window

FeedbackStatus = Literal["applied", "duplicate", "failed", "unknown"]
# A challenge's result: taken (the first result in time), already resolved, past its expiry, for a request
# that has no open challenge, or for a request recorded with another fingerprint.
ChallengeState = Literal["applied", "duplicate", "expired", "unknown", "mismatch"]
LIMIT_DIMENSION = "msisdn"  # the per-number send limit and the time of the previous request live here
DISTINCT_DIMENSION = "ip"  # distinct phone countries are counted per client IP


class StoreUnavailable(UnavailableError):
    """The store did not answer (down, slow past its timeout, or refused the call)."""


@dataclass(frozen=True, slots=True)
class CounterPlan:
    """What to count, derived once from the policy."""

    windows: Mapping[str, tuple[Window, ...]]
    peaks: frozenset[tuple[str, int]]
    limit_window: Window
    limit: int
    distinct_window: int
    record_ttl: int
    # Windows of challenges passed, per dimension: read by every request, added to by every pass.
    pass_windows: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)
    # Quarantines: the dimensions that can be quarantined, the TTL of each successive offence (seconds), and
    # how long after the last offence the count of offences starts again.
    quarantine_dimensions: frozenset[str] = frozenset()
    quarantine_ttls: tuple[int, ...] = (900,)
    quarantine_forget: int = 86400

    def quarantine_ttl(self, offences: int) -> int:
        """The TTL of the `offences`-th offence (1-based): the ladder's last step repeats."""
        return self.quarantine_ttls[min(offences, len(self.quarantine_ttls)) - 1]

    def next_quarantine(self, last: tuple[float, int] | None, ts: float) -> tuple[float, int] | None:
        """(until, offences) after an offence at `ts`, given the entity's last quarantine; None while that
        one is still in force. Offences within `quarantine_forget` of the last one's end climb the ladder.
        Every store applies exactly this (the Lua script too), and the engine, for the rest of its batch."""
        if last is not None and last[0] > ts:
            return None
        offences = last[1] + 1 if last is not None and ts - last[0] < self.quarantine_forget else 1
        return ts + self.quarantine_ttl(offences), offences

    @property
    def record_dimensions(self) -> tuple[str, ...]:
        """The dimensions a request record keeps its entity keys for (feedback and passes credit them)."""
        return tuple(sorted({*self.windows, *self.pass_windows}))

    def window_count(self) -> int:
        return sum(len(windows) for windows in self.windows.values())

    def slots(self) -> dict[tuple[str, int], int]:
        """Each counted window's place in `Counts.windows` and `Counts.peaks`: (dimension, seconds) -> index,
        every window of every dimension in the plan's order. Stores and rules resolve their windows once."""
        return _places(self.windows)

    def pass_slots(self) -> dict[tuple[str, int], int]:
        """Each window of challenges passed's place in `Counts.passes` (and `ChallengeAnswer.passes`)."""
        return _places(self.pass_windows)


def _places(windows: Mapping[str, tuple[Window, ...]]) -> dict[tuple[str, int], int]:
    labels = [(dim, window.seconds) for dim, dim_windows in windows.items() for window in dim_windows]
    return {label: index for index, label in enumerate(labels)}


# The updates and kept decisions are structs, built in C: one or two are made per event (a dataclass costs
# about five times as much to build).
class Observation(msgspec.Struct):
    request_id: str
    ts: float
    keys: dict[str, str]
    distinct_member: str | None = None
    take_slot: bool = True
    # A keyed digest of what the request is for (number, client, message): a request id seen again with the
    # same fingerprint is a redelivery; with another one, the id is being reused.
    fingerprint: str = ""


class FeedbackUpdate(msgspec.Struct):
    request_id: str
    ts: float
    resolved: bool


class ChallengeUpdate(msgspec.Struct):
    request_id: str
    ts: float
    passed: bool
    fingerprint: str = ""  # the request's, when the result repeats what it was for ("" matches any)


@dataclass(slots=True)
class ChallengeAnswer:
    status: ChallengeState
    # For an applied pass: challenges passed in each window of the request's entities (at its place,
    # `CounterPlan.pass_slots`), this one included.
    passes: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Offence:
    """An entity that pushed a request over the block line at `ts`: quarantine it (see `CounterPlan`).
    `label` says what it is to an operator without naming a number or an address (a masked prefix, a
    subnet, a masked client address)."""

    dimension: str
    key: str
    ts: float
    label: str


@dataclass(frozen=True, slots=True)
class Quarantine:
    dimension: str
    key: str
    label: str
    since: float
    until: float
    offences: int


class Remembered(msgspec.Struct, frozen=True):
    """A decision kept for redelivery; `challenge_expires` (event time) opens a challenge until then."""

    request_id: str
    ts: float
    decision: bytes
    challenge_expires: float | None = None


@dataclass(slots=True)
class Counts:
    """What a request sees: (requests, verified) in each counted window, this request included.

    `windows` has a place for every window of the plan (`CounterPlan.slots`): None where the request has no
    entity of that dimension. `peaks`: the busiest verified bucket of the windows the plan asks it of (0
    elsewhere). A redelivery (`duplicate`) is not counted again and sees nothing but the decision stored for
    it. `Counts.places` makes one with every place.
    """

    windows: list[tuple[int, int] | None] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    slot_taken: bool = True
    slot_count: int = 0
    previous_ts: float | None = None
    distinct: int = 0
    duplicate: bool = False
    stored_decision: bytes | None = None
    reused: bool = False  # the request id is known with another fingerprint: counted, no record, no slot
    degraded: bool = False  # answered by a local fallback while the shared store was unavailable
    passes: list[int] = field(default_factory=list)  # challenges passed, per window (CounterPlan.pass_slots)
    # Per quarantinable dimension with a history: (until, offences) of the entity's last quarantine, which
    # may have ended.
    quarantines: dict[str, tuple[float, int]] = field(default_factory=dict)

    @classmethod
    def places(cls, windows: int, passes: int) -> Counts:
        """Empty counts with a place for each of `windows` counted windows and `passes` windows of passes."""
        return cls([None] * windows, [0] * windows, passes=[0] * passes)


Update = Observation | FeedbackUpdate | ChallengeUpdate
Answer = Counts | FeedbackStatus | ChallengeAnswer
AnswersReady = Callable[[Sequence[Answer]], None]


class Store(Protocol):
    plan: CounterPlan

    async def apply(
        self, batch: Sequence[Update], on_answers: AnswersReady | None = None
    ) -> Sequence[Answer | None]:
        """One answer per item, in order; None for an item the store could not answer now.

        A store whose answers come in parts may hand each part to `on_answers` as it comes: the answers of
        the batch's first items, then of the next ones, in order, each once, so that the caller can use them
        while the rest are on their way. The list returned still holds every answer.
        """
        ...

    async def remember(self, decisions: Sequence[Remembered], offences: Sequence[Offence] = ()) -> None:
        """Keep each request's decision so a redelivery gets the same answer (and open its challenge), and
        quarantine the entities of `offences`."""
        ...

    async def quarantines(self, now: float) -> list[Quarantine]:
        """The quarantines in force at `now` (event time), for an operator to see."""
        ...

    async def lift(self, dimension: str, key: str) -> bool:
        """End the quarantine of one entity (and forget its offences); whether there was one."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return once the store answers; `StoreUnavailable` if it does not within its timeout."""
        ...


class StoreLifecycle:
    """`async with store:` closes it; every store mixes this in."""

    # A store whose every call ends within its own deadline (answering or raising `StoreUnavailable`) says
    # so: the engine then adds no deadline of its own, which costs a timer per call. Others get one.
    bounds_its_calls: bool = False

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
