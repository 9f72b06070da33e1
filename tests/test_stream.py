"""The Kafka worker end to end: a real broker, `detector worker` in a subprocess, nothing mocked.

Also home of the helpers that `test_scaling.py` and `test_kcat.py` use: starting workers, producing, reading
topics, waiting for consumer-group states, all with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from detector.kafka.topics import TopicNames, ensure_topics
from detector.testing.services import RedisServer, free_port

KAFKA = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[1]
# A fresh key per run: counters of earlier runs in a long-lived Redis (`make services`) are not seen.
HASH_KEY = f"stream-tests-{uuid.uuid4().hex}"
PARTITIONS = 4

# Every scored rule off: what is left is the per-number limit (10 per 30 min), the deny lists and validity.
QUIET_POLICY = """\
version: stream-tests-1
rules:
  msisdn_rate_limit: {limit: 10, window: 30m}
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

# Short Kafka timeouts so joins, rebalances and take-overs cost seconds (6 s is the broker's minimum session).
TEST_SETTINGS = {
    "DETECTOR_KAFKA_SESSION_TIMEOUT": "6",
    "DETECTOR_KAFKA_HEARTBEAT_INTERVAL": "0.5",
    "DETECTOR_KAFKA_REBALANCE_TIMEOUT": "10",
    "DETECTOR_KAFKA_COMMIT_INTERVAL": "0.5",
    "DETECTOR_BATCH_SIZE": "200",
    "DETECTOR_BATCH_WAIT": "0.01",
    "DETECTOR_FEEDBACK_RETRY_DELAY": "0.3",
    "DETECTOR_FEEDBACK_RETRIES": "3",
    "DETECTOR_UNAVAILABLE_PATIENCE": "2",
    "DETECTOR_TOPIC_PARTITIONS": str(PARTITIONS),
    "DETECTOR_LOG_LEVEL": "INFO",
}


# ----------------------------------------------------------------------------- helpers


def unique_topics(stem: str) -> TopicNames:
    tag = uuid.uuid4().hex[:8]
    return TopicNames(
        requests=f"{stem}-{tag}.requests", feedback=f"{stem}-{tag}.feedback",
        decisions=f"{stem}-{tag}.decisions",
        dead_letters=f"{stem}-{tag}.dead-letters", feedback_retry=f"{stem}-{tag}.feedback-retry",
        challenges=f"{stem}-{tag}.challenges",
    )  # fmt: skip


def create_topics(bootstrap: str, topics: TopicNames, partitions: int = PARTITIONS) -> None:
    asyncio.run(ensure_topics(bootstrap, topics.all(), partitions, 1))


def worker_command() -> list[str]:
    """`detector worker`, run by this interpreter."""
    return [sys.executable, "-m", "detector", "worker"]


def worker_env(bootstrap: str, store: str, topics: TopicNames, group: str, **extra: str) -> dict[str, str]:
    """The environment of `detector worker` processes; every worker of one call shares a Redis namespace of
    its own, so counters other tests left on the session's Redis (what the engine learned) cannot decide."""
    if store.startswith("redis") and "namespace=" not in store:
        store += ("&" if "?" in store else "?") + f"namespace=w{uuid.uuid4().hex[:8]}:"
    env = {key: value for key, value in os.environ.items() if not key.startswith("DETECTOR_")}
    env.update(TEST_SETTINGS)
    env.update({
        "DETECTOR_HASH_KEY": HASH_KEY,
        "DETECTOR_KAFKA_BROKERS": bootstrap,
        "DETECTOR_STORE": store,
        "DETECTOR_GROUP_ID": group,
        "DETECTOR_TOPIC_REQUESTS": topics.requests,
        "DETECTOR_TOPIC_FEEDBACK": topics.feedback,
        "DETECTOR_TOPIC_DECISIONS": topics.decisions,
        "DETECTOR_TOPIC_DEAD_LETTERS": topics.dead_letters,
        "DETECTOR_TOPIC_FEEDBACK_RETRY": topics.feedback_retry,
        "DETECTOR_TOPIC_CHALLENGES": topics.challenges,
        "DETECTOR_METRICS_HOST": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    env.update(extra)
    return env


class WorkerProcess:
    """One `detector worker` subprocess; its output goes to `log_path`, its metrics to a free port."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str], *args: str) -> None:
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.metrics_port = free_port()
        env = {
            **env,
            "DETECTOR_METRICS_PORT": str(self.metrics_port),
            "DETECTOR_DATA_DIR": str(workdir / f"{name}-data"),
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*worker_command(), *args],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} (pid {self.pid}, exit {self.proc.poll()}):\n" + "\n".join(
            self.log().splitlines()[-lines:]
        )

    def assert_running(self) -> None:
        assert self.running(), f"worker {self.name} exited\n{self.tail()}"

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await eventually(
            lambda: "Worker ready" in self.log(), timeout, f"{self.name} ready", alive=self.assert_running
        )

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of GET `path` on the worker's metrics/health port."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    def metric(self, name: str, **labels: str) -> float:
        """The sum of every sample of `name` whose labels include `labels` (0 if none)."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, pairs), value in self.metrics().items()
            if sample == name and wanted <= set(pairs)
        )

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took). Fails the test if it does not exit in time."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} ignored SIGTERM for {timeout:.0f}s\n{self.tail()}")
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    alive: Callable[[], None] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds. `alive` may raise early."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if alive is not None:
            alive()
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def request_event(request_id: str, phone: str, **fields: Any) -> dict[str, Any]:
    event = {
        "type": "otp_request",
        "request_id": request_id,
        "ts": time.time(),
        "phone": phone,
        "client_ip": "203.0.113.5",
    }
    event.update(fields)
    return event


