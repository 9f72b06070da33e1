"""`detector simulate | evaluate | demo`: the evaluation tooling on the command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from detector.cli.common import policy_for
from detector.cli.options import policy_option, store_option
from detector.policy import seconds

if TYPE_CHECKING:
    from detector.evaluation.challenges import ClientModel


def _duration(value: str) -> float:
    try:
        return float(seconds(value.strip()))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _challenge_options(command: Callable[..., None]) -> Callable[..., None]:
    """How the simulated clients answer challenges (the closed loop of an enforced evaluation)."""
    command = click.option(
        "--legit-delay",
        default="15s",
        show_default=True,
        help="Median time a person takes to answer a challenge (log-normal, with a long tail).",
    )(command)
    return click.option(
        "--legit-pass-rate",
        default=0.9,
        show_default=True,
        type=click.FloatRange(0.0, 1.0),
        help="Share of challenges a legitimate user passes; bots pass none, a scenario may say otherwise.",
    )(command)


def _client(legit_pass_rate: float, legit_delay: str) -> ClientModel:
    from detector.evaluation.challenges import MAX_DELAY_S, ClientModel

    delay = _duration(legit_delay)
    if not 0 < delay <= MAX_DELAY_S:
        raise click.BadParameter("must be between 1s and 1h", param_hint="--legit-delay")
    return ClientModel(legit_pass_rate=legit_pass_rate, legit_delay_s=delay)


def _scenario_help() -> str:
    from detector.evaluation.sim import BUSINESSES, SCENARIOS

    scenarios = [
        f"  {name:<20} {scenario.label:<6} {scenario.description}" for name, scenario in SCENARIOS.items()
    ]
    businesses = [f"  {name:<20} {profile.description}" for name, profile in BUSINESSES.items()]
    return "\n".join(["scenarios:", *scenarios, "businesses (--business):", *businesses])


@click.command()
@click.option(
    "--scenario",
    "scenario",
    default=None,
    metavar="NAME[,NAME...]",
    help="`mix` (the demo's twelve at their usual volumes; the default), `all`, or scenario names; "
    "see --list. With --business, `all` is the default.",
)
@click.option(
    "--business",
    default=None,
    metavar="NAME",
    help="A business profile (home countries, volumes, daily curve) instead of the mix's; see --list.",
)
@click.option("--duration", default="24h", show_default=True, help="How much traffic: 30m, 6h, 24h, 2d.")
@click.option(
    "--seed",
    default=1,
    show_default=True,
    type=int,
    help="The same seed writes the same file, byte for byte.",
)
@click.option(
    "--start",
    default="2026-11-02T00:00:00Z",
    show_default=True,
    help="Event time of the first moment, RFC 3339.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the events (JSON lines); - for stdout.",
)
@click.option("--list", "list_only", is_flag=True, help="List the scenarios and exit.")
def simulate(
    scenario: str | None,
    business: str | None,
    duration: str,
    seed: int,
    start: str,
    out_path: str | None,
    list_only: bool,
) -> None:
    """Write simulated OTP traffic: otp_request and otp_feedback events in event-time order.

    Every request carries `label` (legit or attack) and `scenario`; the engine ignores both, and
    `detector evaluate` scores the policy against them. Phone numbers are valid numbers of their country
    (phonenumbers' metadata); client addresses come from documentation and benchmarking ranges.
    """
    from detector.evaluation.sim import ALL, MIX, profile, resolve, write_events
    from detector.evaluation.sim import simulate as run_simulation
    from detector.events import parse_timestamp

    if list_only:
        click.echo(_scenario_help())
        return
    if out_path is None:
        raise click.UsageError("--out FILE is required (or --list)")
    try:
        if business is not None:
            profile(business)
        names = resolve(scenario or (ALL if business is not None else MIX))
        first = parse_timestamp(start)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    events = run_simulation(names, duration=_duration(duration), seed=seed, start=first, business=business)
    if out_path == "-":
        out = sys.stdout.buffer
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
        out.flush()
    else:
        write_events(events, out_path)
    requests = [e for e in events if e["type"] == "otp_request"]
    attacks = sum(1 for e in requests if e.get("label") == "attack")
    click.echo(
        f"{len(events):,} events ({len(requests):,} requests, {attacks:,} of them attacks; "
        f"{'business: ' + business + '; ' if business else ''}scenarios: {', '.join(names)}) -> {out_path}",
        err=True,
    )


@click.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False))
@policy_option()
@store_option()
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the full evaluation here as JSON.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report here: one offline HTML file with charts.",
)
@click.option(
    "--shadow", is_flag=True, help="Replay in shadow mode: outcomes are the verdicts, nothing enforced."
)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--no-follow",
    is_flag=True,
    help="Do not answer challenges: every challenge ends unanswered (nothing sent).",
)
@_challenge_options
def evaluate(
    events: str,
    policy_path: str | None,
    store_url: str,
    json_path: str | None,
    html_path: str | None,
    shadow: bool,
    batch_size: int,
    no_follow: bool,
    legit_pass_rate: float,
    legit_delay: str,
) -> None:
    """Replay EVENTS and report how the policy did, overall and per scenario.

    \b
    With labels (the simulator's files): attack requests blocked / challenged / allowed, legitimate
    requests blocked / challenged, attack SMS cost let through against the total, and how many attack
    requests got through before each scenario's first block.
    Without labels: what the policy would block, by reason, country, prefix and client, and its cost.

    \b
    In enforce mode each challenge of a labelled request is followed to its end: the simulated client
    answers (people pass at --legit-pass-rate after --legit-delay, bots never, a scenario's own rate
    otherwise), the answer is replayed into the engine, and the table adds the SMS actually sent, their
    cost, the share of people who got a code and the delay a challenge added.
    """
    from detector.evaluation.evaluate import evaluate_file, format_table
    from detector.evaluation.report import write_html

    loaded = policy_for(policy_path)
    client = _client(legit_pass_rate, legit_delay)
    report = evaluate_file(
        events,
        loaded,
        store_url,
        shadow=shadow,
        progress=True,
        batch_size=batch_size,
        follow=not no_follow,
        client=client,
    )
    click.echo(format_table(report))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_bytes(report.to_json())
        click.echo(f"evaluation: {json_path}", err=True)
    if html_path is not None:
        click.echo(f"report: {write_html(report, html_path)}", err=True)


@click.command()
@click.option(
    "--out-dir",
    default="out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the events, the evaluation and the report go.",
)
@click.option("--seed", default=2026, show_default=True, type=int)
@click.option("--duration", default="24h", show_default=True)
@policy_option()
@_challenge_options
def demo(
    out_dir: str,
    seed: int,
    duration: str,
    policy_path: str | None,
    legit_pass_rate: float,
    legit_delay: str,
) -> None:
    """Simulate a day of mixed traffic, replay it in shadow and enforce mode, and write a report.

    Prints per scenario the requests, the share blocked, challenged and stopped, and, with every
    challenge followed to its end, the SMS actually sent, the share of people who got their code, the
    delay a challenge added and the attack cost leaked.
    """
    from detector.evaluation.demo import demo_table, run_demo

    result = run_demo(
        out_dir,
        seed=seed,
        duration=_duration(duration),
        policy=policy_for(policy_path),
        client=_client(legit_pass_rate, legit_delay),
    )
    click.echo(demo_table(result))
