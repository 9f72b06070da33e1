"""Degraded, not open: a shared store with an in-process store to fall back on while it does not answer.

Failing open during a Redis outage hands an attacker every request of the outage (measured before this
existed: a 9-second outage turned 45 allowed attack requests into 816). Failing closed blocks every real user
instead. In between: while the shared store does not answer, this process keeps counting in a `MemoryStore`
of its own, so every limit still holds per process (a fleet of N workers lets through at most N times what
one would), and every answer says it was `degraded`. The shared store is tried again after a short backoff,
and used again as soon as it answers; what was counted locally stays local.

Feedback is never applied to the local store while degraded: it is answered as unavailable (None), so the
caller retries it until the shared store, which knows its request, is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from detector.state.base import (
    Answer,
    AnswersReady,
    Counts,
    Observation,
    Offence,
    Quarantine,
    Remembered,
    Store,
    StoreLifecycle,
    StoreUnavailable,
    Update,
)
from detector.state.memory import MemoryStore

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 2.0


class DegradingStore(StoreLifecycle):
    def __init__(
        self,
        shared: Store,
        local: MemoryStore | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.plan = shared.plan
        self.local = local or MemoryStore(shared.plan)
        self._clock = clock
        self._backoff = 0.0
        self._retry_at = 0.0
        self._local_ids: set[str] = set()

    @property
    def bounds_its_calls(self) -> bool:  # type: ignore[override]
        """As bounded as the shared store: the local one never waits."""
        return getattr(self.shared, "bounds_its_calls", False) is True

    @property
    def degraded(self) -> bool:
        return self._backoff > 0

    async def apply(
        self, batch: Sequence[Update], on_answers: AnswersReady | None = None
    ) -> list[Answer | None]:
        """The shared store's answers; once it fails, local ones for the rest of the batch (what it had
        handed over before failing stands: those items are counted there)."""
        answered: list[Answer | None] = []
        if self._clock() >= self._retry_at:

            def handed_over(answers: Sequence[Answer]) -> None:
                answered.extend(answers)
                if on_answers is not None:
                    on_answers(answers)

            try:
                answers = list(await self.shared.apply(batch, handed_over))
            except (StoreUnavailable, TimeoutError) as exc:
                self._failed(exc)
            else:
                if self._backoff:
                    log.warning("the shared store answers again: leaving degraded mode")
                    self._backoff = 0.0
                return answers
        rest = batch[len(answered) :]
        local = await self.local.apply([item for item in rest if isinstance(item, Observation)])
        position = 0
        for item in rest:
            if isinstance(item, Observation):
                counts = local[position]
                position += 1
                assert isinstance(counts, Counts)
                counts.degraded = True
                self._local_ids.add(item.request_id)
                answered.append(counts)
            else:
                answered.append(None)
        return answered

    async def remember(self, decisions: Sequence[Remembered], offences: Sequence[Offence] = ()) -> None:
        local = [entry for entry in decisions if entry.request_id in self._local_ids]
        shared = [entry for entry in decisions if entry.request_id not in self._local_ids]
        self._local_ids.clear()
        if local:  # decided on local counts: so are their offences
            await self.local.remember(local, offences)
        if shared or (offences and not local):
            await self.shared.remember(shared, () if local else offences)

    async def quarantines(self, now: float) -> list[Quarantine]:
        return await self.shared.quarantines(now)

    async def lift(self, dimension: str, key: str) -> bool:
        lifted = await self.local.lift(dimension, key)
        return await self.shared.lift(dimension, key) or lifted

    async def ping(self) -> None:
        await self.shared.ping()

    async def close(self) -> None:
        await self.shared.close()

    def _failed(self, exc: BaseException) -> None:
        if not self._backoff:
            log.warning("the shared store does not answer (%s): counting in this process meanwhile", exc)
        self._backoff = min(max(self._backoff * 2, FIRST_BACKOFF), MAX_BACKOFF)
        self._retry_at = self._clock() + self._backoff
