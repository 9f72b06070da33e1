"""Sends per second of the send worker against the 8x8 double, next to a bare HTTP loop (the ceiling).

    python -m bench.send [--single N] [--batched N] [--batch-size 100] [--in-flight 8] [--no-kafka]

The double runs as separate processes (one clean, one with faults), so it does not share the GIL with
what is measured; every request is still checked against 8x8's OpenAPI document. Redis (the send ledger)
is a redis-server of its own unless ``REDIS_URL`` names one; Kafka likewise with ``KAFKA_BOOTSTRAP`` (or
``--no-kafka`` to skip the rows that need it).

Rows:

* ``bare``: an httpx loop POSTing prepared bodies with the same concurrency: no ledger, no retries, no
  rate limit, no Kafka. The ceiling for this machine and this double.
* ``pipeline``: the worker's own round (`SendPipeline.handle`: ledger claim, send with rate limit and
  retries, ledger record, publish, mark published) fed records in memory, outcomes to a null producer:
  the send path without Kafka.
* ``worker``: the whole `SendWorker` with Kafka: decisions produced beforehand, timed from the group join
  to the last outcome acknowledged.
* ``faults``: the double answers 10% of sends with 500, 2% with 429 Retry-After 0 and 0.2% with 429
  Retry-After 1 (which pauses every send of the worker for a second, as it should). Each 500 is looked
  up in the double's message log (a log export job) before the messages are sent again.

The ratio column compares each row with the bare loop on the same endpoint (single or batch).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

API_KEY = f"bench-{uuid.uuid4().hex}"
SUB_ACCOUNT = "bench-otp"


# --- the double, as a process of its own ------------------------------------------------------------


def serve_double(faults: str, seed: int) -> None:
    """Run the 8x8 double (with `faults`: none or mixed) until killed; print its URL first."""
    from detector.testing.eightbyeight_double import BATCH, SEND, EightByEightDouble, RateLimited, ServerError

    rng = random.Random(seed)
    key = os.environ["EIGHTBYEIGHT_API_KEY"]

    def chance(p: float) -> Callable[[Any], bool]:
        return lambda seen: seen.operation in (SEND, BATCH) and rng.random() < p

    async def serve() -> None:
        double = EightByEightDouble(api_key=key)
        if faults == "mixed":
            # Each rule draws once per request, in order: about 10% 500, 2% 429/0, 0.2% 429/1.
            double.add_rule(ServerError(500), chance(0.10))
            double.add_rule(RateLimited("0"), chance(0.02 / 0.90))
            double.add_rule(RateLimited("1"), chance(0.002 / 0.88))
        async with double:
            print(f"8x8 double listening on {double.base_url}", flush=True)
            while True:
                # The double keeps every request it saw; a benchmark only needs to hear of violations.
                if double.violations:
                    print(f"CONTRACT VIOLATIONS: {double.violations[:3]}", file=sys.stderr, flush=True)
                    double.violations.clear()
                double.requests.clear()
                double.sent.clear()
                await asyncio.sleep(1)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@contextlib.contextmanager
def double_process(faults: str, seed: int = 1) -> Iterator[str]:
    env = {**os.environ, "EIGHTBYEIGHT_API_KEY": API_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.send", "--serve-double", faults, "--seed", str(seed)],
        env=env,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"the double did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


# --- what is sent -----------------------------------------------------------------------------------


def decision(n: int, tag: str) -> dict[str, Any]:
    return {
        "type": "otp_decision",
        "request_id": f"{tag}-{n}",
        "ts": "2026-11-23T08:00:00.000Z",
        "action": "allow",
        "verdict": "allow",
        "mode": "enforce",
        "score": 0.0,
        "reasons": [],
        "policy_version": "bench",
        "client_ip": f"203.0.{n // 250 % 256}.{n % 250 + 1}",
        "phone": f"+44740{n:07d}",
        "phone_country": "GB",
        "message": {"text": f"Your code is {n % 1000000:06d}"},
    }


def sms_body(n: int, tag: str) -> dict[str, Any]:
    d = decision(n, tag)
    return {
        "destination": d["phone"],
        "text": d["message"]["text"],
        "clientMessageId": d["request_id"],
        "clientIp": d["client_ip"],
        "track": "Outcome",
    }


@dataclass
class Row:
    name: str
    endpoint: str  # single | batch
    messages: int
    seconds: float
    requests: int = 0
    retries: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


# --- the ceiling: a bare loop -----------------------------------------------------------------------


async def bare(base_url: str, messages: int, batch_size: int, in_flight: int) -> Row:
    tag = uuid.uuid4().hex[:8]
    path = f"/api/v1/subaccounts/{SUB_ACCOUNT}/messages"
    if batch_size == 1:
        bodies = [orjson.dumps(sms_body(n, tag)) for n in range(messages)]
    else:
        path += "/batch"
        bodies = [
            orjson.dumps(
                {
                    "messages": [sms_body(n, tag) for n in range(start, min(messages, start + batch_size))],
                    "includeMessagesInResponse": True,
                }
            )
            for start in range(0, messages, batch_size)
        ]
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30) as client:
        pending = iter(bodies)

        async def loop() -> None:
            for body in pending:
                response = await client.post(path, content=body)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(in_flight)))
        seconds = time.perf_counter() - started
    endpoint = "single" if batch_size == 1 else "batch"
    return Row(f"bare httpx loop ({endpoint})", endpoint, messages, seconds, requests=len(bodies))


# --- the send path without Kafka --------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class NullOutput:
    def __init__(self) -> None:
        self.count = 0

    async def send(self, topic: str, key: bytes, value: bytes) -> Awaitable[Any]:
        self.count += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def bench_config(redis_url: str, batch_size: int, in_flight: int, **changes: Any) -> Any:
    from detector.send.config import SendConfig, SendTopics

    tag = uuid.uuid4().hex[:8]
    return SendConfig(
        topics=SendTopics(
            decisions=f"bench-{tag}.decisions",
            feedback=f"bench-{tag}.feedback",
            outcomes=f"bench-{tag}.outcomes",
        ),
        ledger_url=redis_url,
        ledger_prefix=f"bench:{tag}:",
        ledger_ttl=3600,
        rate=1_000_000.0,
        batch_size=batch_size,
        max_in_flight=in_flight,
        metrics_port=0,
        partitions=4,
        replication=1,
        # A 500 is looked up in 8x8's log before it is retried; production waits 5 s for 8x8 to finish
        # the request first, which would measure the wait, not the worker.
        lookup_delay=0.05,
        lookup_poll=0.02,
        **changes,
    )


def counted(metrics: Any) -> tuple[int, int]:
    requests = retries = 0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "detector_send_8x8_requests_total":
                requests += int(sample.value)
            elif sample.name == "detector_send_retries_total":
                retries += int(sample.value)
    return requests, retries


async def pipeline(
    base_url: str, redis_url: str, messages: int, batch_size: int, in_flight: int, label: str
) -> Row:
    from detector.send import NO_RETRIES, ApiKey, EightByEightClient, EightByEightConfig
    from detector.send.ledger import SendLedger
    from detector.send.metrics import SendMetrics
    from detector.send.pipeline import SendPipeline
    from detector.send.worker import ROUNDS_IN_FLIGHT

    config = bench_config(redis_url, batch_size, in_flight)
    vendor = EightByEightConfig(
        SUB_ACCOUNT, ApiKey(API_KEY), base_url=base_url, max_connections=max(20, in_flight)
    )
    tag = uuid.uuid4().hex[:8]
    records = [
        FakeRecord(config.topics.decisions, 0, n, None, orjson.dumps(decision(n, tag)))
        for n in range(messages)
    ]
    metrics = SendMetrics()
    output = NullOutput()
    ledger = SendLedger.from_url(redis_url, prefix=config.ledger_prefix, ttl=config.ledger_ttl)
    size = config.round_size
    rounds = asyncio.Semaphore(ROUNDS_IN_FLIGHT)  # as many rounds at once as the worker runs

    async def one_round(chunk: list[FakeRecord]) -> None:
        async with rounds:
            _, rewind = await sender.handle(chunk)
        assert not rewind, "every record of a round is finished"

    async with EightByEightClient(vendor, retry=NO_RETRIES) as client:
        sender = SendPipeline(config, client, ledger, output, metrics)
        started = time.perf_counter()
        await asyncio.gather(
            *(one_round(records[start : start + size]) for start in range(0, messages, size))
        )
        seconds = time.perf_counter() - started
    await ledger.close()
    requests, retries = counted(metrics)
    endpoint = "single" if batch_size == 1 else "batch"
    sent = int(metrics.registry.get_sample_value("detector_send_outcomes_total", {"status": "sent"}) or 0)
    row = Row(f"send pipeline ({endpoint}){label}", endpoint, messages, seconds, requests, retries)
    if sent != messages:
        row.notes.append(f"{messages - sent} not sent")
    return row


# --- the whole worker, with Kafka -------------------------------------------------------------------


async def worker(
    base_url: str, redis_url: str, bootstrap: str, messages: int, batch_size: int, in_flight: int
) -> Row:
    from aiokafka import AIOKafkaProducer

    from detector.kafka.topics import ensure_topics
    from detector.send import ApiKey, EightByEightConfig
    from detector.send.worker import SendWorker

    config = bench_config(
        redis_url,
        batch_size,
        in_flight,
        brokers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        consume_feedback=False,
        session_timeout=6.0,
        heartbeat_interval=0.5,
    )
    await ensure_topics(config.bootstrap, config.topics.all(), config.partitions, 1)
    tag = uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                config.topics.decisions, orjson.dumps(decision(n, tag)), key=f"{tag}-{n}".encode()
            )
            for n in range(messages)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    vendor = EightByEightConfig(SUB_ACCOUNT, ApiKey(API_KEY), base_url=base_url)
    running = SendWorker(config, vendor)
    task = asyncio.ensure_future(running.run())

    def sent() -> float:
        return (
            running.metrics.registry.get_sample_value("detector_send_outcomes_total", {"status": "sent"}) or 0
        )

    deadline = time.monotonic() + 300
    while not running.assigned:
        await asyncio.sleep(0.005)
    started = time.perf_counter()
    while sent() < messages and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.005)
    seconds = time.perf_counter() - started
    running.stop()
    await task
    requests, retries = counted(running.metrics)
    endpoint = "single" if batch_size == 1 else "batch"
    row = Row(f"worker with Kafka ({endpoint})", endpoint, messages, seconds, requests, retries)
    if sent() < messages:
        row.notes.append(f"only {int(sent())} sent")
    return row


# --- running it all ---------------------------------------------------------------------------------


async def run(
    args: argparse.Namespace, redis_url: str, bootstrap: str | None, clean: str, faulty: str
) -> None:
    c, b = args.in_flight, args.batch_size
    scenarios: list[Callable[[], Awaitable[Row]]] = [
        lambda: bare(clean, args.single, 1, c),
        lambda: pipeline(clean, redis_url, args.single, 1, c, ""),
        lambda: bare(clean, args.batched, b, c),
        lambda: pipeline(clean, redis_url, args.batched, b, c, ""),
        lambda: pipeline(faulty, redis_url, args.single, 1, c, " + faults"),
        lambda: pipeline(faulty, redis_url, args.batched, b, c, " + faults"),
    ]
    if bootstrap:
        scenarios += [
            lambda: worker(clean, redis_url, bootstrap, args.single, 1, c),
            lambda: worker(clean, redis_url, bootstrap, args.batched, b, c),
        ]
    await pipeline(clean, redis_url, 200, 1, c, " warm-up")  # imports, connections, scripts loaded
    # Rounds interleave the rows, so a burst of load from elsewhere on the machine hits them all alike;
    # each row reports its median round.
    runs: list[list[Row]] = [[] for _ in scenarios]
    for round_no in range(1, args.repeat + 1):
        for index, scenario in enumerate(scenarios):
            row = await scenario()
            runs[index].append(row)
            print(
                f"  [{round_no}/{args.repeat}] {row.name}: {row.rate:,.0f} msg/s", file=sys.stderr, flush=True
            )
    rows = [sorted(done, key=lambda r: r.rate)[len(done) // 2] for done in runs]
    spread = {
        id(row): (min(r.rate for r in done), max(r.rate for r in done))
        for row, done in zip(rows, runs, strict=True)
    }
    ceiling = {row.endpoint: row.rate for row in rows if row.name.startswith("bare")}

    print(
        "\nsend worker vs bare HTTP to the 8x8 double (separate processes); "
        f"python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {c} requests in flight, batches of {b}; "
        f"median of {args.repeat}"
    )
    print(
        f"{'':36} {'messages':>8} {'seconds':>7} {'msg/s':>7} {'(min-max)':>15} {'vs bare':>7} "
        f"{'requests':>8} {'retries':>7}"
    )
    for row in rows:
        low, high = spread[id(row)]
        ratio = row.rate / ceiling[row.endpoint] if ceiling.get(row.endpoint) else 0.0
        print(
            f"{row.name:36} {row.messages:8d} {row.seconds:7.2f} {row.rate:7,.0f} "
            f"{f'({low:,.0f}-{high:,.0f})':>15} "
            f"{ratio:7.2f} {row.requests:8d} {row.retries:7d}  {'; '.join(row.notes)}"
        )
    if not bootstrap:
        print("(worker-with-Kafka rows skipped: --no-kafka)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=2000, help="messages for the single-endpoint rows")
    parser.add_argument("--batched", type=int, default=20_000, help="messages for the batch rows")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every row (the median is shown)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--no-kafka", action="store_true", help="skip the rows that need a Kafka broker")
    parser.add_argument("--serve-double", choices=["none", "mixed"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_double:
        serve_double(args.serve_double, args.seed)
        return

    from detector.testing.services import KafkaBroker, RedisServer

    logging.basicConfig(level=logging.ERROR)  # failed sends are counted in the table, not logged

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(RedisServer(workdir / "redis")).url
        bootstrap = None
        if not args.no_kafka:
            bootstrap = (
                os.environ.get("KAFKA_BOOTSTRAP")
                or stack.enter_context(KafkaBroker(workdir / "kafka")).bootstrap
            )
        clean = stack.enter_context(double_process("none"))
        faulty = stack.enter_context(double_process("mixed"))
        asyncio.run(run(args, redis_url, bootstrap, clean, faulty))


if __name__ == "__main__":
    main()
