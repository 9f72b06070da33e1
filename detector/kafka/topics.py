"""Topic names, message keys, and creating the topics the workers use.

Keys. Requests and feedback are keyed by the *number*: all events of one phone number land on one partition,
so one worker sees them in the order they were produced (which keeps a number's send-limit slots and retry
delays in request order). The detector never reads the key — every count lives in the shared store, so a
wrong or missing key costs ordering, not correctness — but producers should use `partition_key`: an
HMAC-SHA256 of the E.164 number under a secret of the backend's own, 32 hex characters. A plain hash of a
phone number is no protection (the number space is small enough to enumerate), and the raw number would
spread personal data into every tool that shows keys. Feedback is keyed with the number of the request it
answers (the backend knows it: it sent the code there). Use one partitioner for both topics — the Java
client's default, murmur2, which Faust, aiokafka and kafka-python also use (librdkafka clients such as kcat
need `-X topic.partitioner=murmur2_random` to agree).

Challenge results (`otp_challenge`) are keyed like their request. Decisions are keyed by `request_id`; dead
letters and retried events keep the key of the input message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass, fields

from detector.errors import UnavailableError

log = logging.getLogger(__name__)

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicNames:
    requests: str = "otp.requests"
    feedback: str = "otp.feedback"
    decisions: str = "otp.decisions"
    dead_letters: str = "otp.dead-letters"
    feedback_retry: str = "otp.feedback-retry"
    challenges: str = "otp.challenges"

    def __post_init__(self) -> None:
        for item in fields(self):
            check_topic_name(item.name, getattr(self, item.name))
        inputs = {self.requests, self.feedback, self.feedback_retry, self.challenges}
        outputs = [self.decisions, self.dead_letters]
        if len(set(outputs)) != 2 or inputs & set(outputs):
            raise ValueError("the decisions and dead-letter topics must differ from each other and inputs")
        if self.feedback_retry in (self.requests, self.feedback, self.challenges):
            raise ValueError("the feedback retry topic must be a topic of its own")

    def all(self) -> list[str]:
        return list(dict.fromkeys(getattr(self, item.name) for item in fields(self)))


def check_topic_name(role: str, name: str) -> None:
    """ValueError unless `name` is a legal Kafka topic name (`role` says which setting it is)."""
    if not _LEGAL.match(name) or name in (".", ".."):
        raise ValueError(f"topic name for {role} is not a legal Kafka topic name: {name!r}")


def partition_key(e164: str, secret: bytes) -> bytes:
    """The key producers should give a request and its feedback: HMAC-SHA256 of the E.164 number, hex."""
    return hmac.new(secret, e164.encode(), hashlib.sha256).hexdigest()[:32].encode()


class TopicError(UnavailableError):
    pass


async def ensure_topics(
    bootstrap: list[str] | str,
    names: list[str],
    partitions: int,
    replication: int | None = None,
    timeout: float = 30.0,
) -> dict[str, int]:
    """Create the topics in `names` that do not exist; their partition counts, once every one has leaders.

    Existing topics are left as they are (a different partition count is reported, not changed). Never asks
    the broker about a missing topic by name, which would auto-create it with the broker's defaults.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            if replication is None:
                brokers = len((await admin.describe_cluster()).get("brokers", [])) or 1
                replication = min(3, brokers)
            response = await admin.create_topics(
                [
                    NewTopic(name, num_partitions=partitions, replication_factor=replication)
                    for name in missing
                ]
            )
            for name, code, *rest in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    message = rest[0] if rest else ""
                    raise TopicError(f"cannot create topic {name}: error {code} {message or ''}".strip())
                if code == 0:
                    log.info(
                        "created topic %s (%d partitions, replication %d)", name, partitions, replication
                    )
        return await _wait_for_leaders(admin, names, timeout)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: object, names: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topics(names)  # type: ignore[attr-defined]
        counts: dict[str, int] = {}
        for topic in described:
            parts = topic.get("partitions", [])
            if topic.get("error_code") == 0 and parts and all(p.get("leader", -1) >= 0 for p in parts):
                counts[topic["topic"]] = len(parts)
        if len(counts) == len(set(names)):
            return counts
        if time.monotonic() >= deadline:
            waiting = sorted(set(names) - set(counts))
            raise TopicError(f"topics without a leader after {timeout:.0f}s: {', '.join(waiting)}")
        await asyncio.sleep(0.1)
