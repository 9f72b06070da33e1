"""Duplicates and strandings of the send worker when 8x8 misbehaves and the worker is killed (issue 9).

    KAFKA_BOOTSTRAP=... REDIS_URL=... python -m bench.send_faults [--requests 300] [--kill-after 80]
        [--worker-path DIR]

The 8x8 double runs in this process; every sixth send request times out after 8x8 queued it, every sixth
(another) loses its answer after 8x8 queued it, every sixth (another) is dropped before 8x8 sees it. A
`detector send-worker` (the code under `--worker-path`, this checkout by default: point it at an older
checkout for a before/after) sends the decisions; once 8x8 holds `--kill-after` messages it is killed
with SIGKILL and a second worker takes over, the faults going on. When every request has an outcome (or
two minutes pass), the run reports:

* duplicates: SMS 8x8 queued more than once for one request_id (`--kill-after 0` shows the retries' share);
* strandings: requests never sent to 8x8 at all (no attempt) that ended without being sent;
* unsent: requests 8x8 never queued, whatever the reason; and the outcomes by status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from detector.kafka.topics import ensure_topics
from detector.testing.eightbyeight_double import BATCH, SEND, Drop, EightByEightDouble, Seen, Slow

REPO = Path(__file__).resolve().parents[1]
KEY = f"k8x8-{uuid.uuid4().hex}-bench"


def decision(request_id: str, n: int) -> dict[str, Any]:
    return {
        "type": "otp_decision",
        "request_id": request_id,
        "ts": "2026-11-23T08:00:00.000Z",
        "action": "allow",
        "verdict": "allow",
        "mode": "enforce",
        "score": 0.0,
        "reasons": [],
        "policy_version": "bench",
        "client_ip": f"203.0.113.{n % 250 + 1}",
        "phone": f"+6591{n:06d}",
        "message": {"text": f"Your code is {100000 + n}"},
    }


def sends(double: EightByEightDouble) -> list[Seen]:
    return [seen for seen in double.requests if seen.operation in (SEND, BATCH)]


def attempted(double: EightByEightDouble) -> set[str]:
    ids: set[str] = set()
    for seen in sends(double):
        messages = seen.body.get("messages", []) if seen.operation == BATCH else [seen.body]
        ids.update(str(message.get("clientMessageId")) for message in messages)
    return ids


async def worker(env: dict[str, str], path: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "detector", "send-worker", env={**env, "PYTHONPATH": str(path)},
            cwd=path, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    bootstrap, redis_url = os.environ["KAFKA_BOOTSTRAP"], os.environ["REDIS_URL"]
    tag = uuid.uuid4().hex[:8]
    decisions, feedback, outcomes = (f"faults-{tag}.{name}" for name in ("decisions", "feedback", "outcomes"))
    await ensure_topics(bootstrap, [decisions, feedback, outcomes], 2, 1)
    ids = [f"fault-{tag}-{i}" for i in range(args.requests)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(
            *[
                await producer.send(decisions, orjson.dumps(decision(rid, i)), key=rid.encode())
                for i, rid in enumerate(ids)
            ]
        )
    finally:
        await producer.stop()

    async with EightByEightDouble(api_key=KEY) as double:

        def every(k: int) -> Any:
            return lambda seen: seen.operation in (SEND, BATCH) and len(sends(double)) % 6 == k

        double.add_rule(Slow(1.0, after_accepting=True), when=every(1))
        double.add_rule(Drop(after_accepting=True), when=every(3))
        double.add_rule(Drop(), when=every(5))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DETECTOR_", "EIGHTBYEIGHT_"))}
        env.update(
            {
                "DETECTOR_KAFKA_BROKERS": bootstrap,
                "DETECTOR_SEND_GROUP_ID": f"faults-{tag}",
                "DETECTOR_TOPIC_DECISIONS": decisions,
                "DETECTOR_TOPIC_FEEDBACK": feedback,
                "DETECTOR_TOPIC_OUTCOMES": outcomes,
                "DETECTOR_SEND_LEDGER": redis_url,
                "DETECTOR_SEND_LEDGER_PREFIX": f"faults:{tag}:",
                "DETECTOR_SEND_METRICS_PORT": "0",
                "DETECTOR_KAFKA_SESSION_TIMEOUT": "6",
                "DETECTOR_KAFKA_HEARTBEAT_INTERVAL": "0.5",
                "DETECTOR_SEND_RATE": "150",
                "DETECTOR_SEND_BATCH_SIZE": "20",
                "DETECTOR_SEND_MAX_IN_FLIGHT": "4",
                "DETECTOR_SEND_OWNER_TTL": "2",
                "DETECTOR_SEND_CLAIM_WAIT": "10",
                "DETECTOR_SEND_LOOKUP_DELAY": "0.05",
                "DETECTOR_SEND_LOOKUP_POLL": "0.02",
                "EIGHTBYEIGHT_SUBACCOUNT_ID": "acme-otp",
                "EIGHTBYEIGHT_API_KEY": KEY,
                "EIGHTBYEIGHT_BASE_URL": double.base_url,
                "EIGHTBYEIGHT_TIMEOUT": "0.5",
            }
        )
        log = Path(args.log)
        second = first = await worker(env, args.worker_path, log)
        killed_after = None
        if args.kill_after:
            deadline = time.monotonic() + 60
            while len(double.sent) < args.kill_after and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            killed_after = len(double.sent)
            second = await worker(env, args.worker_path, log)
        found = await read_outcomes(bootstrap, outcomes, set(ids), timeout=120)
        second.send_signal(signal.SIGTERM)
        await second.wait()

        counts = Counter(sms.client_message_id or "" for sms in double.sent)
        tried = attempted(double)
        unsent = [rid for rid in ids if counts[rid] == 0]
        stranded = [rid for rid in unsent if rid not in tried]
        statuses = Counter(outcome.get("error") or outcome["status"] for outcome in found.values())
        print(f"worker code: {args.worker_path}")
        print(f"requests {len(ids)}, send requests {len(sends(double))}, log lookups {len(double.exports)}, "
              f"killed after {killed_after} queued" if killed_after is not None else "no kill")  # fmt: skip
        print(f"duplicates {sum(c - 1 for c in counts.values() if c > 1)} "
              f"(requests sent twice or more: {sum(1 for c in counts.values() if c > 1)})")  # fmt: skip
        missing = len(set(ids) - set(found))
        print(f"strandings {len(stranded)}, unsent {len(unsent)}, without an outcome {missing}")
        print(f"outcomes: {dict(statuses)}")


async def read_outcomes(bootstrap: str, topic: str, ids: set[str], timeout: float) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while not ids <= set(found) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    outcome = orjson.loads(record.value or b"{}")
                    found[outcome.get("request_id", "")] = outcome
    finally:
        await consumer.stop()
    return {rid: outcome for rid, outcome in found.items() if rid in ids}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--kill-after", type=int, default=80, help="SMS queued by 8x8 before the kill (0: no kill)"
    )
    parser.add_argument("--worker-path", type=Path, default=REPO, help="checkout whose worker runs")
    parser.add_argument("--log", default="/tmp/bench-send-faults.log", help="the workers' output")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