def feedback_event(request_id: str, outcome: str = "verified") -> dict[str, Any]:
    return {"type": "otp_feedback", "request_id": request_id, "ts": time.time(), "outcome": outcome}


Message = tuple[bytes | None, bytes | None]


async def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
    """Publish (key, value) pairs in order; their (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def as_json(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


class TopicReader:
    """Reads a topic from the beginning (every partition, no consumer group) and keeps what it read."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(await partitions_of(consumer, self.topic))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
        except BaseException:
            await consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self, timeout: float = 0.2) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000))
        for records in batches.values():
            self.records.extend(records)

    async def wait_for(
        self,
        condition: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
        timeout: float,
        what: str,
        alive: Callable[[], None] | None = None,
    ) -> None:
        async def check() -> bool:
            await self.poll()
            return condition(self.records)

        await eventually(check, timeout, what, alive=alive, interval=0)

    async def drain(self) -> list[ConsumerRecord[bytes, bytes]]:
        """Read up to the end offsets as of now."""
        assert self._consumer is not None
        tps = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(tps)
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await self._consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {self.topic} to its end"
            await self.poll()
        return self.records


def decisions_by_id(records: Sequence[ConsumerRecord[bytes, bytes]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        decision = orjson.loads(record.value or b"null")
        assert record.key == decision["request_id"].encode(), "decisions are keyed by request_id"
        found[decision["request_id"]].append(decision)
    return found


def have_ids(ids: set[str]) -> Callable[[list[ConsumerRecord[bytes, bytes]]], bool]:
    return lambda records: ids <= {orjson.loads(r.value or b"{}").get("request_id") for r in records}


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0
    }


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    deadline = time.monotonic() + 30
    while True:
        cluster = await consumer._client.fetch_all_metadata()  # all topics: never auto-creates one
        partitions = cluster.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        assert time.monotonic() < deadline, f"topic {topic} has no partitions"
        await asyncio.sleep(0.1)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def wait_no_lag(
    bootstrap: str, group: str, topic: str, timeout: float, alive: Callable[[], None] | None = None
) -> None:
    """Until the group has committed every message of `topic` (so every decision of it is published)."""

    async def caught_up() -> bool:
        ends = await end_offsets(bootstrap, topic)
        done = await committed_offsets(bootstrap, group, topic)
        return all(done.get(p, 0) >= end for p, end in ends.items())

    await eventually(
        caught_up, timeout, f"group {group} to commit all of {topic}", alive=alive, interval=0.25
    )


async def group_members(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, number of members) of a consumer group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.to_object()["groups"]
    return described["state"], len(described["members"])


async def wait_group(
    bootstrap: str, group: str, members: int, timeout: float, alive: Callable[[], None] | None = None
) -> None:
    async def stable() -> bool:
        return await group_members(bootstrap, group) == ("Stable", members)

    await eventually(
        stable, timeout, f"group {group} stable with {members} members", alive=alive, interval=0.25
    )


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "quiet.yaml"
    path.write_text(QUIET_POLICY)
    return path


class Running:
    """A worker with its topics and group, for the tests of one module."""

    def __init__(self, bootstrap: str, topics: TopicNames, group: str, worker: WorkerProcess) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = group
        self.worker = worker


@pytest.fixture(scope="module")
def running(
    kafka_bootstrap: str, policy_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """One worker (in-memory store) on topics of its own, shared by the tests below that only add events."""
    topics = unique_topics("stream")
    create_topics(kafka_bootstrap, topics)
    group = f"stream-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka_bootstrap, "memory://", topics, group, DETECTOR_POLICY=str(policy_file))
    worker = WorkerProcess("worker", tmp_path_factory.mktemp("stream-worker"), env)
    try:
        asyncio.run(worker.wait_ready())
        yield Running(kafka_bootstrap, topics, group, worker)
    finally:
        worker.close()


# ----------------------------------------------------------------------------- tests


@KAFKA
async def test_one_decision_per_request_and_dead_letters_for_garbage(running: Running) -> None:
    bootstrap, topics = running.bootstrap, running.topics
    tag = uuid.uuid4().hex[:6]
    requests = [request_event(f"{tag}-r{i}", f"+4474009{i:05d}") for i in range(40)]
    invalid = {
        "type": "otp_request",
        "request_id": f"{tag}-invalid",
        "ts": time.time(),
        "client_ip": "1.2.3.4",
    }  # no phone
    garbage: list[tuple[bytes, bytes | None, str]] = [
        (b"g-notjson", b"{not json", "not JSON"),
        (b"g-array", b"[1, 2, 3]", "must be a JSON object"),
        (b"g-type", b'{"type": "otp_sms", "request_id": "x"}', "`type`"),
        (b"g-noid", b'{"type": "otp_request", "phone": "+447400123456"}', "request_id"),
        (b"g-oversize", b'{"pad": "' + b"x" * 70_000 + b'"}', "byte limit"),
        (b"g-empty", None, "empty message"),
    ]
    messages: list[Message] = [(f"{tag}-{i}".encode(), as_json(e)) for i, e in enumerate(requests)]
    messages.append((b"invalid", as_json(invalid)))
    messages += [(tag.encode() + key, value) for key, value, _ in garbage]
    positions = await produce(bootstrap, topics.requests, messages)

    ids = {e["request_id"] for e in requests} | {invalid["request_id"]}
    async with (
        TopicReader(bootstrap, topics.decisions) as decisions,
        TopicReader(bootstrap, topics.dead_letters) as dead,
    ):
        await decisions.wait_for(
            have_ids(ids), 60, "a decision for every request", alive=running.worker.assert_running
        )
        ours = {tag.encode() + key for key, _, _ in garbage}
        await dead.wait_for(lambda rs: ours <= {r.key for r in rs}, 30, "dead letters")
        await wait_no_lag(bootstrap, running.group, topics.requests, 30)
        found = decisions_by_id(await decisions.drain())
        letters = [r for r in await dead.drain() if r.key in ours]

    assert {rid: len(found[rid]) for rid in ids} == dict.fromkeys(ids, 1), "exactly one decision per request"
    assert all(found[e["request_id"]][0]["action"] == "allow" for e in requests)
    rejected = found[invalid["request_id"]][0]
    assert rejected["action"] == "block" and rejected["reasons"][0]["code"] == "invalid_request"
    assert "phone" in rejected["reasons"][0]["value"]

    assert len(letters) == len(garbage), "one dead letter per bad message, none for the invalid request"
    where = {messages[i][0]: positions[i] for i in range(len(messages))}
    for key, value, error in garbage:
        (record,) = [r for r in letters if r.key == tag.encode() + key]
        letter = orjson.loads(record.value)
        assert error in letter["error"], letter["error"]
        origin = (letter["topic"], letter["partition"], letter["offset"])
        assert origin == (topics.requests, *where[record.key])
        assert letter["size"] == len(value or b"") and len(letter["digest"]) == 32
        assert "raw_b64" not in letter, "the bytes may hold numbers and OTP texts: never in a dead letter"
    assert running.worker.metric("detector_dead_letters_total", topic="requests") >= len(garbage)
    status, body = running.worker.get("/readyz")
    assert status == 200, body
    assert {"policy loaded: ok", "kafka consumer started: ok"} <= set(body.splitlines()), body
    assert running.worker.get("/healthz") == (200, "ok\n") and running.worker.get("/x")[0] == 404


@KAFKA
async def test_redelivered_request_gets_the_same_decision_and_counts_once(running: Running) -> None:
    bootstrap, topics = running.bootstrap, running.topics
    tag = uuid.uuid4().hex[:6]
    phone = "+447400555001"
    first = [request_event(f"{tag}-{i}", phone) for i in range(5)]
    more = [request_event(f"{tag}-{i}", phone) for i in range(5, 11)]
    # At-least-once upstream: the first five are delivered twice, byte for byte.
    sequence = [as_json(e) for e in first] + [as_json(e) for e in first] + [as_json(e) for e in more]
    await produce(bootstrap, topics.requests, [(b"one-number", value) for value in sequence])

    ids = {e["request_id"] for e in first + more}
    async with TopicReader(bootstrap, topics.decisions) as reader:
        await reader.wait_for(have_ids(ids), 60, "decisions", alive=running.worker.assert_running)
        await wait_no_lag(bootstrap, running.group, topics.requests, 30)
        found = decisions_by_id(await reader.drain())

    for event in first:
        copies = found[event["request_id"]]
        assert len(copies) == 2 and copies[0] == copies[1], "a redelivery gets the same decision"
    for event in more:
        assert len(found[event["request_id"]]) == 1
    actions = [found[f"{tag}-{i}"][0]["action"] for i in range(11)]
    # Ten slots for the number: the five redeliveries took none, so requests 0-9 are allowed and 10 is not.
    assert actions == ["allow"] * 10 + ["block"], actions
    assert found[f"{tag}-10"][0]["reasons"][0]["code"] == "msisdn_rate_limit"


@KAFKA
async def test_feedback_is_applied_retried_when_early_and_dropped_when_unknown(running: Running) -> None:
    bootstrap, topics, worker = running.bootstrap, running.topics, running.worker
    tag = uuid.uuid4().hex[:6]
    applied = worker.metric("detector_feedback_total", status="applied")
    dropped = worker.metric("detector_feedback_dropped_total", reason="unknown")

    known = request_event(f"{tag}-known", "+447400555101")
    await produce(bootstrap, topics.requests, [(b"k1", as_json(known))])
    async with TopicReader(bootstrap, topics.decisions) as reader:
        await reader.wait_for(
            have_ids({known["request_id"]}), 60, "the first decision", alive=worker.assert_running
        )
    # Feedback for a decided request; feedback that overtakes its request; feedback for nothing at all.
    early = request_event(f"{tag}-early", "+447400555102")
    await produce(
        bootstrap,
        topics.feedback,
        [
            (b"k1", as_json(feedback_event(known["request_id"]))),
            (b"k2", as_json(feedback_event(early["request_id"]))),
            (b"k3", as_json(feedback_event(f"{tag}-never"))),
            (b"k4", b"garbage on the feedback topic"),
        ],
    )
    await eventually(
        lambda: worker.metric("detector_feedback_retries_total", reason="unknown") >= 2,
        30,
        "feedback to be sent to the retry topic",
        alive=worker.assert_running,
    )
    await produce(bootstrap, topics.requests, [(b"k2", as_json(early))])

    await eventually(
        lambda: worker.metric("detector_feedback_total", status="applied") >= applied + 2,
        30,
        "both feedback events applied",
        alive=worker.assert_running,
    )
    # 3 retries 0.3 s apart, then the feedback for a request that never came is dropped.
    await eventually(
        lambda: worker.metric("detector_feedback_dropped_total", reason="unknown") > dropped,
        30,
        "unknown feedback dropped",
        alive=worker.assert_running,
    )
    assert worker.metric("detector_feedback_total", status="applied") == applied + 2
    assert worker.metric("detector_dead_letters_total", topic="feedback") == 1
    async with TopicReader(bootstrap, topics.feedback_retry) as retries:
        retried = await retries.drain()
    attempts = Counter(
        orjson.loads(r.value)["request_id"]
        for r in retried
        if dict(r.headers).get("detector-reason") == b"unknown"
    )
    assert attempts[f"{tag}-never"] == 3, attempts
    assert 1 <= attempts[early["request_id"]] <= 3


@KAFKA
async def test_shadow_flag_allows_but_keeps_the_verdict(
    kafka_bootstrap: str, policy_file: Path, tmp_path: Path
) -> None:
    topics = unique_topics("shadow")
    await ensure_topics(kafka_bootstrap, topics.all(), PARTITIONS, 1)
    group = f"shadow-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka_bootstrap, "memory://", topics, group, DETECTOR_POLICY=str(policy_file))
    worker = WorkerProcess("shadow", tmp_path, env, "--shadow")
    try:
        events = [request_event(f"s{i}", "+447400555201") for i in range(11)]
        await produce(kafka_bootstrap, topics.requests, [(b"n", as_json(e)) for e in events])
        async with TopicReader(kafka_bootstrap, topics.decisions) as reader:
            await reader.wait_for(
                have_ids({e["request_id"] for e in events}), 60, "decisions", alive=worker.assert_running
            )
            found = decisions_by_id(reader.records)
    finally:
        worker.close()
    assert all(found[e["request_id"]][0]["mode"] == "shadow" for e in events)
    assert all(found[e["request_id"]][0]["action"] == "allow" for e in events)
    over = found["s10"][0]
    assert over["verdict"] == "block" and over["reasons"][0]["code"] == "msisdn_rate_limit"
    assert [found[f"s{i}"][0]["verdict"] for i in range(10)] == ["allow"] * 10


@KAFKA
@pytest.mark.redis
async def test_sigterm_exits_cleanly_and_commits_only_decided_work(
    kafka_bootstrap: str, redis_url: str, policy_file: Path, tmp_path: Path
) -> None:
    topics = unique_topics("sigterm")
    await ensure_topics(kafka_bootstrap, topics.all(), PARTITIONS, 1)
    group = f"sigterm-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka_bootstrap, redis_url, topics, group, DETECTOR_POLICY=str(policy_file))
    first = WorkerProcess("first", tmp_path, env)
    second: WorkerProcess | None = None
    tag = uuid.uuid4().hex[:6]
    events = [request_event(f"{tag}-{i}", f"+4474007{i:05d}") for i in range(3000)]
    messages: list[Message] = [(e["request_id"].encode(), as_json(e)) for e in events]
    try:
        await first.wait_ready()
        producing = asyncio.create_task(produce_steadily(kafka_bootstrap, topics.requests, messages, 1500))
        async with TopicReader(kafka_bootstrap, topics.decisions) as reader:
            await reader.wait_for(
                lambda rs: len(rs) >= 300, 60, "the worker to be busy", alive=first.assert_running
            )
            code, took = await asyncio.to_thread(first.terminate, 30)
            assert code == 0, first.tail()
            assert took < 20, f"SIGTERM took {took:.1f}s"
            positions = await producing

            # What the stopped worker committed, it decided: below a committed offset, all have decisions.
            committed = await committed_offsets(kafka_bootstrap, group, topics.requests)
            assert sum(committed.values()) > 0
            found = decisions_by_id(await reader.drain())
            at = {position: e["request_id"] for position, e in zip(positions, events, strict=True)}
            undecided = [
                rid for (p, offset), rid in at.items() if offset < committed.get(p, 0) and rid not in found
            ]
            assert not undecided, f"{len(undecided)} committed requests without a decision"

            # A new worker in the group finishes the rest; what both decided twice carries the same decision.
            second = WorkerProcess("second", tmp_path, env)
            ids = {e["request_id"] for e in events}
            await reader.wait_for(have_ids(ids), 90, "every request decided", alive=second.assert_running)
            await wait_no_lag(kafka_bootstrap, group, topics.requests, 30)
            found = decisions_by_id(await reader.drain())
            assert second.metric("detector_decisions_total") > 0, "the second worker took over"
            assert second.metric("detector_store_errors_total") == 0, second.tail()
        assert set(found) == ids
        assert all(all(d == copies[0] for d in copies) for copies in found.values())
    finally:
        first.close()
        if second is not None:
            second.close()


async def produce_steadily(
    bootstrap: str, topic: str, messages: Sequence[Message], rate: float
) -> list[tuple[int, int]]:
    """Publish at about `rate` messages per second; their (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        futures = []
        started = time.monotonic()
        for index, (key, value) in enumerate(messages):
            futures.append(await producer.send(topic, value, key=key))
            ahead = index / rate - (time.monotonic() - started)
            if ahead > 0.005:
                await asyncio.sleep(ahead)
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*futures)]
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


@KAFKA
@pytest.mark.redis
async def test_store_outage_fails_requests_open_and_keeps_feedback(
    kafka_bootstrap: str, redis_server: RedisServer, policy_file: Path, tmp_path: Path
) -> None:
    """Redis stops answering (CLIENT PAUSE keeps its data): requests get the policy's fail mode at once,
    feedback waits (in place, then through the retry topic) until Redis answers again, and is not lost."""
    import redis.asyncio as aioredis

    topics = unique_topics("outage")
    await ensure_topics(kafka_bootstrap, topics.all(), PARTITIONS, 1)
    group = f"outage-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        kafka_bootstrap,
        redis_server.url,
        topics,
        group,
        DETECTOR_POLICY=str(policy_file),
        DETECTOR_UNAVAILABLE_PATIENCE="1",
        DETECTOR_FEEDBACK_RETRY_DELAY="0.5",
    )
    worker = WorkerProcess("outage", tmp_path, env)
    client = aioredis.from_url(redis_server.url)
    tag = uuid.uuid4().hex[:6]
    before = request_event(f"{tag}-before", "+447400555401")
    during = request_event(f"{tag}-during", "+447400555402")
    try:
        await produce(kafka_bootstrap, topics.requests, [(b"a", as_json(before))])
        async with TopicReader(kafka_bootstrap, topics.decisions) as reader:
            await reader.wait_for(
                have_ids({before["request_id"]}), 60, "the first decision", alive=worker.assert_running
            )
            await client.execute_command("CLIENT", "PAUSE", "5000", "ALL")
            paused = time.monotonic()
            verified = as_json(feedback_event(before["request_id"]))
            await produce(kafka_bootstrap, topics.feedback, [(b"a", verified)])
            await produce(kafka_bootstrap, topics.requests, [(b"b", as_json(during))])
            await reader.wait_for(
                have_ids({during["request_id"]}),
                30,
                "a decision during the outage",
                alive=worker.assert_running,
            )
            decided_in = time.monotonic() - paused
            found = decisions_by_id(reader.records)
        await eventually(
            lambda: worker.metric("detector_feedback_retries_total", reason="unavailable") >= 1,
            30,
            "feedback handed to the retry topic",
            alive=worker.assert_running,
        )
        # Once Redis answers again the feedback reaches it: applied, or (if the paused call ran after all)
        # a duplicate of what the store already has. Never dropped.
        await eventually(
            lambda: (
                worker.metric("detector_feedback_total", status="applied")
                + worker.metric("detector_feedback_total", status="duplicate")
                >= 1
            ),
            60,
            "feedback applied after the outage",
            alive=worker.assert_running,
        )
        assert worker.metric("detector_feedback_dropped_total") == 0
        assert worker.metric("detector_store_errors_total", operation="decide") >= 1
        assert worker.metric("detector_store_errors_total", operation="feedback") >= 1
    finally:
        worker.close()
        with contextlib.suppress(Exception):
            await client.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()
    decision = found[during["request_id"]][0]
    assert decision["action"] == "allow", "the default policy counts in the process meanwhile (degrade)"
    assert "state_degraded" in [reason["code"] for reason in decision["reasons"]]
    assert decided_in < 5, "requests do not wait for the store"


# ----------------------------------------------------------------------------- the pipeline without a broker


class RecordingOutput:
    """Collects what the pipeline publishes; `fail` makes every acknowledgement fail."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []
        self.fail = fail

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]:
        self.sent.append((topic, key, value, dict(headers or [])))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            ack.set_exception(OSError("broker gone"))
        else:
            ack.set_result(None)
        return ack

    async def send_many(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
    ) -> list[Awaitable[Any]]:
        return [await self.send(topic, key, value) for key, value in messages]

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes, dict[str, bytes]]]:
        return [message for message in self.sent if message[0] == topic]


