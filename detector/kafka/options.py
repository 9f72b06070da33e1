"""Command-line options of the Kafka workers: every setting a flag with its environment variable, and the
options both workers share (brokers, group, topic creation, client timings, the metrics/health port)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from detector.kafka.settings import DEFAULT_BROKERS

F = TypeVar("F", bound=Callable[..., Any])
Option = Callable[..., Callable[[F], F]]


def setting_options(env: Mapping[str, str]) -> Callable[..., Any]:
    """An `option(*decls, setting=..., help=..., **click_kwargs)` whose variable is `env[setting]`, shown in
    the help."""

    def option(*decls: str, setting: str, help: str, **kwargs: Any) -> Any:
        variable = env[setting]
        return click.option(
            *decls, setting, envvar=variable, help=f"{help} [env: {variable}]", show_default=True, **kwargs
        )

    return option


def kafka_options(
    env: Mapping[str, str], *, group: str, group_help: str, metrics_port: int
) -> Callable[[F], F]:
    """The options of `detector.kafka.settings.KafkaSettings`, with this worker's group and port."""
    option = setting_options(env)
    options = [
        option(
            "--brokers", setting="brokers", default=DEFAULT_BROKERS, help="Bootstrap servers: HOST:PORT,..."
        ),
        option("--group-id", setting="group_id", default=group, help=group_help),
        option(
            "--partitions",
            setting="partitions",
            default=12,
            type=click.IntRange(1, 10_000),
            help="Partitions of topics this worker creates (existing topics are left alone).",
        ),
        option(
            "--replication",
            setting="replication",
            default=None,
            type=click.IntRange(1, 16),
            help="Replication factor of topics this worker creates. [default: min(3, brokers)]",
        ),
        option(
            "--offset-reset",
            setting="offset_reset",
            default="earliest",
            type=click.Choice(["earliest", "latest"]),
            help="Where a new consumer group starts.",
        ),
        option(
            "--session-timeout",
            setting="session_timeout",
            default=30.0,
            type=click.FloatRange(6.0, 1800.0),
            help="Seconds without heartbeat before a worker's partitions move to the others.",
        ),
        option(
            "--heartbeat-interval",
            setting="heartbeat_interval",
            default=3.0,
            type=click.FloatRange(0.1, 600.0),
            help="Seconds between Kafka heartbeats (at most a third of the session timeout).",
        ),
        option(
            "--metrics-port",
            setting="metrics_port",
            default=metrics_port,
            type=click.IntRange(0, 65535),
            help="Port of /metrics, /healthz and /readyz; 0 turns it off.",
        ),
        option(
            "--metrics-host",
            setting="metrics_host",
            default="0.0.0.0",
            help="Address the metrics port binds.",
        ),
    ]

    def apply(command: F) -> F:
        for add in reversed(options):
            command = add(command)
        return command

    return apply
