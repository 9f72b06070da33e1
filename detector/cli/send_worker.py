"""`detector send-worker`: send the allowed OTPs through 8x8, exactly once, and report every outcome."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, cast

import click

from detector.cli.options import CONTEXT, option
from detector.send.config import (
    CRASH_ENV,
    CRASH_POINTS,
    DEFAULT_BROKERS,
    DEFAULT_GROUP,
    DEFAULT_LEDGER,
    DEFAULT_LEDGER_PREFIX,
    DEFAULT_METRICS_PORT,
    CrashPoint,
    SendTopics,
)

if TYPE_CHECKING:
    from detector.send import EightByEightConfig

_TOPICS = SendTopics()
# Flags of the 8x8 account, read by `EightByEightConfig.from_env` under 8x8's own variable names.
VENDOR_ENV = {
    "sub_account": "EIGHTBYEIGHT_SUBACCOUNT_ID",
    "region": "EIGHTBYEIGHT_REGION",
    "base_url": "EIGHTBYEIGHT_BASE_URL",
    "timeout": "EIGHTBYEIGHT_TIMEOUT",
}


@click.command("send-worker", context_settings=CONTEXT)
@option(
    "--brokers",
    "brokers",
    env="DETECTOR_KAFKA_BROKERS",
    default=DEFAULT_BROKERS,
    help="Bootstrap servers: HOST:PORT,...",
)
@option(
    "--group-id",
    "group_id",
    env="DETECTOR_SEND_GROUP_ID",
    default=DEFAULT_GROUP,
    help="Consumer group of the send workers (not the detection workers').",
)
@option(
    "--topic-decisions",
    "decisions",
    env="DETECTOR_TOPIC_DECISIONS",
    default=_TOPICS.decisions,
    help="otp_decision input.",
)
@option(
    "--topic-feedback",
    "feedback",
    env="DETECTOR_TOPIC_FEEDBACK",
    default=_TOPICS.feedback,
    help="otp_feedback input: verified/failed OTPs are reported to 8x8.",
)
@option(
    "--topic-outcomes",
    "outcomes",
    env="DETECTOR_TOPIC_OUTCOMES",
    default=_TOPICS.outcomes,
    help="otp_outcome output, keyed by request_id: one per decision.",
)
@option(
    "--feedback/--no-feedback",
    "consume_feedback",
    env="DETECTOR_SEND_FEEDBACK",
    default=True,
    help="Report OTP outcomes to 8x8 (conversion tracking).",
)
@option(
    "--partitions",
    "partitions",
    env="DETECTOR_TOPIC_PARTITIONS",
    default=12,
    type=click.IntRange(1, 10_000),
    help="Partitions of topics this worker creates (existing topics are left alone).",
)
@option(
    "--replication",
    "replication",
    env="DETECTOR_TOPIC_REPLICATION",
    default=None,
    type=click.IntRange(1, 16),
    help="Replication factor of topics this worker creates. [default: min(3, brokers)]",
)
@option(
    "--ledger",
    "ledger_url",
    env="DETECTOR_SEND_LEDGER",
    default=DEFAULT_LEDGER,
    help="Redis of the send ledger (request_id -> claim, outcome, umid); give it persistence.",
)
@option(
    "--ledger-prefix",
    "ledger_prefix",
    env="DETECTOR_SEND_LEDGER_PREFIX",
    default=DEFAULT_LEDGER_PREFIX,
    help="Prefix of the ledger's keys.",
)
@option(
    "--ledger-ttl",
    "ledger_ttl",
    env="DETECTOR_SEND_LEDGER_TTL",
    default=2 * 86400.0,
    type=click.FloatRange(3600, None),
    help="Seconds a request's record is kept: longer than any redelivery and feedback delay.",
)
@option(
    "--rate",
    "rate",
    env="DETECTOR_SEND_RATE",
    default=50.0,
    type=click.FloatRange(0.001, None, min_open=False),
    help="Messages per second to 8x8, every attempt counted (token bucket).",
)
@option(
    "--burst",
    "burst",
    env="DETECTOR_SEND_BURST",
    default=None,
    type=click.FloatRange(1, None),
    help="Messages that may go at once. [default: one second's worth]",
)
@option(
    "--batch-size",
    "batch_size",
    env="DETECTOR_SEND_BATCH_SIZE",
    default=100,
    type=click.IntRange(1, 10_000),
    help="Most messages per 8x8 batch request; 1 uses only the single-message endpoint.",
)
@option(
    "--batch-wait",
    "batch_wait",
    env="DETECTOR_SEND_BATCH_WAIT",
    default=0.02,
    type=click.FloatRange(0.0005, 10.0),
    help="Seconds to wait for decisions to fill a round.",
)
@option(
    "--max-in-flight",
    "max_in_flight",
    env="DETECTOR_SEND_MAX_IN_FLIGHT",
    default=8,
    type=click.IntRange(1, 1000),
    help="8x8 requests in flight at once.",
)
@option(
    "--retry-attempts",
    "retry_attempts",
    env="DETECTOR_SEND_RETRY_ATTEMPTS",
    default=4,
    type=click.IntRange(1, 100),
    help="Most attempts of one send (429, 5xx, timeouts, connection errors).",
)
@option(
    "--retry-max-elapsed",
    "retry_max_elapsed",
    env="DETECTOR_SEND_RETRY_MAX_ELAPSED",
    default=20.0,
    type=click.FloatRange(0, 600),
    help="Seconds after the first attempt past which no retry starts.",
)
@option(
    "--retry-base-delay",
    "retry_base_delay",
    env="DETECTOR_SEND_RETRY_BASE_DELAY",
    default=0.25,
    type=click.FloatRange(0, 60),
    help="Backoff of the first retry (doubling, full jitter, never below Retry-After).",
)
@option(
    "--retry-max-delay",
    "retry_max_delay",
    env="DETECTOR_SEND_RETRY_MAX_DELAY",
    default=8.0,
    type=click.FloatRange(0, 600),
    help="Longest backoff between attempts.",
)
@option(
    "--retry-ambiguous/--no-retry-ambiguous",
    "retry_ambiguous",
    env="DETECTOR_SEND_RETRY_AMBIGUOUS",
    default=True,
    help="Also retry 500/502/504, read timeouts and dropped connections, after which 8x8 may have "
    "queued the SMS (a retry can then deliver it twice).",
)
@option(
    "--owner-ttl",
    "owner_ttl",
    env="DETECTOR_SEND_OWNER_TTL",
    default=10.0,
    type=click.FloatRange(1, 600),
    help="Seconds a stopped worker still counts as alive (its claims are waited for).",
)
@option(
    "--claim-wait",
    "claim_wait",
    env="DETECTOR_SEND_CLAIM_WAIT",
    default=35.0,
    type=click.FloatRange(0, 3600),
    help="Longest wait for a live worker's claim before declaring the request in doubt.",
)
@option(
    "--offset-reset",
    "offset_reset",
    env="DETECTOR_KAFKA_OFFSET_RESET",
    default="earliest",
    type=click.Choice(["earliest", "latest"]),
    help="Where a new consumer group starts.",
)
@option(
    "--session-timeout",
    "session_timeout",
    env="DETECTOR_KAFKA_SESSION_TIMEOUT",
    default=30.0,
    type=click.FloatRange(6.0, 1800.0),
    help="Seconds without heartbeat before a worker's partitions move to the others.",
)
@option(
    "--heartbeat-interval",
    "heartbeat_interval",
    env="DETECTOR_KAFKA_HEARTBEAT_INTERVAL",
    default=3.0,
    type=click.FloatRange(0.1, 600.0),
    help="Seconds between Kafka heartbeats (at most a third of the session timeout).",
)
@option(
    "--metrics-port",
    "metrics_port",
    env="DETECTOR_SEND_METRICS_PORT",
    default=DEFAULT_METRICS_PORT,
    type=click.IntRange(0, 65535),
    help="Prometheus /metrics port; 0 turns it off.",
)
@option(
    "--metrics-host",
    "metrics_host",
    env="DETECTOR_METRICS_HOST",
    default="0.0.0.0",
    help="Address the metrics port binds.",
)
@option(
    "--sub-account",
    "sub_account",
    env="EIGHTBYEIGHT_SUBACCOUNT_ID",
    default=None,
    help="8x8 sub-account that sends the OTPs (required).",
)
@option(
    "--region",
    "region",
    env="EIGHTBYEIGHT_REGION",
    default="ap",
    type=click.Choice(["ap", "us", "uk", "id"]),
    help="8x8 region.",
)
@option(
    "--base-url",
    "base_url",
    env="EIGHTBYEIGHT_BASE_URL",
    default=None,
    help="8x8 API base URL, instead of the region's.",
)
@option(
    "--timeout",
    "timeout",
    env="EIGHTBYEIGHT_TIMEOUT",
    default=5.0,
    type=click.FloatRange(0.01, 300),
    help="Seconds for each of connect, write and read.",
)
def send_worker(**options: Any) -> None:
    """Send the allowed OTPs through 8x8 and publish one otp_outcome per decision.

    Reads otp_decision events: allow is sent (clientMessageId = request_id, clientIp, track Outcome),
    block and challenge are not; every decision ends as one outcome (sent, rejected, failed or skipped)
    on the outcomes topic. A request is sent at most once: it is claimed in the Redis ledger before the
    first attempt, its outcome recorded there before the offset is committed, and a decision delivered
    again is answered from the ledger (a claim left without an outcome by a dead worker is not resent:
    its outcome is failed / in_doubt). Verified / failed feedback is reported to 8x8 for the umid.

    The API key comes only from EIGHTBYEIGHT_API_KEY or the file named by EIGHTBYEIGHT_API_KEY_FILE,
    never from a flag. SIGTERM finishes the requests in flight, commits and exits 0.
    """
    from detector.send.config import SendConfig
    from detector.send.worker import run_send_worker

    vendor_env = dict(os.environ)
    for name, env in VENDOR_ENV.items():
        value = options.pop(name)
        if value is not None:
            vendor_env[env] = str(value)
        else:
            vendor_env.pop(env, None)
    problems: list[str] = []
    vendor = _vendor(vendor_env, problems)
    crash_at = os.environ.get(CRASH_ENV) or None
    if crash_at is not None and crash_at not in CRASH_POINTS:
        problems.append(f"{CRASH_ENV} must be one of {', '.join(CRASH_POINTS)}")
        crash_at = None
    try:
        topics = SendTopics(**{name: options.pop(name) for name in ("decisions", "feedback", "outcomes")})
        config = SendConfig(topics=topics, crash_at=cast(CrashPoint | None, crash_at), **options)
        config.bootstrap  # noqa: B018 - validates the broker list
    except ValueError as exc:
        problems.append(str(exc))
    if problems or vendor is None:
        raise click.UsageError("\n".join(problems))
    sys.exit(run_send_worker(config, vendor))


def _vendor(env: dict[str, str], problems: list[str]) -> EightByEightConfig | None:
    """The 8x8 account from `env`; every problem with it goes to `problems` (all of them, not the first)."""
    from detector.send import EightByEightConfig, SecretError, load_api_key

    missing = not env.get("EIGHTBYEIGHT_SUBACCOUNT_ID")
    if missing:
        problems.append(
            "set EIGHTBYEIGHT_SUBACCOUNT_ID (or --sub-account) to the 8x8 sub-account that sends OTPs"
        )
    try:
        load_api_key(env)
    except SecretError as exc:
        problems.append(str(exc))
        missing = True
    if missing:
        return None
    try:
        return EightByEightConfig.from_env(env)
    except ValueError as exc:
        problems.append(f"8x8 settings: {exc}")
        return None
