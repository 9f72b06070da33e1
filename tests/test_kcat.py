"""A non-Python client at both ends: requests published with kcat (librdkafka), decisions read with kcat."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from detector.kafka.topics import ensure_topics, partition_key
from tests.test_stream import (
    PARTITIONS,
    QUIET_POLICY,
    WorkerProcess,
    eventually,
    request_event,
    unique_topics,
    worker_env,
)

pytestmark = [pytest.mark.kafka]

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat_produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    """`KEY:VALUE` lines through `kcat -P -K:`, partitioned like the Java client (murmur2)."""
    assert KCAT is not None
    subprocess.run(
        [KCAT, "-P", "-b", bootstrap, "-t", topic, "-K:", "-X", "topic.partitioner=murmur2_random"],
        input=b"\n".join(lines) + b"\n",
        check=True,
        timeout=30,
        capture_output=True,
    )


def kcat_read(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every message of `topic` so far: `kcat -C -e -o beginning -J` (one JSON envelope per line)."""
    assert KCAT is not None
    done = subprocess.run(
        [KCAT, "-C", "-b", bootstrap, "-t", topic, "-e", "-o", "beginning", "-J", "-q"],
        check=True,
        timeout=30,
        capture_output=True,
    )
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed (make system-deps)")
async def test_requests_from_kcat_get_decisions_kcat_can_read(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = unique_topics("kcat")
    await ensure_topics(kafka_bootstrap, topics.all(), PARTITIONS, 1)
    policy = tmp_path / "quiet.yaml"
    policy.write_text(QUIET_POLICY)
    env = worker_env(
        kafka_bootstrap, "memory://", topics, f"kcat-{uuid.uuid4().hex[:8]}", DETECTOR_POLICY=str(policy)
    )
    worker = WorkerProcess("worker", tmp_path, env)
    try:
        phone = "+447400555301"
        key = partition_key(phone, b"backend secret")
        events = [request_event(f"kcat-{i}", phone) for i in range(11)]
        invalid = {"type": "otp_request", "request_id": "kcat-invalid", "ts": time.time(), "phone": phone}
        lines = [key + b":" + orjson.dumps(e) for e in [*events, invalid]]
        lines.append(b"garbage:this is not an event")
        kcat_produce(kafka_bootstrap, topics.requests, lines)

        ids = {e["request_id"] for e in events} | {"kcat-invalid"}
        decisions: dict[str, dict[str, Any]] = {}

        def all_decided() -> bool:
            decisions.clear()
            for envelope in kcat_read(kafka_bootstrap, topics.decisions):
                decision = orjson.loads(envelope["payload"])
                assert envelope["key"] == decision["request_id"]
                decisions[decision["request_id"]] = decision
            return ids <= set(decisions)

        await eventually(
            all_decided, 60, "decisions readable with kcat", alive=worker.assert_running, interval=0.3
        )
        dead = [orjson.loads(e["payload"]) for e in kcat_read(kafka_bootstrap, topics.dead_letters)]
        published = kcat_read(kafka_bootstrap, topics.requests)
    finally:
        worker.close()

    assert [decisions[f"kcat-{i}"]["action"] for i in range(11)] == ["allow"] * 10 + ["block"]
    assert decisions["kcat-10"]["reasons"][0]["code"] == "msisdn_rate_limit"
    assert decisions["kcat-invalid"]["action"] == "block"
    assert decisions["kcat-invalid"]["reasons"][0]["code"] == "invalid_request"  # no client address
    (letter,) = dead
    assert letter["size"] == len(b"this is not an event") and "not JSON" in letter["error"]
    # kcat with murmur2 places a key where Java clients, Faust and aiokafka do.
    partitioner = DefaultPartitioner()
    for envelope in published:
        if envelope["key"] == key.decode():
            expected = partitioner(key, list(range(PARTITIONS)), list(range(PARTITIONS)))
            assert envelope["partition"] == expected
