"""The options both Kafka workers share (`detector.kafka.settings.KafkaSettings`): brokers, consumer group,
topic creation, client timings and the metrics/health port, declared once with `options.option`.

Each worker names its own group and metrics-port variables (the two kinds of worker run side by side);
the rest are read alike by both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from detector.cli.options import option
from detector.kafka.settings import DEFAULT_BROKERS

F = TypeVar("F", bound=Callable[..., Any])


def kafka_options(
    *, group: str, group_env: str, group_help: str, metrics_port: int, metrics_port_env: str
) -> Callable[[F], F]:
    """Decorate a worker command with the `KafkaSettings` options, with its group and port."""
    options = [
        option(
            "--brokers",
            "brokers",
            env="DETECTOR_KAFKA_BROKERS",
            default=DEFAULT_BROKERS,
            help="Bootstrap servers: HOST:PORT,...",
        ),
        option("--group-id", "group_id", env=group_env, default=group, help=group_help),
        option(
            "--partitions",
            "partitions",
            env="DETECTOR_TOPIC_PARTITIONS",
            default=12,
            type=click.IntRange(1, 10_000),
            help="Partitions of topics this worker creates (existing topics are left alone).",
        ),
        option(
            "--replication",
            "replication",
            env="DETECTOR_TOPIC_REPLICATION",
            default=None,
            type=click.IntRange(1, 16),
            help="Replication factor of topics this worker creates. [default: min(3, brokers)]",
        ),
        option(
            "--offset-reset",
            "offset_reset",
            env="DETECTOR_KAFKA_OFFSET_RESET",
            default="earliest",
            type=click.Choice(["earliest", "latest"]),
            help="Where a new consumer group starts.",
        ),
        option(
            "--session-timeout",
            "session_timeout",
            env="DETECTOR_KAFKA_SESSION_TIMEOUT",
            default=30.0,
            type=click.FloatRange(6.0, 1800.0),
            help="Seconds without heartbeat before a worker's partitions move to the others.",
        ),
        option(
            "--heartbeat-interval",
            "heartbeat_interval",
            env="DETECTOR_KAFKA_HEARTBEAT_INTERVAL",
            default=3.0,
            type=click.FloatRange(0.1, 600.0),
            help="Seconds between Kafka heartbeats (at most a third of the session timeout).",
        ),
        option(
            "--metrics-port",
            "metrics_port",
            env=metrics_port_env,
            default=metrics_port,
            type=click.IntRange(0, 65535),
            help="Port of /metrics, /healthz and /readyz; 0 turns it off.",
        ),
        option(
            "--metrics-host",
            "metrics_host",
            env="DETECTOR_METRICS_HOST",
            default="0.0.0.0",
            help="Address the metrics port binds.",
        ),
    ]

    def apply(command: F) -> F:
        for add in reversed(options):
            command = add(command)
        return command

    return apply
