"""`detector send-worker`: send the allowed OTPs through 8x8, exactly once, and report every outcome.

Register with ``main.add_command(send_worker)``; ``python -m detector.commands_send`` runs it on its own.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from detector.kafka.options import kafka_options, setting_options
from detector.send.config import (
    DEFAULT_GROUP,
    DEFAULT_LEDGER,
    DEFAULT_LEDGER_PREFIX,
    DEFAULT_METRICS_PORT,
    ENV,
    SendTopics,
)

_TOPICS = SendTopics()


_option = setting_options(ENV)


def _vendor_option(*decls: str, name: str, env: str, help: str, **kwargs: Any) -> Any:
    return click.option(*decls, name, envvar=env, help=f"{help} [env: {env}]", show_default=True, **kwargs)


@click.command(
    "send-worker", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@kafka_options(
    ENV,
    group=DEFAULT_GROUP,
    group_help="Consumer group of the send workers (not the detection workers').",
    metrics_port=DEFAULT_METRICS_PORT,
)
@_option("--topic-decisions", setting="decisions", default=_TOPICS.decisions, help="otp_decision input.")
@_option(
    "--topic-feedback",
    setting="feedback",
    default=_TOPICS.feedback,
    help="otp_feedback input: verified/failed OTPs are reported to 8x8.",
)
@_option(
    "--topic-outcomes",
    setting="outcomes",
    default=_TOPICS.outcomes,
    help="otp_outcome output, keyed by request_id: one per decision.",
)
@_option(
    "--feedback/--no-feedback",
    setting="consume_feedback",
    default=True,
    help="Report OTP outcomes to 8x8 (conversion tracking).",
)
@_option(
    "--ledger",
    setting="ledger_url",
    default=DEFAULT_LEDGER,
    help="Redis of the send ledger (request_id -> claim, outcome, umid); give it persistence.",
)
@_option(
    "--ledger-prefix",
    setting="ledger_prefix",
    default=DEFAULT_LEDGER_PREFIX,
    help="Prefix of the ledger's keys.",
)
@_option(
    "--ledger-ttl",
    setting="ledger_ttl",
    default=2 * 86400.0,
    type=click.FloatRange(3600, None),
    help="Seconds a request's record is kept: longer than any redelivery and feedback delay.",
)
@_option(
    "--rate",
    setting="rate",
    default=50.0,
    type=click.FloatRange(0.001, None, min_open=False),
    help="Messages per second to 8x8, every attempt counted (token bucket).",
)
@_option(
    "--burst",
    setting="burst",
    default=None,
    type=click.FloatRange(1, None),
    help="Messages that may go at once. [default: one second's worth]",
)
@_option(
    "--batch-size",
    setting="batch_size",
    default=100,
    type=click.IntRange(1, 10_000),
    help="Most messages per 8x8 batch request; 1 uses only the single-message endpoint.",
)
@_option(
    "--batch-wait",
    setting="batch_wait",
    default=0.02,
    type=click.FloatRange(0.0005, 10.0),
    help="Seconds to wait for decisions to fill a round.",
)
@_option(
    "--max-in-flight",
    setting="max_in_flight",
    default=8,
    type=click.IntRange(1, 1000),
    help="8x8 requests in flight at once.",
)
@_option(
    "--retry-attempts",
    setting="retry_attempts",
    default=4,
    type=click.IntRange(1, 100),
    help="Most attempts of one send (429, 5xx, timeouts, connection errors).",
)
@_option(
    "--retry-max-elapsed",
    setting="retry_max_elapsed",
    default=20.0,
    type=click.FloatRange(0, 600),
    help="Seconds after the first attempt past which no retry starts.",
)
@_option(
    "--retry-base-delay",
    setting="retry_base_delay",
    default=0.25,
    type=click.FloatRange(0, 60),
    help="Backoff of the first retry (doubling, full jitter, never below Retry-After).",
)
@_option(
    "--retry-max-delay",
    setting="retry_max_delay",
    default=8.0,
    type=click.FloatRange(0, 600),
    help="Longest backoff between attempts.",
)
@_option(
    "--lookup/--no-lookup",
    setting="lookup",
    default=True,
    help="After a 500/502/504, a read timeout or a dropped connection (8x8 may have queued the SMS), "
    "search 8x8's message log for it instead of guessing: found is sent, absent is retried. Off: in_doubt.",
)
@_option(
    "--lookup-delay",
    setting="lookup_delay",
    default=5.0,
    type=click.FloatRange(0, 600),
    help="Seconds to let 8x8 finish (and log) a request before searching its message log.",
)
@_option(
    "--lookup-poll",
    setting="lookup_poll",
    default=1.0,
    type=click.FloatRange(0.01, 60),
    help="Seconds between polls of 8x8's log export job.",
)
@_option(
    "--lookup-patience",
    setting="lookup_patience",
    default=60.0,
    type=click.FloatRange(0.1, 3600),
    help="Longest wait for a log export job; past it the request is in_doubt.",
)
@_option(
    "--owner-ttl",
    setting="owner_ttl",
    default=10.0,
    type=click.FloatRange(1, 600),
    help="Seconds a stopped worker still counts as alive (its claims are waited for).",
)
@_option(
    "--claim-wait",
    setting="claim_wait",
    default=35.0,
    type=click.FloatRange(0, 3600),
    help="Longest wait for a live worker's claim before declaring the request in doubt.",
)
@_vendor_option(
    "--sub-account",
    name="sub_account",
    env="EIGHTBYEIGHT_SUBACCOUNT_ID",
    default=None,
    help="8x8 sub-account that sends the OTPs (required).",
)
@_vendor_option(
    "--region",
    name="region",
    env="EIGHTBYEIGHT_REGION",
    default="ap",
    type=click.Choice(["ap", "us", "uk", "id"]),
    help="8x8 region.",
)
@_vendor_option(
    "--base-url",
    name="base_url",
    env="EIGHTBYEIGHT_BASE_URL",
    default=None,
    help="8x8 API base URL, instead of the region's.",
)
@_vendor_option(
    "--account-id",
    name="account_id",
    env="EIGHTBYEIGHT_ACCOUNT_ID",
    default=None,
    help="8x8 account id (a GUID): the key is checked at start with the balance call; unset skips the check.",
)
@_vendor_option(
    "--timeout",
    name="timeout",
    env="EIGHTBYEIGHT_TIMEOUT",
    default=5.0,
    type=click.FloatRange(0.01, 300),
    help="Seconds for each of connect, write and read.",
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
    from detector.send import EightByEightConfig, SecretError
    from detector.send.config import SendConfig
    from detector.send.worker import run_send_worker

    vendor_env = dict(os.environ)
    for name, env in (
        ("sub_account", "EIGHTBYEIGHT_SUBACCOUNT_ID"),
        ("region", "EIGHTBYEIGHT_REGION"),
        ("base_url", "EIGHTBYEIGHT_BASE_URL"),
        ("timeout", "EIGHTBYEIGHT_TIMEOUT"),
        ("account_id", "EIGHTBYEIGHT_ACCOUNT_ID"),
    ):
        value = options.pop(name)
        if value is not None:
            vendor_env[env] = str(value)
        else:
            vendor_env.pop(env, None)
    try:
        vendor = EightByEightConfig.from_env(vendor_env)
    except SecretError as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(f"8x8 settings: {exc}") from None
    try:
        topics = SendTopics(**{name: options.pop(name) for name in ("decisions", "feedback", "outcomes")})
        config = SendConfig(topics=topics, **options)
        config.bootstrap  # noqa: B018 - validates the broker list
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run_send_worker(config, vendor))


if __name__ == "__main__":
    from detector import logs

    environ = os.environ
    logs.configure(environ.get("DETECTOR_LOG_LEVEL", "INFO"), environ.get("DETECTOR_LOG_FORMAT", "text"))
    send_worker()
