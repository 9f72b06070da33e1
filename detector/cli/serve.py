"""`detector serve`: the HTTP decision service, on the same engine and shared store as the Kafka workers."""

from __future__ import annotations

import logging
import sys

import click

from detector.cli.common import engine_for
from detector.cli.options import CONTEXT, option, policy_option, shadow_option, store_option
from detector.errors import ConfigurationError
from detector.stream.config import DEFAULT_STORE
from detector.wiring import tune_gc

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
# Seconds the decisions kept for redelivery may wait for the next batch's flight before going on their own.
REMEMBER_WAIT = 0.005


@click.command("serve", context_settings=CONTEXT)
@option("--host", "host", env="DETECTOR_SERVE_HOST", default=LOOPBACK, help="Address to bind.")
@option(
    "--port",
    "port",
    env="DETECTOR_SERVE_PORT",
    default=8080,
    type=click.IntRange(0, 65535),
    help="Port to bind.",
)
@store_option(
    default=DEFAULT_STORE,
    help="Counters shared with the Kafka workers: redis://HOST:PORT/DB (memory:// only for one process).",
)
@policy_option()
@shadow_option()
@option(
    "--batch-size",
    "batch_size",
    env="DETECTOR_SERVE_BATCH_SIZE",
    default=256,
    type=click.IntRange(1, 10_000),
    help="Most concurrent calls decided in one engine call (one store round trip).",
)
@option(
    "--max-in-flight",
    "max_in_flight",
    env="DETECTOR_SERVE_MAX_IN_FLIGHT",
    default=1,
    type=click.IntRange(1, 64),
    help="Engine calls at once: more lets a batch start while another waits on the store.",
)
@option(
    "--graceful-timeout",
    "graceful_timeout",
    env="DETECTOR_SERVE_GRACEFUL_TIMEOUT",
    default=10,
    type=click.IntRange(0, 600),
    help="Seconds SIGTERM waits for requests in flight.",
)
@option(
    "--insecure-local",
    "insecure_local",
    env="DETECTOR_SERVE_INSECURE_LOCAL",
    is_flag=True,
    default=False,
    help="Serve without API tokens, on 127.0.0.1 only (development).",
)
def serve(
    host: str,
    port: int,
    store_url: str,
    policy_path: str | None,
    shadow: bool,
    batch_size: int,
    max_in_flight: int,
    graceful_timeout: int,
    insecure_local: bool,
) -> None:
    """Answer OTP checks over HTTP: POST /v1/checks, /v1/feedback, /v1/challenges/{request_id}.

    \b
    Callers authenticate with `Authorization: Bearer <token>`; the tokens come from DETECTOR_API_TOKENS
    (comma-separated) or DETECTOR_API_TOKENS_FILE (one a line). CAPTCHA tokens are verified with
    DETECTOR_CAPTCHA_PROVIDER (turnstile, hcaptcha, recaptcha) and DETECTOR_CAPTCHA_SECRET(_FILE).
    /healthz, /readyz and /metrics are open; the OpenAPI document is at /schema/openapi.json.
    SIGTERM finishes the requests in flight, closes the store and exits 0.
    """
    from detector.challenges.siteverify import SiteVerifier, SiteVerifyConfig
    from detector.serve.app import Service
    from detector.serve.auth import API_TOKENS_ENV, API_TOKENS_FILE_ENV, ApiTokens
    from detector.serve.server import serve as run_server

    tokens = ApiTokens.from_env()
    if tokens is None and not insecure_local:
        raise ConfigurationError(
            f"no API tokens: set {API_TOKENS_ENV} (comma-separated) or {API_TOKENS_FILE_ENV} (a file with "
            "one token a line), or pass --insecure-local to serve without authentication on 127.0.0.1"
        )
    if tokens is not None and insecure_local:
        raise click.UsageError(f"--insecure-local serves without tokens, but {API_TOKENS_ENV}(_FILE) is set")
    if insecure_local:
        if host != LOOPBACK:
            log.warning("--insecure-local: binding %s instead of %s", LOOPBACK, host)
        host = LOOPBACK
        log.warning("--insecure-local: no authentication; anyone on this machine can call the service")
    verify = SiteVerifyConfig.from_env()
    # A caller has its answer once the engine has it: the decisions kept for redelivery ride with the next
    # batch's flight rather than costing each batch a round trip of its own (see RedisStore).
    _, engine = engine_for(policy_path, store_url, shadow=shadow, service=True, remember_wait=REMEMBER_WAIT)
    if store_url.startswith("memory:"):
        click.echo("warning: memory:// keeps counters in this process: workers will not share them", err=True)
    service = Service(
        engine,
        tokens,
        SiteVerifier(verify) if verify is not None else None,
        max_batch=batch_size,
        max_in_flight=max_in_flight,
    )
    tune_gc()
    sys.exit(run_server(service, host, port, graceful_timeout=graceful_timeout))
