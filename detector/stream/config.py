"""Settings of the Kafka worker: one frozen object built from flags and DETECTOR_* environment variables.

`detector worker --help` lists every flag with its variable (declared next to the flag, in
`detector/cli/worker.py`, or `detector/cli/kafka_options.py` for those both workers share).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from detector.kafka.brokers import broker_urls
from detector.kafka.settings import KafkaSettings
from detector.kafka.topics import TopicNames

DEFAULT_STORE = "redis://localhost:6379/0"
DEFAULT_GROUP = "sms-pumping-detector"
DEFAULT_METRICS_PORT = 9108


@dataclass(frozen=True, slots=True)
class StreamConfig(KafkaSettings):
    """Everything `detector worker` needs; the defaults are the production ones."""

    group_id: str = DEFAULT_GROUP
    metrics_port: int = DEFAULT_METRICS_PORT
    store_url: str = DEFAULT_STORE
    policy_path: str | None = None
    shadow: bool = False
    topics: TopicNames = field(default_factory=TopicNames)
    batch_size: int = 500
    # A batch's first message waits this long at most (Faust's take, which this replaced, polled every 10 ms,
    # so a message on a quiet topic waited 5 ms on average; at 2,000/s 5 and 10 ms measured alike).
    batch_wait: float = 0.005
    # Feedback for a request the store does not know yet goes through the retry topic this many times,
    # this long apart, then is dropped (counted in detector_feedback_dropped_total).
    feedback_retry_delay: float = 5.0
    feedback_retries: int = 12
    # Feedback the store did not answer: retried in place with exponential backoff up to this many seconds
    # between tries, for at most `unavailable_patience` seconds, then handed to the retry topic.
    unavailable_backoff_max: float = 5.0
    unavailable_patience: float = 30.0
    rebalance_timeout: float = 60.0
    commit_interval: float = 2.8
    # A decision Kafka does not acknowledge within this time fails its batch (and the worker).
    producer_timeout: float = 120.0
    data_dir: str | None = None

    def __post_init__(self) -> None:
        problems = self.kafka_problems()
        if self.batch_size < 1:
            problems.append("batch size must be at least 1")
        if not 0 < self.batch_wait <= 10:
            problems.append("batch wait must be between 0 and 10 seconds")
        if self.feedback_retries < 0 or self.feedback_retry_delay <= 0:
            problems.append("feedback retries must be >= 0 and the retry delay > 0")
        if problems:
            raise ValueError("; ".join(problems))

    def with_changes(self, **changes: Any) -> StreamConfig:
        return replace(self, **changes)

    @property
    def broker_urls(self) -> list[str]:
        """Faust's form, kafka://HOST:PORT."""
        return broker_urls(self.brokers)

    def faust_settings(self, data_dir: str) -> dict[str, Any]:
        """Keyword arguments for `faust.App`: no web server, no leader topic, no tables, our timeouts."""
        return {
            "broker": self.broker_urls,
            "datadir": data_dir,
            "web_enabled": False,
            "topic_disable_leader": True,
            "topic_allow_declare": False,
            "consumer_auto_offset_reset": self.offset_reset,
            "broker_session_timeout": self.session_timeout,
            "broker_heartbeat_interval": self.heartbeat_interval,
            "broker_rebalance_timeout": self.rebalance_timeout,
            "broker_commit_interval": self.commit_interval,
            "broker_max_poll_interval": max(self.rebalance_timeout, 300.0),
            # Faust's own producer stays idle: outputs go through `KafkaOutput`.
            "producer_acks": -1,
            "stream_buffer_maxsize": max(4096, self.batch_size * 4),
            "stream_wait_empty": True,
            "worker_redirect_stdouts": False,
            # Per-message sensor bookkeeping for Faust's web views, which are off (see detector.stream.lean).
            "Monitor": "detector.stream.lean:QuietMonitor",
        }
