"""End to end on the real broker: request → challenge → result → a superseding decision → at most one SMS.

`detector worker` and `detector send-worker` run as subprocesses with the Redis store and ledger, a real
broker and the contract-checked 8x8 double. A passed challenge ends in exactly one send; a failed or an
expired one in none.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from detector.hashing import KeyedHasher
from detector.kafka.topics import TopicNames, ensure_topics, partition_key
from detector.testing.eightbyeight_double import EightByEightDouble
from tests.test_send_worker import (
    API_KEY,
    FAST_ENV,
    PARTITIONS,
    SUB_ACCOUNT,
    OutcomeReader,
    WorkerProcess,
    sent_ids,
)
from tests.test_stream import TopicReader, decisions_by_id, eventually, worker_env
from tests.test_stream import WorkerProcess as DetectorProcess

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITION_SECRET = b"challenge-e2e-partitioning"
HASH_KEY = "challenge-e2e-hash-key-5e1b9c47"
NOW = time.time()
# Anonymizer (20) + IP country ≠ phone country (20) = 40: a challenge; every other scored rule off.
POLICY = """\
version: challenge-e2e-1
rules:
  retry_delay: {mode: "off"}
  velocity: {}
  unverified: {}
  conversion: {}
  passes: {}
  non_core_destination: {mode: "off"}
  distinct_countries_per_ip: {mode: "off"}
  number_type: {mode: "off"}
"""


@pytest.fixture
async def double() -> AsyncIterator[EightByEightDouble]:
    async with EightByEightDouble(api_key=API_KEY) as running:
        yield running
        assert running.violations == [], "requests that break 8x8's contract"


def request(request_id: str, n: int) -> dict[str, Any]:
    return {
        "type": "otp_request", "request_id": request_id, "ts": NOW + n, "phone": f"+4474002{n:05d}",
        "client_ip": f"203.0.113.{n + 1}", "ip_country": "NL", "signals": {"anonymizer": True},
        "message": {"text": f"Your code is {300000 + n}", "source": "Acme"},
    }  # fmt: skip


async def produce(bootstrap: str, topic: str, events: list[dict[str, Any]], at: float | None = None) -> None:
    """Publish events keyed like their request (the number); `at`: the record's timestamp (seconds)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            key = partition_key(str(event["phone"]), PARTITION_SECRET)
            stamp = int(at * 1000) if at is not None else None
            await (await producer.send(topic, orjson.dumps(event), key=key, timestamp_ms=stamp))
    finally:
        await producer.stop()


def result(asked: dict[str, Any], challenge_id: str, outcome: str, ts: float) -> dict[str, Any]:
    """The backend's report, repeating what the request was for: the send worker needs it to send."""
    return {
        "type": "otp_challenge", "request_id": asked["request_id"], "challenge_id": challenge_id, "ts": ts,
        "result": outcome, "phone": asked["phone"], "client_ip": asked["client_ip"],
        "message": asked["message"],
    }  # fmt: skip


async def test_a_passed_challenge_sends_once_and_a_failed_or_expired_one_never(
    kafka_bootstrap: str, redis_url: str, double: EightByEightDouble, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    stream = TopicNames(
        requests=f"ch-{tag}.requests", feedback=f"ch-{tag}.feedback", decisions=f"ch-{tag}.decisions",
        dead_letters=f"ch-{tag}.dead-letters", feedback_retry=f"ch-{tag}.feedback-retry",
        challenges=f"ch-{tag}.challenges",
    )  # fmt: skip
    outcomes_topic = f"ch-{tag}.outcomes"
    await ensure_topics(kafka_bootstrap, [*stream.all(), outcomes_topic], PARTITIONS, 1)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = worker_env(
        kafka_bootstrap, f"{redis_url}?namespace=ch-{tag}:", stream, f"ch-detect-{tag}",
        DETECTOR_POLICY=str(policy),
        DETECTOR_HASH_KEY=HASH_KEY,
        DETECTOR_TOPIC_OUTCOMES=outcomes_topic,
        DETECTOR_SEND_GROUP_ID=f"ch-send-{tag}",
        DETECTOR_SEND_LEDGER=redis_url,
        DETECTOR_SEND_LEDGER_PREFIX=f"ch:{tag}:",
        EIGHTBYEIGHT_SUBACCOUNT_ID=SUB_ACCOUNT,
        EIGHTBYEIGHT_API_KEY=API_KEY,
        EIGHTBYEIGHT_BASE_URL=double.base_url,
        **{name: value for name, value in FAST_ENV.items() if name.startswith("DETECTOR_SEND_")},
    )  # fmt: skip
    passed, failed, expired = (request(f"{tag}-{name}", n) for n, name in enumerate(("pass", "fail", "late")))
    asked = [passed, failed, expired]
    challenge_id = KeyedHasher(HASH_KEY.encode())  # the detector's ids are keyed digests of request ids

    detector = DetectorProcess("detector", tmp_path, env)
    sender = WorkerProcess("sender", tmp_path, env)
    workers = [detector, sender]

    def alive() -> None:
        for worker in workers:
            worker.assert_running()

    try:
        async with TopicReader(kafka_bootstrap, stream.decisions) as decisions:
            await produce(kafka_bootstrap, stream.requests, asked)
            await decisions.wait_for(lambda r: len(r) >= 3, 90, "the three challenges", alive=alive)
            first = [orjson.loads(r.value or b"") for r in decisions.records]
            assert {d["action"] for d in first} == {"challenge"}, first
            ids = {d["request_id"]: d["challenge_id"] for d in first}
            assert ids[passed["request_id"]] == challenge_id("challenge", passed["request_id"])
            await produce(
                kafka_bootstrap,
                stream.challenges,
                [
                    result(passed, ids[passed["request_id"]], "passed", time.time()),
                    result(failed, ids[failed["request_id"]], "failed", time.time()),
                ],
            )
            # 20 minutes on, by the clock the backend stamps its records with: past the challenge's expiry.
            late = time.time() + 20 * 60
            await produce(
                kafka_bootstrap,
                stream.challenges,
                [result(expired, ids[expired["request_id"]], "passed", late)],
                at=late,
            )
            await decisions.wait_for(lambda r: len(r) >= 6, 90, "three superseding decisions", alive=alive)
            by_id = decisions_by_id(decisions.records)
        ends = {rid: found[-1] for rid, found in by_id.items()}
        assert all(end.get("supersedes") == "challenge" for end in ends.values()), ends
        assert ends[passed["request_id"]]["action"] == "allow"
        assert ends[failed["request_id"]]["action"] == "block"
        assert [r["code"] for r in ends[expired["request_id"]]["reasons"]] == ["challenge_expired"]
        async with OutcomeReader(kafka_bootstrap, outcomes_topic) as reader:
            await eventually(lambda: len(double.sent) >= 1, 60, "the passed challenge's SMS", alive=alive)
            await reader.wait_for(lambda r: len(r) >= 6, 60, "an outcome for every decision", alive=alive)
            outcomes = [orjson.loads(r.value or b"") for r in reader.records]
        for worker in workers:
            status, _ = await asyncio.to_thread(worker.terminate, 60)
            assert status == 0, worker.tail()
    finally:
        for worker in workers:
            worker.close()

    assert sent_ids(double) == Counter({passed["request_id"]: 1}), "the passed challenge's code, once"
    [sms] = double.sent
    assert (sms.destination, sms.text) == (passed["phone"], passed["message"]["text"])
    statuses = [(o["request_id"], o["status"]) for o in outcomes]
    assert (passed["request_id"], "sent") in statuses
    assert sum(status == "sent" for _, status in statuses) == 1
