"""`detector worker`: decide OTP requests from Kafka with the shared (Redis) store. Register with
``main.add_command(worker)``; ``python -m detector.commands_stream`` runs it on its own."""

from __future__ import annotations

import sys
from typing import Any

import click

from detector.kafka.options import kafka_options, setting_options
from detector.kafka.topics import TopicNames
from detector.stream.config import DEFAULT_GROUP, DEFAULT_METRICS_PORT, DEFAULT_STORE, ENV

_TOPICS = TopicNames()


_option = setting_options(ENV)


@click.command("worker", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@kafka_options(
    ENV,
    group=DEFAULT_GROUP,
    group_help="Consumer group (and Faust app id); workers with the same id share the partitions.",
    metrics_port=DEFAULT_METRICS_PORT,
)
@_option(
    "--store",
    setting="store_url",
    default=DEFAULT_STORE,
    help="Counters shared by every worker: redis://HOST:PORT/DB (memory:// only for one worker).",
)
@_option(
    "--policy",
    setting="policy_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Policy YAML merged over the default policy.",
)
@_option(
    "--shadow",
    setting="shadow",
    is_flag=True,
    default=False,
    help="Shadow mode: decide and count, but every action is allow.",
)
@_option("--topic-requests", setting="requests", default=_TOPICS.requests, help="otp_request input.")
@_option(
    "--topic-feedback",
    setting="feedback",
    default=_TOPICS.feedback,
    help="otp_feedback input (may equal the requests topic).",
)
@_option(
    "--topic-decisions",
    setting="decisions",
    default=_TOPICS.decisions,
    help="Decisions, keyed by request_id.",
)
@_option(
    "--topic-dead-letters",
    setting="dead_letters",
    default=_TOPICS.dead_letters,
    help="Unreadable input, with the error and the original bytes.",
)
@_option(
    "--topic-feedback-retry",
    setting="feedback_retry",
    default=_TOPICS.feedback_retry,
    help="Delay queue for feedback the store could not apply yet.",
)
@_option(
    "--batch-size",
    setting="batch_size",
    default=500,
    type=click.IntRange(1, 100_000),
    help="Most events per engine call (one store round trip).",
)
@_option(
    "--batch-wait",
    setting="batch_wait",
    default=0.01,
    type=click.FloatRange(0.0005, 10.0),
    help="Seconds to wait for a batch to fill before processing what is there.",
)
@_option(
    "--feedback-retry-delay",
    setting="feedback_retry_delay",
    default=5.0,
    type=click.FloatRange(0.01, 3600.0),
    help="Seconds between tries of feedback for an unknown request.",
)
@_option(
    "--feedback-retries",
    setting="feedback_retries",
    default=12,
    type=click.IntRange(0, 1000),
    help="Tries of feedback for an unknown request before it is dropped.",
)
@_option(
    "--unavailable-backoff-max",
    setting="unavailable_backoff_max",
    default=5.0,
    type=click.FloatRange(0.1, 600.0),
    help="Longest pause between tries while the store does not answer.",
)
@_option(
    "--unavailable-patience",
    setting="unavailable_patience",
    default=30.0,
    type=click.FloatRange(0.0, 3600.0),
    help="Seconds the feedback agent retries in place before using the retry topic.",
)
@_option(
    "--rebalance-timeout",
    setting="rebalance_timeout",
    default=60.0,
    type=click.FloatRange(1.0, 3600.0),
    help="Seconds a rebalance may take.",
)
@_option(
    "--commit-interval",
    setting="commit_interval",
    default=2.8,
    type=click.FloatRange(0.05, 600.0),
    help="Seconds between offset commits.",
)
@_option(
    "--data-dir",
    setting="data_dir",
    default=None,
    help="Faust's data directory (nothing is stored there without tables). [default: a temp dir]",
)
def worker(**options: Any) -> None:
    """Consume OTP requests and feedback from Kafka, publish decisions.

    Requests are decided in batches (one store round trip each) and one decision per request is published,
    keyed by request_id, before the input offsets are committed (at least once; a redelivered request gets
    the same decision and is not counted twice). Run up to as many workers with the same --group-id as the
    requests topic has partitions; they share counters through the Redis store, so every worker needs the
    same DETECTOR_HASH_KEY. SIGTERM stops a worker cleanly.
    """
    from detector.hashing import MissingHashKey
    from detector.policy import PolicyError, load_policy
    from detector.state.open import StoreUrlError
    from detector.stream.app import run_worker
    from detector.stream.config import StreamConfig
    from detector.wiring import build_engine

    try:
        topics = TopicNames(
            **{
                name: options.pop(name)
                for name in ("requests", "feedback", "decisions", "dead_letters", "feedback_retry")
            }
        )
        config = StreamConfig(topics=topics, **options)
        config.broker_urls  # noqa: B018 - validates the broker list
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        policy = load_policy(config.policy_path)
    except PolicyError as exc:
        raise click.ClickException(f"invalid policy {config.policy_path or '(default)'}: {exc}") from exc
    if config.shadow:
        import msgspec

        policy = msgspec.structs.replace(policy, mode="shadow")
    if config.store_url.startswith("memory:"):
        click.echo("warning: memory:// keeps counters in this process: workers will not share them", err=True)

    def make_engine() -> Any:
        try:
            return build_engine(policy, config.store_url)
        except (MissingHashKey, StoreUrlError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc

    sys.exit(run_worker(config, make_engine))


if __name__ == "__main__":
    import os

    from detector import logs

    environ = os.environ
    logs.configure(environ.get("DETECTOR_LOG_LEVEL", "INFO"), environ.get("DETECTOR_LOG_FORMAT", "text"))
    worker()
