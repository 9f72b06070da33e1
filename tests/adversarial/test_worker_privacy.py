"""A real `detector worker` on the real broker, logging at DEBUG: its whole output carries no number, no OTP
text and no client address, and a poison message between good requests neither stops it nor leaks."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from detector.kafka.topics import ensure_topics
from tests.test_stream import (
    KAFKA,
    TopicReader,
    WorkerProcess,
    as_json,
    decisions_by_id,
    have_ids,
    produce,
    request_event,
    unique_topics,
    worker_env,
)

OTP = "Your code is 482913"
CLIENT = "198.51.100.213"


@KAFKA
@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_worker_at_debug_logs_nothing_personal(
    kafka_bootstrap: str, tmp_path: Path, fmt: str
) -> None:
    topics = unique_topics("privacy")
    await ensure_topics(kafka_bootstrap, topics.all(), 1, 1)
    group = f"privacy-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka_bootstrap, "memory://", topics, group,
                     DETECTOR_LOG_LEVEL="DEBUG", DETECTOR_LOG_FORMAT=fmt)  # fmt: skip
    worker = WorkerProcess("worker", tmp_path, env)
    tag = uuid.uuid4().hex[:6]
    phones = [f"+447400{i}12345" for i in range(5)]  # five blocks: no number-block rule fires
    requests = [request_event(f"{tag}-{i}", phone, client_ip=CLIENT, message={"text": OTP, "source": "Acme"})
                for i, phone in enumerate(phones)]  # fmt: skip
    poison = b'{"type":"otp_request","request_id":"' + tag.encode() + b'-deep","phone":"' + phones[0].encode()
    poison += b'","x":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    garbage = b"not json " + phones[1].encode() + b" " + OTP.encode()
    try:
        await worker.wait_ready()
        messages = [(b"k", as_json(requests[0])), (b"k", poison), (b"k", garbage)]
        messages += [(b"k", as_json(event)) for event in requests[1:]]
        await produce(kafka_bootstrap, topics.requests, messages)
        ids = {event["request_id"] for event in requests} | {f"{tag}-deep"}
        async with (
            TopicReader(kafka_bootstrap, topics.decisions) as decisions,
            TopicReader(kafka_bootstrap, topics.dead_letters) as dead,
        ):
            await decisions.wait_for(have_ids(ids), 60, "every request decided", alive=worker.assert_running)
            await dead.wait_for(lambda records: len(records) >= 1, 30, "the dead letter")
            found = decisions_by_id(await decisions.drain())
            letters = [orjson.loads(record.value) for record in await dead.drain()]
        worker.assert_running()
    finally:
        worker.close()

    assert found[f"{tag}-deep"][0]["reasons"][0]["code"] == "invalid_request"
    assert all(found[event["request_id"]][0]["action"] == "allow" for event in requests)
    (letter,) = letters
    assert letter["size"] == len(garbage) and "raw_b64" not in letter
    log = worker.log()
    assert "Sending (key=" in log, "aiokafka's per-message DEBUG line is there, redacted"
    for secret in [*(phone[1:] for phone in phones), "482913", CLIENT]:
        assert secret not in log, f"{secret} in the worker's DEBUG log"
        assert secret not in orjson.dumps(letter).decode()
