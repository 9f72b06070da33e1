"""Settings of the Kafka worker: one frozen object built from flags and DETECTOR_* environment variables.

`detector worker --help` lists every flag with its variable; `ENV` below maps each setting to its variable so
the command, the tests and the README agree on the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from detector.kafka.brokers import bootstrap_servers, broker_urls
from detector.kafka.topics import TopicNames

OffsetReset = Literal["earliest", "latest"]

DEFAULT_BROKERS = "localhost:9092"
DEFAULT_STORE = "redis://localhost:6379/0"
DEFAULT_GROUP = "sms-pumping-detector"
DEFAULT_METRICS_PORT = 9108

ENV = {
    "brokers": "DETECTOR_KAFKA_BROKERS",
    "store_url": "DETECTOR_STORE",
    "policy_path": "DETECTOR_POLICY",
    "shadow": "DETECTOR_SHADOW",
    "group_id": "DETECTOR_GROUP_ID",
    "requests": "DETECTOR_TOPIC_REQUESTS",
    "feedback": "DETECTOR_TOPIC_FEEDBACK",
    "decisions": "DETECTOR_TOPIC_DECISIONS",
    "dead_letters": "DETECTOR_TOPIC_DEAD_LETTERS",
    "feedback_retry": "DETECTOR_TOPIC_FEEDBACK_RETRY",
    "partitions": "DETECTOR_TOPIC_PARTITIONS",
    "replication": "DETECTOR_TOPIC_REPLICATION",
    "batch_size": "DETECTOR_BATCH_SIZE",
    "batch_wait": "DETECTOR_BATCH_WAIT",
    "metrics_port": "DETECTOR_METRICS_PORT",
    "metrics_host": "DETECTOR_METRICS_HOST",
    "feedback_retry_delay": "DETECTOR_FEEDBACK_RETRY_DELAY",
    "feedback_retries": "DETECTOR_FEEDBACK_RETRIES",
    "unavailable_backoff_max": "DETECTOR_UNAVAILABLE_BACKOFF_MAX",
    "unavailable_patience": "DETECTOR_UNAVAILABLE_PATIENCE",
    "offset_reset": "DETECTOR_KAFKA_OFFSET_RESET",
    "session_timeout": "DETECTOR_KAFKA_SESSION_TIMEOUT",
    "heartbeat_interval": "DETECTOR_KAFKA_HEARTBEAT_INTERVAL",
    "rebalance_timeout": "DETECTOR_KAFKA_REBALANCE_TIMEOUT",
    "commit_interval": "DETECTOR_KAFKA_COMMIT_INTERVAL",
    "data_dir": "DETECTOR_DATA_DIR",
}


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Everything `detector worker` needs; the defaults are the production ones."""

    brokers: str = DEFAULT_BROKERS
    store_url: str = DEFAULT_STORE
    policy_path: str | None = None
    shadow: bool = False
    group_id: str = DEFAULT_GROUP
    topics: TopicNames = field(default_factory=TopicNames)
    # Topics that do not exist yet are created with this many partitions (existing ones are left alone).
    partitions: int = 12
    # None: min(3, brokers in the cluster).
    replication: int | None = None
    batch_size: int = 500
    batch_wait: float = 0.01
    metrics_port: int = DEFAULT_METRICS_PORT
    metrics_host: str = "0.0.0.0"
    # Feedback for a request the store does not know yet goes through the retry topic this many times,
    # this long apart, then is dropped (counted in detector_feedback_dropped_total).
    feedback_retry_delay: float = 5.0
    feedback_retries: int = 12
    # Feedback the store did not answer: retried in place with exponential backoff up to this many seconds
    # between tries, for at most `unavailable_patience` seconds, then handed to the retry topic.
    unavailable_backoff_max: float = 5.0
    unavailable_patience: float = 30.0
    offset_reset: OffsetReset = "earliest"
    session_timeout: float = 30.0
    heartbeat_interval: float = 3.0
    rebalance_timeout: float = 60.0
    commit_interval: float = 2.8
    # A decision Kafka does not acknowledge within this time fails its batch (and the worker).
    producer_timeout: float = 120.0
    data_dir: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 1:
            problems.append("batch size must be at least 1")
        if not 0 < self.batch_wait <= 10:
            problems.append("batch wait must be between 0 and 10 seconds")
        if self.partitions < 1:
            problems.append("partitions must be at least 1")
        if self.replication is not None and self.replication < 1:
            problems.append("replication must be at least 1")
        if self.feedback_retries < 0 or self.feedback_retry_delay <= 0:
            problems.append("feedback retries must be >= 0 and the retry delay > 0")
        if self.heartbeat_interval * 3 > self.session_timeout:
            problems.append("the heartbeat interval must be at most a third of the session timeout")
        if not 0 <= self.metrics_port <= 65535:
            problems.append("metrics port must be 0 (off) to 65535")
        if problems:
            raise ValueError("; ".join(problems))

    def with_changes(self, **changes: Any) -> StreamConfig:
        return replace(self, **changes)

    @property
    def broker_urls(self) -> list[str]:
        """Faust's form, kafka://HOST:PORT."""
        return broker_urls(self.brokers)

    @property
    def bootstrap(self) -> list[str]:
        """aiokafka's form, HOST:PORT."""
        return bootstrap_servers(self.brokers)

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
        }
