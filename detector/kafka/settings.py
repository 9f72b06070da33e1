"""The settings every Kafka worker has: brokers, consumer group, topic creation, client timings and the
metrics/health endpoint. Each worker's config extends `KafkaSettings` with its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from detector.kafka.brokers import bootstrap_servers

OffsetReset = Literal["earliest", "latest"]
DEFAULT_BROKERS = "localhost:9092"


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    brokers: str = DEFAULT_BROKERS
    group_id: str = "sms-pumping"
    # Topics that do not exist yet are created with this many partitions (existing ones are left alone);
    # None replication: min(3, brokers in the cluster).
    partitions: int = 12
    replication: int | None = None
    offset_reset: OffsetReset = "earliest"
    session_timeout: float = 30.0
    heartbeat_interval: float = 3.0
    metrics_port: int = 0  # 0: no /metrics, /healthz, /readyz
    metrics_host: str = "0.0.0.0"

    @property
    def bootstrap(self) -> list[str]:
        """aiokafka's form, HOST:PORT."""
        return bootstrap_servers(self.brokers)

    def kafka_problems(self) -> list[str]:
        """What is wrong with these settings, one sentence each."""
        problems = []
        if self.partitions < 1 or (self.replication is not None and self.replication < 1):
            problems.append("partitions and replication must be at least 1")
        if self.heartbeat_interval * 3 > self.session_timeout:
            problems.append("the heartbeat interval must be at most a third of the session timeout")
        if not 0 <= self.metrics_port <= 65535:
            problems.append("metrics port must be 0 (off) to 65535")
        return problems