class SwitchableStore:
    """The memory store, which can be made to fail like a store that does not answer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.plan = inner.plan
        self.down = False

    async def apply(self, batch: Any, on_answers: Any = None) -> Any:
        from detector.state.base import StoreUnavailable

        if self.down:
            raise StoreUnavailable("switched off")
        return await self.inner.apply(batch, on_answers)

    async def remember(self, decisions: Any, offences: Any = ()) -> None:
        await self.inner.remember(decisions, offences)

    async def close(self) -> None:
        await self.inner.close()


def make_pipeline(
    output: RecordingOutput, hurry: Callable[[], bool] = lambda: False, **config: Any
) -> tuple[Any, SwitchableStore]:
    from detector.engine import Engine
    from detector.hashing import KeyedHasher
    from detector.policy import load_policy
    from detector.scoring import counter_plan
    from detector.state.memory import MemoryStore
    from detector.stream.app import Pipeline
    from detector.stream.config import StreamConfig
    from detector.stream.metrics import Metrics

    policy = load_policy(None)
    store = SwitchableStore(MemoryStore(counter_plan(policy)))
    engine = Engine(policy, store, KeyedHasher(b"pipeline-tests-key-0123"))  # type: ignore[arg-type]
    settings = {
        "feedback_retry_delay": 0.05,
        "feedback_retries": 2,
        "unavailable_patience": 0.3,
        "unavailable_backoff_max": 0.1,
        **config,
    }
    return Pipeline(engine, output, Metrics(), StreamConfig(**settings), hurry=hurry), store


def incoming(
    topic: str, value: bytes | None, offset: int = 0, headers: dict[str, bytes] | None = None
) -> Any:
    from detector.stream.app import Incoming

    return Incoming(topic, 0, offset, b"key", value, time.time(), headers or {})


def counted(pipeline: Any, name: str, **labels: str) -> float:
    return pipeline.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_unknown_feedback_goes_round_the_retry_topic_then_is_dropped() -> None:
    output = RecordingOutput()
    pipeline, _ = make_pipeline(output)
    topics = pipeline.topics
    await pipeline.handle("feedback", [incoming(topics.feedback, as_json(feedback_event("nobody")))])
    for attempt in (1, 2):
        (retry,) = output.to(topics.feedback_retry)
        assert retry[1] == b"key" and retry[3]["detector-attempt"] == str(attempt).encode()
        assert retry[3]["detector-reason"] == b"unknown"
        assert retry[3]["detector-origin"] == b"otp.feedback/0/0"
        output.sent.clear()
        await pipeline.handle("feedback_retry", [incoming(topics.feedback_retry, retry[2], headers=retry[3])])
    assert output.sent == [], "dropped after the last retry"
    assert counted(pipeline, "detector_feedback_dropped_total", reason="unknown") == 1


async def test_a_retry_taken_early_while_stopping_keeps_its_attempt() -> None:
    output = RecordingOutput()
    pipeline, _ = make_pipeline(output, hurry=lambda: True, feedback_retry_delay=30.0)
    due = {"detector-attempt": b"1", "detector-due": repr(time.time() + 30).encode()}
    started = time.monotonic()
    early = incoming(pipeline.topics.feedback_retry, as_json(feedback_event("x")), headers=due)
    await pipeline.handle("feedback_retry", [early])
    assert time.monotonic() - started < 1, "no waiting while the worker stops"
    (retry,) = output.to(pipeline.topics.feedback_retry)
    assert retry[3]["detector-attempt"] == b"1"


async def test_feedback_the_store_did_not_take_is_retried_then_handed_on_and_applied_later() -> None:
    output = RecordingOutput()
    pipeline, store = make_pipeline(output)
    topics = pipeline.topics
    request = request_event("r1", "+447400123456")
    await pipeline.handle("requests", [incoming(topics.requests, as_json(request))])
    store.down = True
    started = time.monotonic()
    await pipeline.handle("feedback", [incoming(topics.feedback, as_json(feedback_event("r1")), offset=7)])
    assert 0.2 < time.monotonic() - started < 2, "retried in place for about the patience"
    (retry,) = output.to(topics.feedback_retry)
    assert retry[3]["detector-reason"] == b"unavailable" and retry[3]["detector-attempt"] == b"0"
    assert counted(pipeline, "detector_feedback_total", status="unavailable") >= 2
    store.down = False
    await pipeline.handle("feedback_retry", [incoming(topics.feedback_retry, retry[2], headers=retry[3])])
    assert counted(pipeline, "detector_feedback_total", status="applied") == 1
    assert counted(pipeline, "detector_store_errors_total", operation="feedback") == 1


async def test_requests_never_wait_for_feedback_the_store_did_not_take() -> None:
    output = RecordingOutput()
    pipeline, store = make_pipeline(output, unavailable_patience=30.0)
    store.down = True
    started = time.monotonic()
    await pipeline.handle(
        "requests",
        [
            incoming(pipeline.topics.requests, as_json(request_event("r2", "+447400123457"))),
            incoming(pipeline.topics.requests, as_json(feedback_event("r0"))),
        ],
    )
    assert time.monotonic() - started < 1
    (decision,) = output.to(pipeline.topics.decisions)
    assert "state_unavailable" in decision[2].decode()
    assert len(output.to(pipeline.topics.feedback_retry)) == 1
    assert counted(pipeline, "detector_store_errors_total", operation="decide") == 1


async def test_an_output_kafka_does_not_take_fails_the_batch() -> None:
    from detector.kafka.output import DeliveryFailed

    pipeline, _ = make_pipeline(RecordingOutput(fail=True))
    with pytest.raises(DeliveryFailed):
        await pipeline.handle(
            "requests", [incoming("otp.requests", as_json(request_event("r3", "+447400123458")))]
        )


async def test_an_engine_failure_costs_one_dead_letter_not_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    output = RecordingOutput()
    pipeline, _ = make_pipeline(output)
    real = pipeline.engine.process

    async def flaky(events: Any, references: Any = None) -> Any:
        if any(getattr(e, "request_id", "") == "poison" for e in events):
            raise RuntimeError("bug")
        return await real(events, references)

    monkeypatch.setattr(pipeline.engine, "process", flaky)
    await pipeline.handle(
        "requests",
        [
            incoming("otp.requests", as_json(request_event("fine", "+447400123459")), offset=1),
            incoming("otp.requests", as_json(request_event("poison", "+447400123460")), offset=2),
        ],
    )
    (decision,) = output.to(pipeline.topics.decisions)
    assert decision[1] == b"fine"
    (letter,) = output.to(pipeline.topics.dead_letters)
    assert "internal error" in orjson.loads(letter[2])["error"] and orjson.loads(letter[2])["offset"] == 2


def test_topic_names_and_settings_are_checked() -> None:
    from detector.stream.config import StreamConfig

    with pytest.raises(ValueError, match="must differ"):
        TopicNames(decisions="otp.requests")
    with pytest.raises(ValueError, match="legal"):
        TopicNames(requests="otp requests")
    with pytest.raises(ValueError, match="heartbeat"):
        StreamConfig(session_timeout=6, heartbeat_interval=3)
    config = StreamConfig(brokers="a:9092, kafka://b:9093")
    assert config.broker_urls == ["kafka://a:9092", "kafka://b:9093"]
    assert config.bootstrap == ["a:9092", "b:9093"]
    assert TopicNames(feedback="otp.requests").all() == [
        "otp.requests",
        "otp.decisions",
        "otp.dead-letters",
        "otp.feedback-retry",
        "otp.challenges",
    ]


async def _challenged(pipeline: Any, output: RecordingOutput) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request the default policy challenges (anonymizer + IP country ≠ phone country), and its decision."""
    asked = request_event("ch-1", "+447400123456", ip_country="NL", signals={"anonymizer": True})
    await pipeline.handle("requests", [incoming(pipeline.topics.requests, as_json(asked))])
    [(_, _, value, _)] = output.to(pipeline.topics.decisions)
    decision = orjson.loads(value)
    assert decision["action"] == "challenge", decision
    output.sent.clear()
    return asked, decision


