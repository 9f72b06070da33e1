"""The send worker against a real Kafka broker, a real Redis and the contract-checked 8x8 double.

Most tests run the worker in the test's event loop (next to the double); the crash and SIGTERM tests run
`detector send-worker` as a subprocess and kill it. Every test ends with the double's `violations` empty
(each request the worker made was valid against 8x8's OpenAPI document), every outcome valid against
schemas/otp_outcome.schema.json, and the API key absent from every log record (captured at DEBUG).

Also home of the helpers `test_send_e2e.py` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from detector.events import OtpOutcome, encode
from detector.kafka.exit import EX_CONFIG
from detector.kafka.topics import ensure_topics
from detector.send import ApiKey, EightByEightClient, EightByEightConfig, Queued, SmsMessage
from detector.send.config import SendConfig, SendTopics
from detector.send.ledger import SendLedger
from detector.send.metrics import SendMetrics
from detector.send.worker import SendWorker
from detector.testing.crashing_send_worker import CRASH_ENV, CRASH_EXIT_STATUS
from detector.testing.eightbyeight_double import (
    BATCH,
    INVALID_MSISDN,
    SEND,
    Drop,
    EightByEightDouble,
    RateLimited,
    Seen,
    ServerError,
    Slow,
)
from detector.testing.services import free_port
from tests.test_stream import (
    TopicReader,
    committed_offsets,
    end_offsets,
    eventually,
    wait_no_lag,
)
from tests.test_stream import WorkerProcess as StreamWorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

REPO = Path(__file__).resolve().parents[1]
API_KEY = f"k8x8-{uuid.uuid4().hex}-secret"
SUB_ACCOUNT = "acme-otp"
PARTITIONS = 2
OUTCOME_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((REPO / "schemas" / "otp_outcome.schema.json").read_text()),
    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
)
# Short timings: retries in milliseconds, a dead worker's liveness key gone in 2 s.
FAST = {
    "session_timeout": 6.0,
    "heartbeat_interval": 0.5,
    "batch_wait": 0.01,
    "rate": 10_000.0,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "retry_max_elapsed": 5.0,
    "owner_ttl": 2.0,
    "claim_wait": 10.0,
    "lookup_delay": 0.05,
    "lookup_poll": 0.02,
    "lookup_patience": 5.0,
    "metrics_port": 0,
    "partitions": PARTITIONS,
    "replication": 1,
}
FAST_ENV = {
    "DETECTOR_KAFKA_SESSION_TIMEOUT": "6",
    "DETECTOR_KAFKA_HEARTBEAT_INTERVAL": "0.5",
    "DETECTOR_SEND_BATCH_WAIT": "0.01",
    "DETECTOR_SEND_RATE": "10000",
    "DETECTOR_SEND_RETRY_BASE_DELAY": "0.01",
    "DETECTOR_SEND_RETRY_MAX_DELAY": "0.05",
    "DETECTOR_SEND_RETRY_MAX_ELAPSED": "5",
    "DETECTOR_SEND_OWNER_TTL": "2",
    "DETECTOR_SEND_CLAIM_WAIT": "10",
    "DETECTOR_SEND_LOOKUP_DELAY": "0.05",
    "DETECTOR_SEND_LOOKUP_POLL": "0.02",
    "DETECTOR_SEND_LOOKUP_PATIENCE": "5",
    "DETECTOR_TOPIC_PARTITIONS": str(PARTITIONS),
    "DETECTOR_TOPIC_REPLICATION": "1",
    "DETECTOR_LOG_LEVEL": "DEBUG",
}


# ----------------------------------------------------------------------------- helpers


def phone(n: int) -> str:
    return f"+6591{n:06d}"


def decision(request_id: str, action: str = "allow", n: int = 0, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "otp_decision",
        "request_id": request_id,
        "ts": "2026-11-23T08:00:00.000Z",
        "action": action,
        "verdict": action,
        "mode": "enforce",
        "score": 0.0 if action == "allow" else 80.0,
        "reasons": [] if action == "allow" else [{"code": "velocity_ip_10m", "value": 30, "threshold": 20}],
        "policy_version": "send-tests-1",
        "client_ip": f"203.0.113.{n % 250 + 1}",
        "phone": phone(n),
        "phone_country": "SG",
        "message": {"text": f"Your code is {100000 + n}"},
        "flow": "login",
    }
    event.update(fields)
    return event


def feedback(request_id: str, outcome: str = "verified") -> dict[str, Any]:
    return {
        "type": "otp_feedback",
        "request_id": request_id,
        "ts": "2026-11-23T08:01:00Z",
        "outcome": outcome,
    }


def unique_topics(stem: str) -> SendTopics:
    tag = uuid.uuid4().hex[:8]
    return SendTopics(
        decisions=f"{stem}-{tag}.decisions",
        feedback=f"{stem}-{tag}.feedback",
        outcomes=f"{stem}-{tag}.outcomes",
    )


async def produce(
    bootstrap: str,
    topic: str,
    events: Sequence[dict[str, Any]],
    key: Callable[[dict[str, Any]], bytes] = lambda event: str(event["request_id"]).encode(),
) -> None:
    """Publish events (keyed by request_id unless `key` says otherwise), in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(e), key=key(e)) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class OutcomeReader(TopicReader):
    """The outcomes topic from its beginning; every outcome is checked against the schema as it is read."""

    async def __aenter__(self) -> OutcomeReader:
        await super().__aenter__()
        return self

    async def poll(self, timeout: float = 0.1) -> None:
        seen = len(self.records)
        await super().poll(timeout)
        for record in self.records[seen:]:
            assert record.key is not None and record.value is not None
            outcome = orjson.loads(record.value)
            OUTCOME_SCHEMA.validate(outcome)
            assert record.key == outcome["request_id"].encode(), "outcomes are keyed by request_id"

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        return [(record.key or b"", record.value or b"") for record in self.records]

    def by_id(self) -> dict[str, dict[str, Any]]:
        """The outcome of each request; fails if a request has two different ones."""
        found: dict[str, bytes] = {}
        for key, value in self.raw:
            previous = found.setdefault(key.decode(), value)
            assert previous == value, f"two different outcomes for {key.decode()}: {previous!r} {value!r}"
        return {request_id: orjson.loads(value) for request_id, value in found.items()}

    async def wait_outcomes(
        self, ids: set[str], timeout: float = 30.0, alive: Callable[[], None] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Until every request in `ids` has an outcome; the outcome of each request read so far."""
        await self.wait_for(lambda _: ids <= set(self.by_id()), timeout, f"outcomes of {sorted(ids)}", alive)
        return self.by_id()

    async def settle(self, seconds: float = 0.3) -> None:
        """Read whatever else arrives within `seconds` (after the worker committed everything)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.poll()


def sent_ids(double: EightByEightDouble) -> Counter[str]:
    return Counter(sms.client_message_id or "" for sms in double.sent)


def send_requests(double: EightByEightDouble) -> list[Seen]:
    """The send requests the double got (not the log lookups or feedback)."""
    return [seen for seen in double.requests if seen.operation in (SEND, BATCH)]


def vendor_config(double: EightByEightDouble, key: str = API_KEY) -> EightByEightConfig:
    return EightByEightConfig(SUB_ACCOUNT, ApiKey(key), base_url=double.base_url, timeout=5.0)


def sample(metrics: SendMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every log record at DEBUG and above, of every logger (httpx, httpcore, aiokafka too): no API key."""
    caplog.set_level(logging.DEBUG)
    yield
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert API_KEY not in text
    assert "Bearer" not in text


@pytest.fixture
async def double() -> AsyncIterator[EightByEightDouble]:
    async with EightByEightDouble(api_key=API_KEY) as running:
        yield running
        assert running.violations == [], "requests that break 8x8's contract"


class Harness:
    """Topics, a group and a ledger prefix of one test; runs workers in this event loop."""

    def __init__(self, bootstrap: str, redis_url: str, double: EightByEightDouble, stem: str) -> None:
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.double = double
        self.topics = unique_topics(stem)
        self.group = f"send-{uuid.uuid4().hex[:8]}"
        self.prefix = f"test:{uuid.uuid4().hex[:8]}:"

    def config(self, **changes: Any) -> SendConfig:
        settings: dict[str, Any] = {
            **FAST,
            "brokers": self.bootstrap,
            "group_id": self.group,
            "topics": self.topics,
            "ledger_url": self.redis_url,
            "ledger_prefix": self.prefix,
        }
        settings.update(changes)
        return SendConfig(**settings)

    def ledger(self) -> SendLedger:
        return SendLedger.from_url(self.redis_url, prefix=self.prefix, ttl=3600)

    @contextlib.asynccontextmanager
    async def worker(self, key: str = API_KEY, **changes: Any) -> AsyncIterator[SendWorker]:
        worker = SendWorker(self.config(**changes), vendor_config(self.double, key))
        task = asyncio.ensure_future(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            status = await asyncio.wait_for(task, 30)
        assert status == 0

    async def decide(self, *events: dict[str, Any]) -> None:
        await produce(self.bootstrap, self.topics.decisions, events)

    async def give_feedback(self, *events: dict[str, Any]) -> None:
        await produce(self.bootstrap, self.topics.feedback, events)

    async def done(self, timeout: float = 30.0, alive: Callable[[], None] | None = None) -> None:
        """Until the worker committed every decision and feedback published so far."""
        for topic in (self.topics.decisions, self.topics.feedback):
            await wait_no_lag(self.bootstrap, self.group, topic, timeout, alive)


@pytest.fixture
async def harness(
    kafka_bootstrap: str, redis_url: str, double: EightByEightDouble, request: pytest.FixtureRequest
) -> Harness:
    made = Harness(kafka_bootstrap, redis_url, double, "send")
    await ensure_topics(kafka_bootstrap, made.topics.all(), PARTITIONS, 1)
    return made


# ----------------------------------------------------------------------------- in-process tests


@pytest.mark.parametrize("batch_size", [1, 100], ids=["single", "batch"])
async def test_allow_is_sent_once_block_challenge_and_delay_are_not(
    harness: Harness, batch_size: int
) -> None:
    double = harness.double
    tag = uuid.uuid4().hex[:6]
    allowed = [decision(f"{tag}-a{i}", n=i) for i in range(6)]
    blocked = decision(f"{tag}-b", "block", n=50)
    challenged = decision(f"{tag}-c", "challenge", n=51, reasons=[{"code": "unverified_ip"}])
    delayed = decision(f"{tag}-d", "delay", n=52, reasons=[{"code": "anonymizer_ip"}], retry_after=30.0)
    await harness.decide(*allowed[:3], blocked, challenged, delayed, *allowed[3:])
    async with (
        harness.worker(batch_size=batch_size) as worker,
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        outcomes = await reader.wait_outcomes(
            {e["request_id"] for e in [*allowed, blocked, challenged, delayed]}
        )
        await harness.decide(allowed[0])  # the detector may publish a decision twice
        await harness.done()
        await reader.settle()

    assert sent_ids(double) == Counter({e["request_id"]: 1 for e in allowed})
    by_id = {sms.client_message_id: sms for sms in double.sent}
    for event in allowed:
        sms = by_id[event["request_id"]]
        assert (sms.destination, sms.text, sms.client_ip, sms.track, sms.sub_account_id) == (
            event["phone"],
            event["message"]["text"],
            event["client_ip"],
            "Outcome",
            SUB_ACCOUNT,
        )
        assert outcomes[event["request_id"]]["status"] == "sent"
        assert outcomes[event["request_id"]]["umid"] == sms.umid
    assert outcomes[blocked["request_id"]] == {
        **outcomes[blocked["request_id"]],
        "status": "skipped",
        "action": "block",
        "reasons": ["velocity_ip_10m"],
    }
    assert outcomes[challenged["request_id"]]["action"] == "challenge"
    assert outcomes[challenged["request_id"]]["reasons"] == ["unverified_ip"]
    assert (outcomes[delayed["request_id"]]["status"], outcomes[delayed["request_id"]]["action"]) == (
        "skipped",
        "delay",
    )
    assert len(reader.raw) == 9, "one outcome per request, the repeated decision included"
    operations = Counter(seen.operation for seen in double.requests)
    if batch_size == 1:
        assert operations == Counter({"Send-Sms-Single": 6})
    else:  # decisions that were waiting arrive together: the batch endpoint
        assert operations["Send-Many-Sms"] >= 1 and sum(operations.values()) < 6
    assert sample(worker.metrics, "detector_send_outcomes_total", status="sent") == 6
    assert sample(worker.metrics, "detector_send_outcomes_total", status="skipped") == 3
    assert sample(worker.metrics, "detector_send_redelivered_total", state="published") == 1


async def test_rejected_by_8x8_is_reported_with_its_code_and_not_retried(harness: Harness) -> None:
    harness.double.reject(phone(7))
    await harness.decide(decision("rej-1", n=7))
    async with harness.worker(), OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
        outcome = (await reader.wait_outcomes({"rej-1"}))["rej-1"]
    assert outcome["status"] == "rejected"
    assert (outcome["code"], outcome["message"], outcome["attempts"]) == ("REJECTED", INVALID_MSISDN, 1)
    assert outcome["umid"] == harness.double.rejected[0].umid
    assert len(harness.double.requests) == 1


@pytest.mark.parametrize(
    ("fault", "reason", "ambiguous"),
    [
        (RateLimited("1"), "rate_limited", "no"),
        (ServerError(500), "server_error", "yes"),
        (ServerError(503), "server_error", "no"),
    ],
    ids=["429-retry-after-1", "500", "503"],
)
async def test_retryable_answers_are_retried_then_sent(
    harness: Harness, fault: Any, reason: str, ambiguous: str
) -> None:
    arrivals: list[float] = []  # when the double saw each request

    def first_only(seen: Any) -> bool:
        arrivals.append(time.monotonic())
        return len(arrivals) == 1

    harness.double.add_rule(fault, when=first_only)
    await harness.decide(decision("retry-1", n=1))
    async with (
        harness.worker() as worker,
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        outcome = (await reader.wait_outcomes({"retry-1"}))["retry-1"]
    assert (outcome["status"], outcome["attempts"]) == ("sent", 2)
    assert sent_ids(harness.double) == Counter({"retry-1": 1})
    assert len(send_requests(harness.double)) == 2
    assert len(harness.double.exports) == (1 if ambiguous == "yes" else 0), "a 500 is looked up first"
    assert (
        sample(
            worker.metrics,
            "detector_send_retries_total",
            operation="single",
            reason=reason,
            ambiguous=ambiguous,
        )
        == 1
    )
    if isinstance(fault, RateLimited):
        assert arrivals[1] - arrivals[0] >= 1.0, "Retry-After: 1 was honoured"
        assert (
            sample(worker.metrics, "detector_send_rate_limit_wait_seconds_count", source="retry_after") == 0
        )


async def test_without_the_lookup_ambiguous_failures_are_in_doubt(harness: Harness) -> None:
    """--no-lookup: a 500 may mean 8x8 queued it, so it is not tried again (in_doubt); a 503 still is."""
    harness.double.inject(ServerError(500), ServerError(503))
    await harness.decide(decision("amb-1", n=1))
    async with (
        harness.worker(lookup=False),
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        first = (await reader.wait_outcomes({"amb-1"}))["amb-1"]
        await harness.decide(decision("amb-2", n=2))
        second = (await reader.wait_outcomes({"amb-2"}))["amb-2"]
    assert (first["status"], first["error"], first["code"]) == ("failed", "in_doubt", "in_doubt")
    assert "server_error, HTTP 500, code 2000" in first["message"]
    assert (second["status"], second["attempts"]) == ("sent", 2)


async def test_client_errors_fail_without_retry_and_retries_give_up(harness: Harness) -> None:
    harness.double.inject(ServerError(400))  # a 400 that is no contract violation
    await harness.decide(decision("bad-1", n=1))
    async with (
        harness.worker(retry_attempts=3),
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        bad = (await reader.wait_outcomes({"bad-1"}))["bad-1"]
        harness.double.add_rule(ServerError(502), when=lambda seen: seen.operation in (SEND, BATCH))
        await harness.decide(decision("down-1", n=2))
        down = (await reader.wait_outcomes({"down-1"}))["down-1"]
    assert (bad["status"], bad["error"], bad["http_status"], bad["attempts"]) == (
        "failed",
        "bad_request",
        400,
        1,
    )
    assert (down["status"], down["error"], down["http_status"], down["attempts"]) == (
        "failed",
        "server_error",
        502,
        3,
    )
    assert harness.double.sent == []
    assert len(send_requests(harness.double)) == 4
    assert len(harness.double.exports) == 3, "each 502 was looked up: absent, so tried again or failed"


async def test_the_api_key_never_leaks(harness: Harness, capfd: pytest.CaptureFixture[str]) -> None:
    """Wrong key (401), a 500 and a rejection: the key is in no log record (see `no_key_in_logs`), outcome,
    repr or error, and the worker says which sub-account failed to authenticate."""
    wrong = f"k8x8-{uuid.uuid4().hex}-wrong"
    await harness.decide(decision("key-1", n=1), decision("key-2", n=2))
    async with (
        harness.worker(key=wrong) as worker,
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        outcomes = await reader.wait_outcomes({"key-1", "key-2"})
        shown = [repr(worker), repr(worker.config), repr(worker.vendor), str(worker.vendor)]
    harness.double.inject(ServerError(500))
    harness.double.reject(phone(4))
    await harness.decide(decision("key-3", n=3), decision("key-4", n=4))
    async with (
        harness.worker() as worker,
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        outcomes.update(await reader.wait_outcomes({"key-3", "key-4"}))
        shown += [repr(worker), repr(worker.config), repr(worker.vendor)]
        raw = b"".join(value for _, value in reader.raw)
    assert {o["status"] for o in (outcomes["key-1"], outcomes["key-2"])} == {"failed"}
    assert (outcomes["key-1"]["error"], outcomes["key-1"]["http_status"]) == ("unauthorized", 401)
    assert (outcomes["key-3"]["status"], outcomes["key-4"]["status"]) == ("sent", "rejected")
    leaks = [text for text in shown if API_KEY in text or wrong in text]
    assert leaks == []
    assert API_KEY.encode() not in raw and wrong.encode() not in raw
    assert API_KEY not in json.dumps(outcomes) and wrong not in json.dumps(outcomes)
    out, err = capfd.readouterr()
    assert API_KEY not in out + err and wrong not in out + err


ACCOUNT = "0c4b8f52-6a1e-4d3b-9f2a-5e7d1c3b2a10"


async def test_a_key_8x8_refuses_at_start_stops_the_worker_saying_what_to_fix(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """With EIGHTBYEIGHT_ACCOUNT_ID, the balance call checks the key before any decision is taken."""
    await harness.decide(decision("start-1", n=1))
    wrong = dataclasses.replace(
        vendor_config(harness.double, f"k8x8-{uuid.uuid4().hex}-wrong"), account_id=ACCOUNT
    )
    refused = SendWorker(harness.config(), wrong)
    assert await asyncio.wait_for(refused.run(), 30) == EX_CONFIG
    assert "EIGHTBYEIGHT_API_KEY" in caplog.text and "not starting" in caplog.text
    assert not all(refused.readiness().values())
    assert harness.double.sent == [] and [r.operation for r in harness.double.requests] == [
        "get-account-balance"
    ]

    right = SendWorker(
        harness.config(), dataclasses.replace(vendor_config(harness.double), account_id=ACCOUNT)
    )
    task = asyncio.ensure_future(right.run())
    try:
        async with OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
            assert (await reader.wait_outcomes({"start-1"}))["start-1"]["status"] == "sent"
        await eventually(lambda: all(right.readiness().values()), 30, "the worker to be ready")
    finally:
        right.stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_feedback_reports_success_and_failure_for_the_right_umid(harness: Harness) -> None:
    harness.double.reject(phone(8))
    await harness.decide(
        *(decision(f"fb-{i}", n=i) for i in range(3)),
        decision("fb-blocked", "block", n=9),
        decision("fb-rejected", n=8),
    )
    async with (
        harness.worker() as worker,
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        outcomes = await reader.wait_outcomes({"fb-0", "fb-1", "fb-2", "fb-blocked", "fb-rejected"})
        await harness.give_feedback(
            feedback("fb-0", "verified"),
            feedback("fb-1", "failed"),
            feedback("fb-2", "completed_other"),
            feedback("fb-blocked", "verified"),  # never sent, not in the ledger
            feedback("fb-rejected", "verified"),
            feedback("fb-never-decided", "verified"),
            feedback("fb-0", "verified"),  # repeated: reported once
            {"type": "otp_request", "request_id": "x", "ts": 1, "phone": phone(1), "client_ip": "192.0.2.1"},
        )
        await harness.done()
        metrics = worker.metrics
    posted = sorted((post.umid, post.outcome, post.timestamp) for post in harness.double.feedback)
    expected = sorted(
        [
            (outcomes["fb-0"]["umid"], "success", "2026-11-23T08:01:00Z"),
            (outcomes["fb-1"]["umid"], "failure", "2026-11-23T08:01:00Z"),
        ]
    )
    assert posted == expected
    assert {post.sub_account_id for post in harness.double.feedback} == {SUB_ACCOUNT}
    counts = {
        result: sample(metrics, "detector_send_feedback_total", result=result)
        for result in ("posted", "completed_other", "not_sent", "unknown", "duplicate", "ignored")
    }
    assert counts == {
        "posted": 2,
        "completed_other": 1,
        "not_sent": 1,
        "unknown": 2,
        "duplicate": 1,
        "ignored": 1,
    }


async def test_send_rate_is_limited_by_the_token_bucket(harness: Harness) -> None:
    await harness.decide(*(decision(f"rate-{i}", n=i) for i in range(6)))
    async with (
        harness.worker(rate=5.0, burst=1.0, batch_size=1) as worker,
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        await reader.wait_outcomes({f"rate-{i}" for i in range(6)})
    # Six messages at five per second with a burst of one: the bucket held them back about a second.
    assert sample(worker.metrics, "detector_send_rate_limit_wait_seconds_count", source="bucket") >= 4
    assert sample(worker.metrics, "detector_send_rate_limit_wait_seconds_sum", source="bucket") >= 0.9
    assert sent_ids(harness.double) == Counter({f"rate-{i}": 1 for i in range(6)})


async def test_bad_decisions_fail_without_a_send(harness: Harness) -> None:
    no_text = decision("bad-text", n=1)
    del no_text["message"]
    no_phone = decision("bad-phone", n=2)
    del no_phone["phone"]
    await harness.decide(no_text, no_phone)
    await produce(
        harness.bootstrap,
        harness.topics.decisions,
        [{"request_id": "bad-shape", "type": "otp_decision", "action": "maybe"}],
    )
    async with harness.worker(), OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
        outcomes = await reader.wait_outcomes({"bad-text", "bad-phone", "bad-shape"})
    assert {o["error"] for o in outcomes.values()} == {"invalid_decision"}
    assert "no message text" in outcomes["bad-text"]["message"]
    assert harness.double.requests == []


async def test_a_dead_workers_claim_is_looked_up_in_8x8s_log_not_guessed(harness: Harness) -> None:
    """A claim without an outcome whose owner is gone: 8x8's log says whether the SMS left. One that
    8x8 has is sent (its umid), never again; one it does not have is sent now; a live owner is waited for."""
    ledger = harness.ledger()
    earlier = int((time.time() - 10) * 1000)
    vendor = vendor_config(harness.double)
    async with EightByEightClient(vendor) as client:  # what the dead worker got out before it died
        gone = await client.send(SmsMessage(phone(3), "Your code is 333333", "gone-1"))
    try:
        assert await ledger.claim(["never-1"], f"dead-worker@{earlier}.1") == [None]
        assert await ledger.claim(["gone-1"], f"dead-worker@{earlier}.2") == [None]
        await ledger.heartbeat("busy-worker", ttl=30)
        assert await ledger.claim(["busy-1"], "busy-worker@1") == [None]
        await harness.decide(decision("never-1", n=1), decision("gone-1", n=3))
        async with (
            harness.worker() as worker,
            OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
        ):
            settled = await reader.wait_outcomes({"never-1", "gone-1"})
            await harness.decide(decision("busy-1", n=2))
            await eventually(
                lambda: sample(worker.metrics, "detector_send_redelivered_total", state="claimed") == 3,
                30,
                "the worker to find the busy claim",
            )
            await reader.settle(0.3)
            assert "busy-1" not in reader.by_id(), "a live owner's claim is waited for"
            # The busy worker finishes: its outcome is the one published, nothing is sent.
            busy_outcome = encode(
                OtpOutcome(
                    request_id="busy-1",
                    status="sent",
                    ts="2026-11-23T08:00:01.000Z",
                    umid="u-busy",
                    attempts=1,
                )
            )
            assert await ledger.record([("busy-1", "busy-worker@1", busy_outcome, "u-busy")]) == [None]
            busy = (await reader.wait_outcomes({"busy-1"}))["busy-1"]
        assert sample(worker.metrics, "detector_send_in_doubt_total") == 0
        assert sample(worker.metrics, "detector_send_lookups_total", result="found") == 1
        assert sample(worker.metrics, "detector_send_redelivered_total", state="taken_over") == 1
    finally:
        await ledger.retire("busy-worker")
        await ledger.close()
    assert sent_ids(harness.double) == Counter({"never-1": 1, "gone-1": 1})
    assert isinstance(gone, Queued)
    assert (settled["gone-1"]["status"], settled["gone-1"]["umid"]) == ("sent", gone.umid)
    assert settled["never-1"]["status"] == "sent"
    assert busy == orjson.loads(busy_outcome)


async def test_with_the_lookup_off_a_dead_workers_claim_is_in_doubt(harness: Harness) -> None:
    ledger = harness.ledger()
    try:
        assert await ledger.claim(["doubt-1"], "dead-worker@1") == [None]
        await harness.decide(decision("doubt-1", n=1))
        async with (
            harness.worker(lookup=False) as worker,
            OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
        ):
            doubt = (await reader.wait_outcomes({"doubt-1"}))["doubt-1"]
        assert sample(worker.metrics, "detector_send_in_doubt_total") == 1
    finally:
        await ledger.close()
    assert (doubt["status"], doubt["code"], doubt["error"]) == ("failed", "in_doubt", "in_doubt")
    assert harness.double.requests == []


async def test_two_workers_share_the_partitions_and_send_each_request_once(harness: Harness) -> None:
    """A second worker joins while decisions keep coming: the first finishes and commits its rounds before
    giving partitions up; every request is sent once and has one outcome."""
    first_ids = [f"pair-{i}" for i in range(20)]
    more_ids = [f"pair-{i}" for i in range(20, 60)]
    async with harness.worker() as first, OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
        await harness.decide(*(decision(rid, n=i) for i, rid in enumerate(first_ids)))
        await reader.wait_outcomes(set(first_ids))
        async with harness.worker() as second:
            for start in range(0, len(more_ids), 10):  # while the group rebalances
                await harness.decide(
                    *(decision(rid, n=20 + start + i) for i, rid in enumerate(more_ids[start : start + 10]))
                )
            await eventually(
                lambda: (
                    len(first.assigned) == len(second.assigned) == PARTITIONS
                    and not first.assigned & second.assigned
                ),
                30,
                "the partitions to be shared",
            )
            await reader.wait_outcomes(set(more_ids))
            await harness.done()
        await harness.decide(decision("pair-last", n=99))
        await reader.wait_outcomes({"pair-last"})  # the first worker has every partition again
        await harness.done()
        await reader.settle()
    everything = [*first_ids, *more_ids, "pair-last"]
    assert sent_ids(harness.double) == Counter({rid: 1 for rid in everything})
    assert Counter(key.decode() for key, _ in reader.raw) == Counter({rid: 1 for rid in everything})


async def test_nothing_is_sent_while_the_ledger_is_down(
    kafka_bootstrap: str, redis_server: Any, double: EightByEightDouble
) -> None:
    """Without the ledger a send cannot be claimed, so it waits; once Redis is back it goes, once."""
    harness = Harness(kafka_bootstrap, redis_server.url, double, "outage")
    await ensure_topics(kafka_bootstrap, harness.topics.all(), PARTITIONS, 1)
    async with (
        harness.worker() as worker,
        OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader,
    ):
        await harness.decide(decision("up-1", n=1))
        await reader.wait_outcomes({"up-1"})
        redis_server.stop()
        await harness.decide(decision("down-1", n=2), decision("down-2", n=3))
        await eventually(
            lambda: sample(worker.metrics, "detector_send_ledger_errors_total") >= 2,
            30,
            "the worker to find the ledger down",
        )
        assert sent_ids(double) == Counter({"up-1": 1})
        redis_server.start()
        outcomes = await reader.wait_outcomes({"down-1", "down-2"})
    assert {outcomes["down-1"]["status"], outcomes["down-2"]["status"]} == {"sent"}
    assert sent_ids(double) == Counter({"up-1": 1, "down-1": 1, "down-2": 1})


# ----------------------------------------------------------------------------- the ledger alone


@pytest.mark.redis
async def test_ledger_claims_once_records_once_and_releases_only_untried(redis_url: str) -> None:
    ledger = SendLedger.from_url(redis_url, prefix=f"test:{uuid.uuid4().hex[:8]}:", ttl=3600)
    try:
        assert await ledger.claim(["a", "b"], "w1@1") == [None, None]
        again = await ledger.claim(["a"], "w2@2")
        assert again[0] is not None and again[0].owner == "w1" and again[0].outcome is None
        # Only the claim's owner records, and only once.
        assert (await ledger.record([("a", "w2@2", b'{"status":"sent"}', "u2")]))[0] is not None
        assert await ledger.record([("a", "w1@1", b'{"status":"sent"}', "u1")]) == [None]
        winner = (await ledger.record([("a", "w1@1", b'{"status":"failed"}', None)]))[0]
        assert winner is not None and winner.outcome == b'{"status":"sent"}' and winner.umid == "u1"
        await ledger.mark_published(["a"])
        (entry,) = await ledger.get(["a"])
        assert entry is not None and entry.published
        # A recorded claim cannot be released; an untried one can, by its owner only.
        await ledger.release([("a", "w1@1"), ("b", "w9@9")])
        assert [e is not None for e in await ledger.get(["a", "b"])] == [True, True]
        await ledger.release([("b", "w1@1")])
        assert await ledger.get(["b"]) == [None]
        # Feedback: once per sent request.
        claims = await ledger.claim_feedback_many([("a", "success"), ("a", "success"), ("zz", "failure")])
        assert [(c.verdict, c.umid) for c in claims] == [
            ("post", "u1"),
            ("duplicate", None),
            ("unknown", None),
        ]
        # Liveness.
        await ledger.heartbeat("w1", ttl=5)
        assert await ledger.alive("w1") and not await ledger.alive("w2")
        await ledger.retire("w1")
        assert not await ledger.alive("w1")
        ttl = await ledger._redis.pttl(ledger.key("a"))
        assert 0 < ttl <= 3600_000
    finally:
        await ledger.close()


# ----------------------------------------------------------------------------- subprocesses: crash, SIGTERM


def send_worker_command() -> list[str]:
    """`detector send-worker`, run by this interpreter."""
    return [sys.executable, "-m", "detector", "send-worker"]


class WorkerProcess(StreamWorkerProcess):
    """One `detector send-worker` subprocess (output in `log_path`, metrics on `metrics_port`); with
    `DETECTOR_SEND_CRASH_AT` in `env`, the test entry that dies at that point."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.metrics_port = free_port()
        env = {**env, "DETECTOR_SEND_METRICS_PORT": str(self.metrics_port),
               "DETECTOR_METRICS_HOST": "127.0.0.1"}  # fmt: skip
        with self.log_path.open("ab") as log:
            command = (
                [sys.executable, "-m", "detector.testing.crashing_send_worker"]
                if CRASH_ENV in env
                else send_worker_command()
            )
            self.proc = subprocess.Popen(command, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    async def wait_exit(self, timeout: float) -> int:
        """The exit status; waits in a thread, so the double in this event loop keeps answering."""
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout:.0f}s\n{self.tail()}")


def worker_env(harness: Harness, **extra: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("DETECTOR_", "EIGHTBYEIGHT_"))
    }
    env.update(FAST_ENV)
    env.update(
        {
            "DETECTOR_KAFKA_BROKERS": harness.bootstrap,
            "DETECTOR_SEND_GROUP_ID": harness.group,
            "DETECTOR_TOPIC_DECISIONS": harness.topics.decisions,
            "DETECTOR_TOPIC_FEEDBACK": harness.topics.feedback,
            "DETECTOR_TOPIC_OUTCOMES": harness.topics.outcomes,
            "DETECTOR_SEND_LEDGER": harness.redis_url,
            "DETECTOR_SEND_LEDGER_PREFIX": harness.prefix,
            "EIGHTBYEIGHT_SUBACCOUNT_ID": SUB_ACCOUNT,
            "EIGHTBYEIGHT_API_KEY": API_KEY,
            "EIGHTBYEIGHT_BASE_URL": harness.double.base_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.close()
    for proc in started:
        assert API_KEY not in proc.log(), f"{proc.name} logged the API key"


@pytest.mark.parametrize("point", ["after-claim", "after-send", "after-ledger", "after-outcomes"])
async def test_a_crash_anywhere_never_sends_twice_nor_strands_a_request(
    harness: Harness, processes: list[WorkerProcess], tmp_path: Path, point: str
) -> None:
    """The worker exits at once (os._exit) at `point` of its first round with sends; a new worker takes over.

    after-claim: claimed, never sent: the successor finds the dead claim, 8x8's log does not have it, so it
    is sent (once). after-send: sent, not recorded: 8x8's log has it, so it is `sent` with that umid and
    not sent again. after-ledger / after-outcomes: the outcome is in the ledger, so it is published (again,
    for after-outcomes: the same bytes) and nothing is sent again.
    """
    ids = [f"crash-{i}" for i in range(5)]
    blocked = decision("crash-b", "block", n=9)
    await harness.decide(*(decision(rid, n=i) for i, rid in enumerate(ids)), blocked)
    crashing = WorkerProcess("crashing", tmp_path, worker_env(harness, DETECTOR_SEND_CRASH_AT=point))
    processes.append(crashing)
    assert await crashing.wait_exit(60) == CRASH_EXIT_STATUS, crashing.tail()
    assert f"DETECTOR_SEND_CRASH_AT={point}" in crashing.log()
    sent_before = sent_ids(harness.double)
    if point == "after-claim":
        assert sent_before == Counter()
    else:
        assert sent_before and set(sent_before) <= set(ids) and set(sent_before.values()) == {1}

    successor = WorkerProcess("successor", tmp_path, worker_env(harness))
    processes.append(successor)
    async with OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
        outcomes = await reader.wait_outcomes({*ids, "crash-b"}, timeout=60, alive=successor.assert_running)
        await harness.done(alive=successor.assert_running)
        await reader.settle()
    assert sent_ids(harness.double) == Counter({rid: 1 for rid in ids}), "each sent once, none stranded"
    assert {outcomes[rid]["status"] for rid in ids} == {"sent"}
    umids = {sms.client_message_id: sms.umid for sms in harness.double.sent}
    assert {rid: outcomes[rid]["umid"] for rid in ids} == umids
    repeated = Counter(key.decode() for key, _ in reader.raw)
    if point == "after-outcomes":
        assert {repeated[rid] for rid in ids} == {2}, "published before the crash and again (identical)"
    else:
        assert {repeated[rid] for rid in ids} == {1}


@pytest.mark.parametrize("lookup", [True, False], ids=["lookup", "no-lookup"])
async def test_killed_while_8x8_holds_the_answer(
    harness: Harness, processes: list[WorkerProcess], tmp_path: Path, lookup: bool
) -> None:
    """SIGKILL while the HTTP request is in flight: 8x8 queues it, the worker never hears back. The next
    worker finds the claim of a dead owner: 8x8's log has the message, so it is `sent` with its umid and
    not sent again; without the lookup, it is in_doubt (and still not sent again)."""
    harness.double.add_rule(Slow(2.0))
    await harness.decide(decision("slow-1", n=1))
    env = worker_env(harness, DETECTOR_SEND_LOOKUP="true" if lookup else "false")
    first = WorkerProcess("first", tmp_path, env)
    processes.append(first)
    await eventually(
        lambda: len(harness.double.requests) == 1, 60, "the send to reach 8x8", alive=first.assert_running
    )
    first.proc.send_signal(signal.SIGKILL)
    await first.wait_exit(10)
    await eventually(lambda: len(harness.double.sent) == 1, 10, "8x8 to queue the message")
    harness.double.clear_faults()

    second = WorkerProcess("second", tmp_path, env)
    processes.append(second)
    async with OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
        outcome = (await reader.wait_outcomes({"slow-1"}, timeout=60, alive=second.assert_running))["slow-1"]
    if lookup:
        assert (outcome["status"], outcome["umid"]) == ("sent", harness.double.sent[0].umid)
    else:
        assert (outcome["status"], outcome["code"]) == ("failed", "in_doubt")
    assert sent_ids(harness.double) == Counter({"slow-1": 1})
    assert len(send_requests(harness.double)) == 1


def attempted_ids(double: EightByEightDouble) -> set[str]:
    """Every clientMessageId the double was asked to send, whatever it answered."""
    ids: set[str] = set()
    for seen in send_requests(double):
        messages = seen.body.get("messages", []) if seen.operation == BATCH else [seen.body]
        ids.update(str(m.get("clientMessageId")) for m in messages)
    return ids


async def test_kill_9_mid_run_with_timeouts_and_drops_sends_nothing_twice_and_strands_nothing(
    harness: Harness, processes: list[WorkerProcess], tmp_path: Path
) -> None:
    """Issue 9's fault run: 8x8 times out after queueing, drops answers after queueing, drops requests
    before queueing; the worker is killed (SIGKILL) mid-run and a new one takes over, the faults going on.
    No request is sent twice, and none that was never attempted is left unsent."""
    double = harness.double

    def every(k: int) -> Callable[[Seen], bool]:
        return lambda seen: seen.operation in (SEND, BATCH) and len(send_requests(double)) % 6 == k

    double.add_rule(Slow(1.0, after_accepting=True), when=every(1))  # timeout, 8x8 has them
    double.add_rule(Drop(after_accepting=True), when=every(3))  # dropped answer, 8x8 has them
    double.add_rule(Drop(), when=every(5))  # dropped request, 8x8 has nothing
    ids = [f"fault-{i}" for i in range(300)]
    await harness.decide(*(decision(rid, n=i) for i, rid in enumerate(ids)))
    env = worker_env(
        harness,
        EIGHTBYEIGHT_TIMEOUT="0.5",
        DETECTOR_SEND_RATE="150",
        DETECTOR_SEND_BATCH_SIZE="20",
        DETECTOR_SEND_MAX_IN_FLIGHT="4",
        DETECTOR_LOG_LEVEL="INFO",
    )
    first = WorkerProcess("first", tmp_path, env)
    processes.append(first)
    await eventually(lambda: len(double.sent) >= 80, 60, "a third of the sends", alive=first.assert_running)
    first.proc.send_signal(signal.SIGKILL)
    await first.wait_exit(10)
    sent_by_first = len(double.sent)

    second = WorkerProcess("second", tmp_path, env)
    processes.append(second)
    async with OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
        outcomes = await reader.wait_outcomes(set(ids), timeout=120, alive=second.assert_running)
    counts = sent_ids(double)
    duplicates = sum(count - 1 for count in counts.values())
    attempted = attempted_ids(double)
    unsent = [rid for rid in ids if counts[rid] == 0]
    stranded = [rid for rid in unsent if rid not in attempted]
    statuses = Counter(outcome["status"] for outcome in outcomes.values())
    print(
        f"\nsend fault run: {len(ids)} requests, {len(send_requests(double))} send requests "
        f"({len(double.exports)} log lookups), killed after {sent_by_first} sent; duplicates {duplicates}, "
        f"strandings {len(stranded)}, unsent {len(unsent)}, outcomes {dict(statuses)}"
    )
    assert duplicates == 0, "no request is sent twice"
    assert stranded == [], "no request that was never attempted is left unsent"
    assert unsent == [] and statuses == Counter({"sent": len(ids)}), "8x8's log settled every doubt"
    umids = {sms.client_message_id: sms.umid for sms in double.sent}
    assert {rid: outcomes[rid]["umid"] for rid in ids} == umids


async def test_sigterm_finishes_in_flight_sends_commits_and_exits_0(
    harness: Harness, processes: list[WorkerProcess], tmp_path: Path
) -> None:
    harness.double.add_rule(Slow(1.5))
    ids = [f"term-{i}" for i in range(4)]
    await harness.decide(*(decision(rid, n=i) for i, rid in enumerate(ids)))
    worker = WorkerProcess("worker", tmp_path, worker_env(harness))
    processes.append(worker)
    await eventually(
        lambda: len(harness.double.requests) >= 1, 60, "sends in flight", alive=worker.assert_running
    )
    assert await asyncio.to_thread(worker.metric, "detector_send_rate_limit_wait_seconds_count") == 0
    status, body = await asyncio.to_thread(worker.get, "/readyz")
    assert (status, body.count(": ok")) == (200, 3), body
    assert await asyncio.to_thread(worker.get, "/healthz") == (200, "ok\n")
    assert (await asyncio.to_thread(worker.get, "/"))[0] == 404
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert await worker.wait_exit(20) == 0, worker.tail()
    assert time.monotonic() - started < 10
    async with OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
        outcomes = await reader.wait_outcomes(set(ids), timeout=10)
    assert {outcomes[rid]["status"] for rid in ids} == {"sent"}
    assert sent_ids(harness.double) == Counter({rid: 1 for rid in ids})
    ends = await end_offsets(harness.bootstrap, harness.topics.decisions)
    assert await committed_offsets(harness.bootstrap, harness.group, harness.topics.decisions) == ends


async def test_sigterm_abandons_rate_limited_sends_for_the_next_worker(
    harness: Harness, processes: list[WorkerProcess], tmp_path: Path
) -> None:
    """At one message per second, SIGTERM comes while most wait for tokens: they are released, not
    committed, and the next worker sends them; each exactly once, with one outcome each."""
    ids = [f"slowrate-{i}" for i in range(6)]
    await harness.decide(*(decision(rid, n=i) for i, rid in enumerate(ids)))
    slow = WorkerProcess(
        "slow",
        tmp_path,
        worker_env(harness, DETECTOR_SEND_RATE="1", DETECTOR_SEND_BURST="1", DETECTOR_SEND_BATCH_SIZE="1"),
    )
    processes.append(slow)
    await eventually(lambda: len(harness.double.sent) >= 1, 60, "the first send", alive=slow.assert_running)
    slow.proc.send_signal(signal.SIGTERM)
    assert await slow.wait_exit(20) == 0, slow.tail()
    before = sent_ids(harness.double)
    assert 1 <= sum(before.values()) < len(ids), "token waits are cut short, not waited out"

    fast = WorkerProcess("fast", tmp_path, worker_env(harness))
    processes.append(fast)
    async with OutcomeReader(harness.bootstrap, harness.topics.outcomes) as reader:
        outcomes = await reader.wait_outcomes(set(ids), timeout=60, alive=fast.assert_running)
        await harness.done(alive=fast.assert_running)
        await reader.settle()
    assert sent_ids(harness.double) == Counter({rid: 1 for rid in ids})
    assert {outcomes[rid]["status"] for rid in ids} == {"sent"}
    assert Counter(key.decode() for key, _ in reader.raw) == Counter({rid: 1 for rid in ids})


def test_the_command_says_what_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Usage errors name the setting to fix and never show the key; an unreachable Kafka exits 1."""
    from click.testing import CliRunner

    from detector.cli.send_worker import send_worker

    for name in list(os.environ):
        if name.startswith(("DETECTOR_", "EIGHTBYEIGHT_")):
            monkeypatch.delenv(name)
    runner = CliRunner()
    missing = runner.invoke(send_worker, [], env={"EIGHTBYEIGHT_API_KEY": API_KEY})
    assert missing.exit_code == 2 and "EIGHTBYEIGHT_SUBACCOUNT_ID" in missing.output
    no_key = runner.invoke(send_worker, ["--sub-account", SUB_ACCOUNT])
    assert no_key.exit_code == 2 and "EIGHTBYEIGHT_API_KEY_FILE" in no_key.output
    bad = runner.invoke(send_worker, ["--sub-account", "x"], env={"EIGHTBYEIGHT_API_KEY": API_KEY})
    assert bad.exit_code == 2 and "sub-account id" in bad.output and API_KEY not in bad.output
    account = runner.invoke(send_worker, ["--sub-account", SUB_ACCOUNT, "--account-id", "acme"],
                            env={"EIGHTBYEIGHT_API_KEY": API_KEY})  # fmt: skip
    assert account.exit_code == 2 and "account id" in account.output and API_KEY not in account.output
    prefix = runner.invoke(send_worker, ["--sub-account", SUB_ACCOUNT, "--ledger-prefix", "a{b}:"],
                           env={"EIGHTBYEIGHT_API_KEY": API_KEY})  # fmt: skip
    assert prefix.exit_code == 2 and "hash tag" in prefix.output
    port = free_port()  # nobody listens there
    unreachable = runner.invoke(
        send_worker, ["--sub-account", SUB_ACCOUNT, "--brokers", f"127.0.0.1:{port}", "--metrics-port", "0"],
        env={"EIGHTBYEIGHT_API_KEY": API_KEY},
    )  # fmt: skip
    assert unreachable.exit_code == 1
