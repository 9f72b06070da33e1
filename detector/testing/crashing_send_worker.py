"""`detector send-worker` that dies at a named point of its first round with sends: the crash tests' entry.

Run as ``python -m detector.testing.crashing_send_worker`` with the send worker's usual environment and
``DETECTOR_SEND_CRASH_AT`` set to one of `CRASH_POINTS`. The production code holds no crash points: this
module wraps the ledger and the 8x8 client the worker opens, and ends the process (os._exit, status
`CRASH_EXIT_STATUS`, nothing committed or closed) right after

* ``after-claim``: a ledger claim that won at least one request (before its HTTP call);
* ``after-send``: an 8x8 send call returned (before its outcome is recorded);
* ``after-ledger``: outcomes were recorded in the ledger (before they are published);
* ``after-outcomes``: outcomes were published (before they are marked published).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any, Literal, cast

from detector.kafka.exit import exit_without_commit
from detector.send.config import SendConfig
from detector.send.eightbyeight import EightByEightClient, EightByEightConfig, SendResult, SmsMessage
from detector.send.ledger import Entry, SendLedger

CrashPoint = Literal["after-claim", "after-send", "after-ledger", "after-outcomes"]
CRASH_POINTS: tuple[CrashPoint, ...] = ("after-claim", "after-send", "after-ledger", "after-outcomes")
CRASH_ENV = "DETECTOR_SEND_CRASH_AT"
CRASH_EXIT_STATUS = 86


def crash(point: str) -> None:
    exit_without_commit(f"{CRASH_ENV}={point}: exiting now, as asked", CRASH_EXIT_STATUS)


class _Ledger:
    def __init__(self, inner: SendLedger, point: str) -> None:
        self._inner = inner
        self._point = point

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def claim(self, request_ids: Sequence[str], token: str) -> list[Entry | None]:
        entries = await self._inner.claim(request_ids, token)
        if self._point == "after-claim" and any(entry is None for entry in entries):
            crash(self._point)
        return entries

    async def record(self, writes: Sequence[tuple[str, str, bytes, str | None]]) -> list[Entry | None]:
        won = await self._inner.record(writes)
        if self._point == "after-ledger":
            crash(self._point)
        return won

    async def mark_published(self, request_ids: Sequence[str]) -> None:
        if self._point == "after-outcomes":
            crash(self._point)
        await self._inner.mark_published(request_ids)


class _Client:
    def __init__(self, inner: EightByEightClient, point: str) -> None:
        self._inner = inner
        self._point = point

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send(self, message: SmsMessage) -> SendResult:
        result = await self._inner.send(message)
        if self._point == "after-send":
            crash(self._point)
        return result

    async def send_batch(self, messages: Sequence[SmsMessage], **options: Any) -> list[SendResult]:
        results = await self._inner.send_batch(messages, **options)
        if self._point == "after-send":
            crash(self._point)
        return results


def main() -> None:
    from detector import logs
    from detector.cli.send_worker import send_worker
    from detector.send import worker

    point = os.environ.get(CRASH_ENV, "")
    if point not in CRASH_POINTS:
        raise SystemExit(f"set {CRASH_ENV} to one of {', '.join(CRASH_POINTS)}")

    def ledger(config: SendConfig) -> SendLedger:
        return cast(SendLedger, _Ledger(worker.open_ledger(config), point))

    def client(vendor: EightByEightConfig) -> EightByEightClient:
        return cast(EightByEightClient, _Client(worker.open_client(vendor), point))

    worker.run_send_worker = functools.partial(worker.run_send_worker, open_ledger=ledger, open_client=client)
    logs.configure(
        os.environ.get("DETECTOR_LOG_LEVEL", "INFO"), os.environ.get("DETECTOR_LOG_FORMAT", "text")
    )
    send_worker()


if __name__ == "__main__":
    main()
