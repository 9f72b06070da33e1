"""`detector worker`: decide OTP requests from Kafka with the shared (Redis) store."""

from __future__ import annotations

import sys
from typing import Any

import click

from detector.cli.common import engine_for
from detector.cli.kafka_options import kafka_options
from detector.cli.options import CONTEXT, option, policy_option, shadow_option, store_option
from detector.kafka.topics import TopicNames
from detector.stream.config import DEFAULT_GROUP, DEFAULT_METRICS_PORT, DEFAULT_STORE

_TOPICS = TopicNames()


@click.command("worker", context_settings=CONTEXT)
@kafka_options(
    group=DEFAULT_GROUP,
    group_env="DETECTOR_GROUP_ID",
    group_help="Consumer group (and Faust app id); workers with the same id share the partitions.",
    metrics_port=DEFAULT_METRICS_PORT,
    metrics_port_env="DETECTOR_METRICS_PORT",
)
@store_option(
    default=DEFAULT_STORE,
    help="Counters shared by every worker: redis://HOST:PORT/DB (memory:// only for one worker).",
)
@policy_option()
@shadow_option()
@option(
    "--topic-requests",
    "requests",
    env="DETECTOR_TOPIC_REQUESTS",
    default=_TOPICS.requests,
    help="otp_request input.",
)
@option(
    "--topic-feedback",
    "feedback",
    env="DETECTOR_TOPIC_FEEDBACK",
    default=_TOPICS.feedback,
    help="otp_feedback input (may equal the requests topic).",
)
@option(
    "--topic-decisions",
    "decisions",
    env="DETECTOR_TOPIC_DECISIONS",
    default=_TOPICS.decisions,
    help="Decisions, keyed by request_id.",
)
@option(
    "--topic-dead-letters",
    "dead_letters",
    env="DETECTOR_TOPIC_DEAD_LETTERS",
    default=_TOPICS.dead_letters,
    help="Unreadable input, with the error and the original bytes.",
)
@option(
    "--topic-feedback-retry",
    "feedback_retry",
    env="DETECTOR_TOPIC_FEEDBACK_RETRY",
    default=_TOPICS.feedback_retry,
    help="Delay queue for feedback the store could not apply yet.",
)
@option(
    "--topic-challenges",
    "challenges",
    env="DETECTOR_TOPIC_CHALLENGES",
    default=_TOPICS.challenges,
    help="otp_challenge input: what became of each challenge (a result, or a CAPTCHA token to verify, with "
    "DETECTOR_CAPTCHA_PROVIDER and DETECTOR_CAPTCHA_SECRET(_FILE)).",
)
@option(
    "--batch-size",
    "batch_size",
    env="DETECTOR_BATCH_SIZE",
    default=500,
    type=click.IntRange(1, 100_000),
    help="Most events per engine call (one store round trip).",
)
@option(
    "--batch-wait",
    "batch_wait",
    env="DETECTOR_BATCH_WAIT",
    default=0.005,
    type=click.FloatRange(0.0005, 10.0),
    help=(
        "Longest a message waits for its batch to fill: a batch is processed once full or this many "
        "seconds after its first message arrived."
    ),
)
@option(
    "--feedback-retry-delay",
    "feedback_retry_delay",
    env="DETECTOR_FEEDBACK_RETRY_DELAY",
    default=5.0,
    type=click.FloatRange(0.01, 3600.0),
    help="Seconds between tries of feedback for an unknown request.",
)
@option(
    "--feedback-retries",
    "feedback_retries",
    env="DETECTOR_FEEDBACK_RETRIES",
    default=12,
    type=click.IntRange(0, 1000),
    help="Tries of feedback for an unknown request before it is dropped.",
)
@option(
    "--unavailable-backoff-max",
    "unavailable_backoff_max",
    env="DETECTOR_UNAVAILABLE_BACKOFF_MAX",
    default=5.0,
    type=click.FloatRange(0.1, 600.0),
    help="Longest pause between tries while the store does not answer.",
)
@option(
    "--unavailable-patience",
    "unavailable_patience",
    env="DETECTOR_UNAVAILABLE_PATIENCE",
    default=30.0,
    type=click.FloatRange(0.0, 3600.0),
    help="Seconds the feedback agent retries in place before using the retry topic.",
)
@option(
    "--rebalance-timeout",
    "rebalance_timeout",
    env="DETECTOR_KAFKA_REBALANCE_TIMEOUT",
    default=60.0,
    type=click.FloatRange(1.0, 3600.0),
    help="Seconds a rebalance may take.",
)
@option(
    "--commit-interval",
    "commit_interval",
    env="DETECTOR_KAFKA_COMMIT_INTERVAL",
    default=2.8,
    type=click.FloatRange(0.05, 600.0),
    help="Seconds between offset commits.",
)
@option(
    "--data-dir",
    "data_dir",
    env="DETECTOR_DATA_DIR",
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
    from detector.challenges.siteverify import SiteVerifier, SiteVerifyConfig
    from detector.stream.app import run_worker
    from detector.stream.config import StreamConfig

    try:
        topics = TopicNames(
            **{
                name: options.pop(name)
                for name in (
                    "requests",
                    "feedback",
                    "decisions",
                    "dead_letters",
                    "feedback_retry",
                    "challenges",
                )
            }
        )
        config = StreamConfig(topics=topics, **options)
        config.broker_urls  # noqa: B018 - validates the broker list
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    _, engine = engine_for(config.policy_path, config.store_url, shadow=config.shadow, service=True)
    settings = SiteVerifyConfig.from_env()
    if config.store_url.startswith("memory:"):
        click.echo("warning: memory:// keeps counters in this process: workers will not share them", err=True)
    verifier = SiteVerifier(settings) if settings is not None else None
    sys.exit(run_worker(config, lambda: engine, verifier=verifier))
