"""End to end: OTP requests into Kafka -> `detector worker` -> decisions -> `detector send-worker` -> 8x8.

Both workers run as subprocesses from one environment (they share the DETECTOR_KAFKA_* and DETECTOR_TOPIC_*
names), with the Redis store and ledger, a real broker and the contract-checked 8x8 double. Only the
allowed requests reach 8x8, each exactly once; every request ends with one outcome; verified feedback
reaches 8x8 as `success` for the right umid.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from detector.kafka.topics import TopicNames, ensure_topics, partition_key
from detector.testing.eightbyeight_double import EightByEightDouble
from tests.test_send_worker import (
    API_KEY,
    FAST_ENV,
    PARTITIONS,
    SUB_ACCOUNT,
    OutcomeReader,
    WorkerProcess,
    produce,
    sent_ids,
)
from tests.test_stream import WorkerProcess as DetectorProcess
from tests.test_stream import eventually, wait_no_lag, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITION_SECRET = b"send-e2e-partitioning"
# Every scored rule off: what decides is the deny list (and the number's validity).
POLICY = """\
version: send-e2e-1
lists:
  deny_ips: [198.51.100.0/24]
rules:
  retry_delay: {mode: "off"}
  velocity:
    ip_10m: {mode: "off"}
    ip_24h: {mode: "off"}
    subnet_1h: {mode: "off"}
    msisdn_24h: {mode: "off"}
    prefix_1h: {mode: "off"}
    session_1h: {mode: "off"}
    account_24h: {mode: "off"}
  unverified:
    phone_country: {mode: "off"}
    ip: {mode: "off"}
    prefix: {mode: "off"}
  conversion:
    prefix: {mode: "off"}
    phone_country: {mode: "off"}
  ip_country_mismatch: {mode: "off"}
  non_core_destination: {mode: "off"}
  distinct_countries_per_ip: {mode: "off"}
  upstream: {mode: "off"}
  number_type: {mode: "off"}
"""


@pytest.fixture
async def double() -> AsyncIterator[EightByEightDouble]:
    async with EightByEightDouble(api_key=API_KEY) as running:
        yield running
        assert running.violations == [], "requests that break 8x8's contract"


def request(request_id: str, n: int, client_ip: str) -> dict[str, Any]:
    return {
        # Dated like live traffic (a minute ago, when the request is made): the worker bounds event time by
        # the broker's clock, and a request dated far off would carry `ts_clamped` besides the reason tested.
        "type": "otp_request", "request_id": request_id, "ts": time.time() - 60 + n,
        "phone": f"+4474001{n:05d}", "client_ip": client_ip, "flow": "login",
        "message": {"text": f"Your code is {200000 + n}"},
    }  # fmt: skip


async def test_only_allowed_requests_reach_8x8_once_each(
    kafka_bootstrap: str, redis_url: str, double: EightByEightDouble, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    stream = TopicNames(
        requests=f"e2e-{tag}.requests", feedback=f"e2e-{tag}.feedback", decisions=f"e2e-{tag}.decisions",
        dead_letters=f"e2e-{tag}.dead-letters", feedback_retry=f"e2e-{tag}.feedback-retry",
    )  # fmt: skip
    outcomes_topic = f"e2e-{tag}.outcomes"
    await ensure_topics(kafka_bootstrap, [*stream.all(), outcomes_topic], PARTITIONS, 1)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    send_group = f"e2e-send-{tag}"
    # One environment for both workers: they share the DETECTOR_KAFKA_* and DETECTOR_TOPIC_* names.
    env = worker_env(
        kafka_bootstrap, redis_url, stream, f"e2e-detect-{tag}",
        DETECTOR_POLICY=str(policy),
        DETECTOR_TOPIC_OUTCOMES=outcomes_topic,
        DETECTOR_SEND_GROUP_ID=send_group,
        DETECTOR_SEND_LEDGER=redis_url,
        DETECTOR_SEND_LEDGER_PREFIX=f"e2e:{tag}:",
        EIGHTBYEIGHT_SUBACCOUNT_ID=SUB_ACCOUNT,
        EIGHTBYEIGHT_API_KEY=API_KEY,
        EIGHTBYEIGHT_BASE_URL=double.base_url,
        **{name: value for name, value in FAST_ENV.items() if name.startswith("DETECTOR_SEND_")},
    )  # fmt: skip

    allowed = [request(f"{tag}-ok-{n}", n, f"203.0.113.{n + 1}") for n in range(20)]
    denied = [request(f"{tag}-deny-{n}", 100 + n, f"198.51.100.{n + 1}") for n in range(10)]
    events = [event for pair in zip(allowed[:10], denied, strict=True) for event in pair] + allowed[10:]

    detector = DetectorProcess("detector", tmp_path, env)
    sender = WorkerProcess("sender", tmp_path, env)
    workers = [detector, sender]

    def alive() -> None:
        for worker in workers:
            worker.assert_running()

    try:
        await produce(
            kafka_bootstrap,
            stream.requests,
            events,
            key=lambda e: partition_key(str(e["phone"]), PARTITION_SECRET),
        )
        async with OutcomeReader(kafka_bootstrap, outcomes_topic) as reader:
            outcomes = await reader.wait_outcomes(
                {str(e["request_id"]) for e in events}, timeout=120, alive=alive
            )
            verified = allowed[:5]
            await produce(kafka_bootstrap, stream.feedback,
                          [{"type": "otp_feedback", "request_id": e["request_id"], "ts": e["ts"],
                            "outcome": "verified"} for e in verified],
                          key=lambda e: str(e["request_id"]).encode())  # fmt: skip
            await eventually(lambda: len(double.feedback) == len(verified), 60, "feedback to reach 8x8",
                             alive=alive)  # fmt: skip
            for topic in (stream.decisions, stream.feedback):
                await wait_no_lag(kafka_bootstrap, send_group, topic, 60, alive)
            await reader.settle()
        for (
            worker
        ) in workers:  # SIGTERM: each stops cleanly (waited for in a thread: the double keeps serving)
            status, _ = await asyncio.to_thread(worker.terminate, 60)
            assert status == 0, worker.tail()
    finally:
        for worker in workers:
            worker.close()

    assert sent_ids(double) == Counter({str(e["request_id"]): 1 for e in allowed}), "allowed ones, once each"
    by_id = {sms.client_message_id: sms for sms in double.sent}
    for event in allowed:
        sms = by_id[str(event["request_id"])]
        assert (sms.destination, sms.client_ip, sms.text, sms.track) == (
            event["phone"],
            event["client_ip"],
            event["message"]["text"],
            "Outcome",
        )
        assert outcomes[str(event["request_id"])]["umid"] == sms.umid
    assert {outcomes[str(e["request_id"])]["status"] for e in allowed} == {"sent"}
    for event in denied:
        outcome = outcomes[str(event["request_id"])]
        assert (outcome["status"], outcome["action"]) == ("skipped", "block")
        assert outcome["reasons"] == ["denied_ip"]
    assert len(reader.raw) == len(events), "one outcome per request"
    assert sorted((post.umid, post.outcome) for post in double.feedback) == sorted(
        (outcomes[str(e["request_id"])]["umid"], "success") for e in allowed[:5]
    )
    assert API_KEY not in sender.log() + detector.log()
