"""Settings of the send worker (`detector send-worker`): one frozen object from flags and the environment.

Names follow the request worker's (:mod:`detector.stream.config`): settings both workers share keep the same
variable (``DETECTOR_KAFKA_BROKERS``, ``DETECTOR_TOPIC_DECISIONS``, ``DETECTOR_TOPIC_FEEDBACK``, the
``DETECTOR_KAFKA_*`` client timings, topic partitions and replication); what only the send worker has is
``DETECTOR_SEND_*``, plus ``DETECTOR_TOPIC_OUTCOMES`` for the topic it writes. The 8x8 account itself
(sub-account, key, region) is 8x8's own ``EIGHTBYEIGHT_*`` variables, read by
:meth:`detector.send.EightByEightConfig.from_env`. Each variable is declared next to its flag, in
`detector/cli/send_worker.py`, or `detector/cli/kafka_options.py` for those both workers share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from detector.kafka.settings import KafkaSettings
from detector.kafka.topics import TopicNames, check_topic_name
from detector.send.retry import RetryPolicy

_STREAM_TOPICS = TopicNames()
DEFAULT_GROUP = "sms-pumping-send"
DEFAULT_LEDGER = "redis://localhost:6379/0"
DEFAULT_LEDGER_PREFIX = "detector:send:"
DEFAULT_OUTCOMES_TOPIC = "otp.outcomes"
DEFAULT_METRICS_PORT = 9109  # the detection worker uses 9108


@dataclass(frozen=True, slots=True)
class SendTopics:
    """What the send worker reads (decisions, feedback) and writes (outcomes)."""

    decisions: str = _STREAM_TOPICS.decisions
    feedback: str = _STREAM_TOPICS.feedback
    outcomes: str = DEFAULT_OUTCOMES_TOPIC

    def __post_init__(self) -> None:
        for role in ("decisions", "feedback", "outcomes"):
            check_topic_name(role, getattr(self, role))
        if self.outcomes in (self.decisions, self.feedback):
            raise ValueError("the outcomes topic must differ from the decisions and feedback topics")
        if self.decisions == self.feedback:
            raise ValueError("the decisions and feedback topics must differ")

    def all(self) -> list[str]:
        return [self.decisions, self.feedback, self.outcomes]


@dataclass(frozen=True, slots=True)
class SendConfig(KafkaSettings):
    """Everything `detector send-worker` needs but the 8x8 account; the defaults are the production ones."""

    group_id: str = DEFAULT_GROUP
    metrics_port: int = DEFAULT_METRICS_PORT
    topics: SendTopics = field(default_factory=SendTopics)
    # Read the feedback topic and report verified / failed OTPs to 8x8 (conversion tracking).
    consume_feedback: bool = True
    # The send ledger: request_id -> claim, outcome, umid. Its TTL must outlast any redelivery of a decision
    # (a consumer group's offsets are committed within seconds) and the wait for an OTP's feedback.
    ledger_url: str = DEFAULT_LEDGER
    ledger_prefix: str = DEFAULT_LEDGER_PREFIX
    ledger_ttl: float = 2 * 86400.0
    # Messages per second to 8x8 (every attempt counts, retries too), and how many may go at once.
    rate: float = 50.0
    burst: float | None = None  # None: one second's worth, at least one batch
    # Most messages in one batch request (1: always the single-message endpoint); how long to wait for
    # decisions to fill a round; how many 8x8 requests may be in flight at once.
    batch_size: int = 100
    batch_wait: float = 0.02
    max_in_flight: int = 8
    # Retries of 429, 5xx, timeouts and connection errors: exponential backoff with full jitter, never
    # sooner than Retry-After; at most `retry_attempts` attempts within `retry_max_elapsed` seconds.
    retry_attempts: int = 4
    retry_max_elapsed: float = 20.0
    retry_base_delay: float = 0.25
    retry_max_delay: float = 8.0
    # After a failure that may have queued the message anyway (500/502/504, a read timeout, a dropped
    # connection) nothing is resent blindly: 8x8's message log is searched for the clientMessageIds, after
    # `lookup_delay` seconds (8x8 may still be working on the request), polling the export job every
    # `lookup_poll` s for up to `lookup_patience` s. Found: sent, with its umid; absent: sent again (a
    # retry); no answer, or `lookup` off: failed / in_doubt. A dead worker's claim is looked up the same way.
    lookup: bool = True
    lookup_delay: float = 5.0
    lookup_poll: float = 1.0
    lookup_patience: float = 60.0
    # A worker refreshes a liveness key this often-ish (ttl / 4); a claim whose owner's key has expired
    # belongs to a dead worker. A live owner's claim is waited for at most `claim_wait` seconds.
    owner_ttl: float = 10.0
    claim_wait: float = 35.0

    def __post_init__(self) -> None:
        problems = self.kafka_problems()
        if not self.ledger_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append(
                f"the ledger must be a redis://, rediss:// or unix:// URL, not {self.ledger_url!r}"
            )
        if self.ledger_ttl < 3600:
            problems.append("the ledger TTL must be at least an hour (3600 s)")
        if not self.ledger_prefix or "{" in self.ledger_prefix or "}" in self.ledger_prefix:
            problems.append("the ledger key prefix must not be empty nor hold { or } (keys carry a hash tag)")
        if not 0 < self.rate < math.inf:
            problems.append("the send rate must be a positive number of messages per second")
        if self.burst is not None and self.burst < 1:
            problems.append("the burst must be at least 1 message")
        if not 1 <= self.batch_size <= 10_000:
            problems.append("the batch size must be between 1 and 10000 (8x8's limit)")
        if not 0 < self.batch_wait <= 10:
            problems.append("the batch wait must be between 0 and 10 seconds")
        if self.max_in_flight < 1:
            problems.append("at least one request must be allowed in flight")
        if not (0 <= self.lookup_delay <= 600 and 0 < self.lookup_poll <= 60 and self.lookup_patience > 0):
            problems.append("lookup delay must be 0 to 600 s, poll 0 to 60 s, patience more than 0 s")
        if self.owner_ttl < 1 or self.claim_wait < 0:
            problems.append("the owner TTL must be at least 1 second and the claim wait not negative")
        try:
            self.retry_policy  # noqa: B018 - validates the retry settings
        except ValueError as exc:
            problems.append(f"retry settings: {exc}")
        if problems:
            raise ValueError("; ".join(problems))

    def with_changes(self, **changes: Any) -> SendConfig:
        return replace(self, **changes)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.retry_attempts,
            max_elapsed=self.retry_max_elapsed,
            base_delay=self.retry_base_delay,
            max_delay=self.retry_max_delay,
        )

    @property
    def effective_burst(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.rate)

    @property
    def round_size(self) -> int:
        """Most decisions taken from Kafka per round: enough to keep every request slot busy (at least 64,
        for single sends), but no more than the rate limit lets out in about five seconds."""
        wanted = max(64, self.batch_size * self.max_in_flight)
        return max(self.batch_size, min(wanted, math.ceil(self.rate * 5)))
