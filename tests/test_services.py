"""The real Kafka broker and redis-server the integration tests run against."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from detector.cli import main as detector_cli
from detector.cli.options import environment_variables
from detector.testing.services import REPO_ROOT, RedisServer, kafka_broker_count, local_env, redis_ping

MESSAGES = 100
DEADLINE_S = 30.0


@pytest.mark.kafka
async def test_keyed_messages_round_trip_through_four_partitions(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent: dict[bytes, tuple[bytes | None, int]] = {}  # value -> (key, partition it went to)
        for i in range(MESSAGES):
            key = f"+4479000{i % 10:05d}".encode()  # 10 phone numbers, 10 messages each
            value = f"otp-{i}".encode()
            meta = await producer.send_and_wait(kafka_topic, key=key, value=value)
            sent[value] = (key, meta.partition)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        kafka_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{kafka_topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[bytes, tuple[bytes | None, int]] = {}
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(received) < MESSAGES and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    assert record.value is not None
                    received[record.value] = (record.key, record.partition)
        await consumer.commit()
        assert consumer.assignment() == {TopicPartition(kafka_topic, p) for p in range(4)}
    finally:
        await consumer.stop()

    assert len(received) == MESSAGES, f"got {len(received)} of {MESSAGES} messages"
    assert received == sent  # every message, with its key, from the partition it was written to
    partitions_by_key: dict[bytes | None, set[int]] = {}
    for record_key, partition in received.values():
        partitions_by_key.setdefault(record_key, set()).add(partition)
    assert all(len(parts) == 1 for parts in partitions_by_key.values()), "one key, one partition"
    assert len({partition for _, partition in sent.values()}) > 1, "10 keys should use several partitions"


@pytest.mark.kafka
async def test_topics_are_auto_created_with_four_partitions(kafka_bootstrap: str, kafka_topic: str) -> None:
    name = f"{kafka_topic}-auto"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(name, b"first")
        partitions = await producer.partitions_for(name)
    finally:
        await producer.stop()
    assert partitions == {0, 1, 2, 3}


@pytest.mark.kafka
def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    assert kafka_broker_count(kafka_bootstrap) == 1


@pytest.mark.redis
def test_redis_ping_and_incr(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
        key = f"test:incr:{os.getpid()}:{time.monotonic_ns()}"
        assert client.incr(key) == 1
        assert client.incr(key, 41) == 42
        client.delete(key)
    finally:
        client.close()


@pytest.mark.redis
def test_redis_goes_down_and_comes_back_on_the_same_port(redis_server: RedisServer) -> None:
    port, url = redis_server.port, redis_server.url
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.set("counter", 7)

        redis_server.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        with pytest.raises(redis.ConnectionError):
            client.ping()

        redis_server.start()
        assert redis_server.port == port and redis_server.url == url
        assert client.ping() is True  # the same client reconnects
        assert client.get("counter") is None  # nothing is persisted across the outage
        assert client.incr("counter") == 1
    finally:
        client.close()


@pytest.mark.kafka
@pytest.mark.redis
def test_services_cli_up_env_down(tmp_path: Path) -> None:
    env = {**os.environ, "DETECTOR_SERVICES_DIR": str(tmp_path / "services")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "detector.testing.services", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    up = cli("up")
    try:
        assert up.returncode == 0, up.stderr
        addresses = dict(
            line.split("=", 1) for line in up.stdout.splitlines() if line and not line.startswith("#")
        )
        assert set(addresses) == set(local_env("h:1", "redis://h:2/0"))
        env_file = Path(env["DETECTOR_SERVICES_DIR"]) / "services.env"
        assert f"written to {env_file}" in up.stdout
        assert dict(line.split("=", 1) for line in env_file.read_text().splitlines()) == addresses
        kafka, redis_port = (
            addresses["KAFKA_BOOTSTRAP"],
            int(addresses["REDIS_URL"].split(":")[-1].split("/")[0]),
        )
        # `up` has exited; the detached servers keep running.
        assert kafka_broker_count(kafka) == 1
        assert redis_ping(redis_port)

        again = cli("up")
        assert again.returncode == 0 and "already running" in again.stdout
        exports = cli("env")
        assert exports.stdout.splitlines() == [f"export {k}={v}" for k, v in addresses.items()]
        # With those variables and nothing else, the CLI finds the store and the hash key it needs.
        events = tmp_path / "events.jsonl"
        request = {"type": "otp_request", "request_id": "r1", "ts": 1793577600, "phone": "+447400123456"}
        events.write_text(json.dumps(request) + "\n")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
        replay = subprocess.run(
            [sys.executable, "-m", "detector", "replay", str(events)],
            env={**clean, **addresses},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert replay.returncode == 0, replay.stderr
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not redis_ping(redis_port)
    with pytest.raises(OSError):
        kafka_broker_count(kafka)
    assert cli("env").returncode == 1


def test_make_services_writes_only_variables_the_cli_reads() -> None:
    written = local_env("127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    tests_own = {"KAFKA_BOOTSTRAP", "REDIS_URL"}
    assert set(written) - tests_own <= environment_variables(detector_cli)
    assert {"DETECTOR_KAFKA_BROKERS", "DETECTOR_STORE", "DETECTOR_SEND_LEDGER", "DETECTOR_HASH_KEY"} <= set(
        written
    )
    assert written["DETECTOR_SEND_LEDGER"] == "redis://127.0.0.1:6379/1"
    again = local_env("127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    assert (
        len(written["DETECTOR_HASH_KEY"]) >= 32 and written["DETECTOR_HASH_KEY"] != again["DETECTOR_HASH_KEY"]
    )
