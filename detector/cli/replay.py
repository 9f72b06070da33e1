"""`detector replay`: decide a file of events in event-time order, on the in-memory (or a Redis) store."""

from __future__ import annotations

import asyncio
import functools
import sys
import time

import click
import orjson

from detector.cli.common import engine_for, on_live_store, open_out
from detector.cli.options import policy_option, store_option
from detector.wiring import tune_gc


@click.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False))
@policy_option()
@store_option()
@click.option(
    "--decisions",
    "decisions_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write one decision per request here (JSON lines).",
)
@click.option(
    "--dead-letters",
    "dead_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write input that could not be read here, with line numbers and the error.",
)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--shadow", is_flag=True, help="Force shadow mode: decide and count, but every action is allow."
)
def replay(
    events: str,
    policy_path: str | None,
    store_url: str,
    decisions_path: str | None,
    dead_path: str | None,
    batch_size: int,
    shadow: bool,
) -> None:
    """Replay EVENTS (JSON lines of otp_request / otp_feedback) in event-time order.

    Prints a JSON summary on stdout: counts per action, verdict and reason, and the bad input.
    The same input and policy give byte-identical decisions.
    """
    from detector.replay import parse_lines, read_lines
    from detector.replay import replay as run_replay

    policy, engine = engine_for(policy_path, store_url, shadow=shadow)
    started = time.perf_counter()
    lines = parse_lines(read_lines(events))
    tune_gc()
    with open_out(decisions_path) as decisions_out, open_out(dead_path) as dead_out:
        work = functools.partial(
            run_replay,
            engine,
            lines,
            batch_size=batch_size,
            decisions_out=decisions_out,
            dead_letters_out=dead_out,
            progress=True,
            stop_on_sigterm=True,
        )
        summary = asyncio.run(on_live_store(engine, store_url, work))
    elapsed = time.perf_counter() - started
    click.echo(
        orjson.dumps(summary.as_dict(policy.version, policy.mode), option=orjson.OPT_INDENT_2).decode()
    )
    if summary.interrupted:
        click.echo("stopped by SIGTERM: the summary and decisions cover the events replayed so far", err=True)
        sys.exit(143)
    click.echo(
        f"{summary.events} events in {elapsed:.2f}s ({summary.events / max(elapsed, 1e-9):,.0f} events/s)",
        err=True,
    )
