"""The acknowledged output of both workers: an idempotent aiokafka producer behind a small protocol.

Each worker hands every message of a batch to `Output.send` (or a batch's messages to one topic to
`Output.send_many`), keeps the awaitables returned, and awaits them together with `acknowledged` before it
commits the batch's input: if Kafka does not take an output, `DeliveryFailed` is raised and the batch must
not be committed. Tests pass a fake `Output`.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Awaitable, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol

from detector.errors import UnavailableError

Headers = list[tuple[str, bytes]]
Keyed = tuple[bytes | None, bytes]  # (key, value)


class DeliveryFailed(UnavailableError):
    """Kafka did not acknowledge an output of a batch: the batch must not be committed."""


class Output(Protocol):
    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> Awaitable[Any]:
        """Hand one message to the producer; the awaitable returned completes when Kafka acknowledged it."""
        ...

    async def send_many(self, topic: str, messages: Sequence[Keyed]) -> list[Awaitable[Any]]:
        """Hand messages without headers to the producer, in order; the awaitables returned complete when
        Kafka acknowledged all of them."""
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

    async def send_many(self, topic: str, messages: Sequence[Keyed]) -> list[Awaitable[Any]]:
        """One produce batch per partition (more if one fills up) instead of a future per message; each key
        goes to the partition `send` would choose (murmur2, as every client here partitions)."""
        if not messages:
            return []
        producer = self._producer or await self.start()
        every = sorted(await producer.partitions_for(topic))
        available = list(producer.client.cluster.available_partitions_for_topic(topic) or every)
        by_partition: dict[int, list[Keyed]] = {}
        for key, value in messages:
            partition = random.choice(available) if key is None else every[kafka_hash(key) % len(every)]
            by_partition.setdefault(partition, []).append((key, value))
        acks: list[Awaitable[Any]] = []
        for partition, keyed in by_partition.items():
            batch = producer.create_batch()
            for key, value in keyed:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start anew
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        return acks

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


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def kafka_hash(key: bytes) -> int:
    """The partition hash of Kafka's default partitioner (murmur2 of the key, sign bit cleared), as the
    Java client and aiokafka compute it, a word at a time rather than a byte at a time."""
    length = len(key)
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{length >> 2}I", key):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        rest = key[length - tail :]
        if tail == 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h = ((h ^ rest[0]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h & 0x7FFFFFFF
