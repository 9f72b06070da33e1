"""The acknowledged output of both workers: an idempotent aiokafka producer behind a one-method protocol.

Each worker hands every message of a batch to `Output.send`, keeps the awaitables it returns, and awaits
them together with `acknowledged` before it commits the batch's input: if Kafka does not take an output,
`DeliveryFailed` is raised and the batch must not be committed. Tests pass a fake `Output`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import Any, Protocol

from detector.errors import UnavailableError

Headers = list[tuple[str, bytes]]


class DeliveryFailed(UnavailableError):
    """Kafka did not acknowledge an output of a batch: the batch must not be committed."""


class Output(Protocol):
    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> Awaitable[Any]:
        """Hand one message to the producer; the awaitable returned completes when Kafka acknowledged it."""
        ...


async def acknowledged(acks: Iterable[Awaitable[Any]], what: str) -> None:
    """Wait for every acknowledgement; `DeliveryFailed` naming `what` if any of them failed."""
    try:
        await asyncio.gather(*acks)
    except Exception as exc:
        raise DeliveryFailed(f"publishing {what} failed: {exc!r}") from exc


class KafkaOutput:
    """An aiokafka producer (acks=all, idempotent: a retried produce request adds no duplicate), started on
    first use or by ``async with``, stopped by ``stop()`` or leaving the block."""

    def __init__(self, bootstrap: list[str], client_id: str, request_timeout: float = 120.0) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout = request_timeout
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> KafkaOutput:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> Awaitable[Any]:
        producer = self._producer or await self.start()
        future: Awaitable[Any] = await producer.send(topic, value, key=key, headers=headers)
        return future

    async def start(self) -> Any:
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=2,
                    max_batch_size=512 * 1024,
                    request_timeout_ms=int(self.request_timeout * 1000),
                )
                await producer.start()
                self._producer = producer
        return self._producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
