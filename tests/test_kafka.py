"""The Kafka plumbing both workers share: broker lists and the metrics/health endpoint (a real HTTP
server on loopback)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from detector.kafka.brokers import bootstrap_servers, broker_urls
from detector.kafka.health import HealthServer
from detector.testing.services import free_port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_broker_lists_in_either_form() -> None:
    assert bootstrap_servers("a:9092; kafka://b:9093,") == ["a:9092", "b:9093"]
    assert broker_urls("a:9092,kafka://b:9093") == ["kafka://a:9092", "kafka://b:9093"]
    with pytest.raises(ValueError, match="no Kafka brokers"):
        bootstrap_servers(" , ")


def test_metrics_health_and_readiness_each_on_their_path() -> None:
    registry = CollectorRegistry()
    Counter("detector_things", "Things", registry=registry).inc(3)
    checks = {"store reachable": True, "kafka consumer started": False}
    port = free_port()
    with HealthServer(registry, port, "127.0.0.1", ready=lambda: checks):
        status, body = get(port, "/metrics")
        assert status == 200 and "detector_things_total 3.0" in body
        assert get(port, "/healthz") == (200, "ok\n")
        status, body = get(port, "/readyz")
        assert status == 503 and "kafka consumer started: not ready" in body and "store reachable: ok" in body
        checks["kafka consumer started"] = True
        assert get(port, "/readyz")[0] == 200
        assert get(port, "/")[0] == 404
        assert get(port, "/metrics/extra")[0] == 404


def test_a_readiness_check_that_raises_means_not_ready() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("bug")

    port = free_port()
    with HealthServer(CollectorRegistry(), port, "127.0.0.1", ready=broken):
        status, body = get(port, "/readyz")
    assert status == 503 and "RuntimeError" in body


@pytest.mark.kafka
async def test_send_many_puts_each_key_where_send_would_in_order_and_acknowledged(
    kafka_bootstrap: str, kafka_topic_factory: Any
) -> None:
    """Decisions go out in produce batches per partition: on a real broker, every key lands on the
    partition a plain `send` picks, in the order given, and the acknowledgements cover them all."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from detector.kafka.output import KafkaOutput, acknowledged

    batched, single = await kafka_topic_factory(partitions=5), await kafka_topic_factory(partitions=5)
    messages = [(f"request-{i}".encode(), f"decision-{i}".encode()) for i in range(300)]
    messages.append((None, b"no key"))
    async with KafkaOutput([kafka_bootstrap], "test-send-many") as output:
        await acknowledged(await output.send_many(batched, messages), "a batch")
        await acknowledged([await output.send(single, key, value) for key, value in messages], "one by one")
        assert await output.send_many(batched, []) == []

    async def read(topic: str) -> dict[int, list[tuple[bytes | None, bytes]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(5)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            found: dict[int, list[tuple[bytes | None, bytes]]] = {}
            while sum(map(len, found.values())) < len(messages):
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    found.setdefault(tp.partition, []).extend((r.key, r.value) for r in records)
            return found
        finally:
            await consumer.stop()

    got, expected = await read(batched), await read(single)
    keyed = {p: [m for m in ms if m[0] is not None] for p, ms in got.items()}
    assert keyed == {p: [m for m in ms if m[0] is not None] for p, ms in expected.items()}
    assert sorted(m for ms in got.values() for m in ms if m[0] is not None) == sorted(messages[:-1])
    assert [m for ms in got.values() for m in ms if m[0] is None] == [(None, b"no key")]


def test_the_partition_hash_is_aiokafkas_murmur2() -> None:
    """`send_many` places keys by its own murmur2; it must agree with the clients' on every length."""
    import random

    from aiokafka.partitioner import murmur2

    from detector.kafka.output import kafka_hash

    rng = random.Random(14)
    keys = [rng.randbytes(rng.randrange(0, 64)) for _ in range(3000)] + [b"", b"\xff" * 7]
    assert [kafka_hash(key) for key in keys] == [murmur2(key) & 0x7FFFFFFF for key in keys]