def _report(asked: dict[str, Any], decision: dict[str, Any], **fields: Any) -> bytes:
    event = {"type": "otp_challenge", "request_id": asked["request_id"], "ts": time.time(),
             "challenge_id": decision["challenge_id"], "phone": asked["phone"],
             "client_ip": asked["client_ip"], **fields}  # fmt: skip
    return as_json(event)


async def test_a_captcha_token_on_kafka_is_verified_then_ends_the_challenge() -> None:
    from detector.challenges.siteverify import SiteVerifier, SiteVerifyConfig
    from detector.send.secrets import Secret
    from detector.testing.siteverify_double import SiteVerifyDouble

    output = RecordingOutput()
    pipeline, _ = make_pipeline(output)
    async with SiteVerifyDouble("captcha-secret-0123456789") as provider:
        pipeline.verifier = SiteVerifier(SiteVerifyConfig(provider.url, Secret("captcha-secret-0123456789")))
        try:
            asked, decision = await _challenged(pipeline, output)
            report = incoming(pipeline.topics.challenges, _report(asked, decision, token=provider.issue()))
            await pipeline.handle("challenges", [report])
            [(_, _, value, _)] = output.to(pipeline.topics.decisions)
            ended = orjson.loads(value)
            assert (ended["action"], ended["supersedes"]) == ("allow", "challenge")
            output.sent.clear()
            await pipeline.handle("challenges", [report])
            assert output.to(pipeline.topics.decisions) == []  # a spent token, an ended challenge: nothing
        finally:
            await pipeline.verifier.close()
    assert counted(pipeline, "detector_worker_siteverify_total", result="passed") == 1


async def test_challenge_results_that_end_nothing_never_stop_the_worker() -> None:
    """Garbage ids, unknown requests, tokens with no verifier: counted, never a crash or a decision."""
    output = RecordingOutput()
    pipeline, _ = make_pipeline(output)
    asked, decision = await _challenged(pipeline, output)
    reports = [
        _report(asked, {"challenge_id": "é" * 40}, result="passed"),
        _report({**asked, "request_id": "nobody"}, decision, result="passed"),
        _report(asked, decision, token="a-token-nobody-can-verify"),
    ]
    topic = pipeline.topics.challenges
    await pipeline.handle(
        "challenges", [incoming(topic, report, offset=i) for i, report in enumerate(reports)]
    )
    assert output.to(pipeline.topics.decisions) == []
    for status in ("mismatch", "unverified"):
        assert counted(pipeline, "detector_challenge_results_total", status=status) >= 1
