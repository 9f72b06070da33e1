"""`detector`: the command line. Every option can also come from the environment (DETECTOR_*)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import IO, Any

import click
import orjson

from detector import logs
from detector.hashing import MissingHashKey
from detector.options import POLICY_OPTION, STORE_OPTION
from detector.policy import PolicyError, load_policy
from detector.state.open import StoreUrlError
from detector.wiring import build_engine, tune_gc


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--log-level",
    default="INFO",
    envvar="DETECTOR_LOG_LEVEL",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="[env: DETECTOR_LOG_LEVEL]",
)
@click.option(
    "--log-format",
    default="text",
    envvar="DETECTOR_LOG_FORMAT",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: one object per line. [env: DETECTOR_LOG_FORMAT]",
)
def main(log_level: str, log_format: str) -> None:
    """Detect SMS pumping before an OTP is sent: allow / challenge / block, with the reasons.

    \b
    Try it:        detector simulate --out day.jsonl && detector replay day.jsonl
    Tune a policy: detector policy check my-policy.yaml && detector evaluate day.jsonl --policy my-policy.yaml
    Run it:        detector worker (Kafka + Redis) and detector send-worker (the only caller of 8x8)
    """
    logs.configure(log_level, log_format)


@main.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False))
@POLICY_OPTION
@STORE_OPTION
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

    policy = _policy(policy_path, shadow)
    engine = _engine(policy, store_url)
    started = time.perf_counter()
    lines = parse_lines(read_lines(events))
    tune_gc()
    with _open_out(decisions_path) as decisions_out, _open_out(dead_path) as dead_out:
        summary = asyncio.run(
            _closing(
                engine,
                run_replay(
                    engine,
                    lines,
                    batch_size=batch_size,
                    decisions_out=decisions_out,
                    dead_letters_out=dead_out,
                    progress=True,
                    stop_on_sigterm=True,
                ),
            )
        )
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


@main.group()
def policy() -> None:
    """Check and show policies."""


@policy.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def policy_check(file: str) -> None:
    """Validate FILE merged over the default policy; errors name the field."""
    loaded = _policy(file, shadow=False)
    click.echo(f"{file}: ok (version {loaded.version}, mode {loaded.mode})")


@policy.command("show")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
def policy_show(file: str | None) -> None:
    """Print the effective policy (FILE merged over the default) as JSON."""
    import msgspec

    click.echo(msgspec.json.format(msgspec.json.encode(_policy(file, shadow=False))).decode())


def _policy(path: str | None, shadow: bool) -> Any:
    try:
        loaded = load_policy(path)
    except PolicyError as exc:
        raise click.ClickException(f"invalid policy {path or '(default)'}: {exc}") from exc
    if shadow:
        import msgspec

        loaded = msgspec.structs.replace(loaded, mode="shadow")
    return loaded


def _engine(policy: Any, store_url: str) -> Any:
    try:
        return build_engine(policy, store_url)
    except (MissingHashKey, StoreUrlError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


async def _closing(engine: Any, work: Any) -> Any:
    try:
        return await work
    finally:
        await engine.store.close()


class _open_out:
    """A binary output file, or nothing."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes] | None:
        if self.path is not None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "wb")
        return self.handle

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def _register_commands() -> None:
    from detector.commands_send import send_worker
    from detector.commands_sim import demo, evaluate, simulate
    from detector.commands_stream import worker

    for command in (simulate, evaluate, demo, worker, send_worker):
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    sys.exit(main())
