"""`detector send-worker`: send the allowed OTPs through 8x8, exactly once, and report every outcome."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from detector.cli.kafka_options import kafka_options
from detector.cli.options import CONTEXT, option
from detector.cli.vendor_options import vendor_config, vendor_options
from detector.send.config import (
    DEFAULT_GROUP,
    DEFAULT_LEDGER,
    DEFAULT_LEDGER_PREFIX,
    DEFAULT_METRICS_PORT,
    SendTopics,
)

if TYPE_CHECKING:
    pass

_TOPICS = SendTopics()


@click.command("send-worker", context_settings=CONTEXT)
@kafka_options(
    group=DEFAULT_GROUP,
    group_env="DETECTOR_SEND_GROUP_ID",
    group_help="Consumer group of the send workers (not the detection workers').",
    metrics_port=DEFAULT_METRICS_PORT,
    metrics_port_env="DETECTOR_SEND_METRICS_PORT",
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
    "--lookup/--no-lookup",
    "lookup",
    env="DETECTOR_SEND_LOOKUP",
    default=True,
    help="After a 500/502/504, a read timeout or a dropped connection (8x8 may have queued the SMS), "
    "search 8x8's message log for it instead of guessing: found is sent, absent is retried. Off: in_doubt.",
)
@option(
    "--lookup-delay",
    "lookup_delay",
    env="DETECTOR_SEND_LOOKUP_DELAY",
    default=5.0,
    type=click.FloatRange(0, 600),
    help="Seconds to let 8x8 finish (and log) a request before searching its message log.",
)
@option(
    "--lookup-poll",
    "lookup_poll",
    env="DETECTOR_SEND_LOOKUP_POLL",
    default=1.0,
    type=click.FloatRange(0.01, 60),
    help="Seconds between polls of 8x8's log export job.",
)
@option(
    "--lookup-patience",
    "lookup_patience",
    env="DETECTOR_SEND_LOOKUP_PATIENCE",
    default=60.0,
    type=click.FloatRange(0.1, 3600),
    help="Longest wait for a log export job; past it the request is in_doubt.",
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
@vendor_options(
    sub_account_help="8x8 sub-account that sends the OTPs (required).",
    account_id_help="8x8 account id (a GUID): the key is checked at start with the balance call; unset skips "
    "the check.",
)
def send_worker(**options: Any) -> None:
    """Send the allowed OTPs through 8x8 and publish one otp_outcome per decision.

    Reads otp_decision events: allow is sent (clientMessageId = request_id, clientIp, track Outcome),
    block and challenge are not; every decision ends as one outcome (sent, rejected, failed or skipped)
    on the outcomes topic. A message that breaks 8x8's contract fails alone (invalid_message). A request
    is sent at most once: it is claimed in the Redis ledger just before its HTTP call, its outcome
    recorded there before the offset is committed, and a decision delivered again is answered from the
    ledger. A failure after which 8x8 may have queued the SMS, or a dead worker's claim, is settled by
    searching 8x8's message log, never by a blind resend (no answer: failed / in_doubt). Verified /
    failed feedback is reported to 8x8 for the umid.

    The API key comes only from EIGHTBYEIGHT_API_KEY or the file named by EIGHTBYEIGHT_API_KEY_FILE,
    never from a flag. SIGTERM finishes the requests in flight, commits and exits 0.
    """
    from detector.send.config import SendConfig
    from detector.send.worker import run_send_worker

    problems: list[str] = []
    vendor = vendor_config(options, problems, purpose="that sends OTPs")
    try:
        topics = SendTopics(**{name: options.pop(name) for name in ("decisions", "feedback", "outcomes")})
        config = SendConfig(topics=topics, **options)
        config.bootstrap  # noqa: B018 - validates the broker list
    except ValueError as exc:
        problems.append(str(exc))
    if problems or vendor is None:
        raise click.UsageError("\n".join(problems))
    sys.exit(run_send_worker(config, vendor))
