"""`detector quarantine list | lift`: the prefixes, subnets and clients blocked for a while, and ending one.

Quarantines live in the shared store (Redis), where every worker meets them; an in-process store
(memory://) is gone with its process, so there is nothing there to list or lift.
"""

from __future__ import annotations

import asyncio
import time

import click
import orjson

from detector.cli.common import engine_for, on_live_store
from detector.cli.options import policy_option, store_option
from detector.events import format_timestamp
from detector.state.base import Quarantine

_IN_PROCESS = (
    "memory:// is an in-process store: its quarantines ended with the process that made them. "
    "Quarantines live in the shared store; point --store / DETECTOR_STORE at the workers' Redis."
)


@click.group()
def quarantine() -> None:
    """List the quarantines in force, and lift one."""


@quarantine.command("list")
@policy_option()
@store_option()
@click.option("--json", "as_json", is_flag=True, help="One JSON array of quarantines.")
def quarantine_list(policy_path: str | None, store_url: str, as_json: bool) -> None:
    """The quarantines in force now: dimension, label, since, until, offences and key (for `lift`)."""
    if store_url.startswith("memory:"):
        click.echo(_IN_PROCESS, err=True)
        click.echo("[]" if as_json else "no quarantines in force")
        return
    _, engine = engine_for(policy_path, store_url)
    found = asyncio.run(on_live_store(engine, store_url, lambda: engine.store.quarantines(time.time())))
    if as_json:
        click.echo(orjson.dumps([_as_dict(q) for q in found], option=orjson.OPT_INDENT_2).decode())
    elif not found:
        click.echo("no quarantines in force")
    else:
        rows = [("DIMENSION", "LABEL", "SINCE", "UNTIL", "OFFENCES", "KEY")]
        rows += [(q.dimension, q.label, _at(q.since), _at(q.until), str(q.offences), q.key) for q in found]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
            click.echo("  ".join([*padded, row[-1]]))


@quarantine.command("lift")
@click.argument("dimension")
@click.argument("key")
@policy_option()
@store_option()
def quarantine_lift(dimension: str, key: str, policy_path: str | None, store_url: str) -> None:
    """End the quarantine of the entity KEY (as `list` shows it) of DIMENSION, and forget its offences."""
    if store_url.startswith("memory:"):
        raise click.ClickException(_IN_PROCESS)
    _, engine = engine_for(policy_path, store_url)
    dimensions = engine.plan.quarantine_dimensions
    if dimension not in dimensions:
        names = ", ".join(sorted(dimensions)) or "none (rules.quarantine is off)"
        raise click.BadParameter(f"{dimension!r} is not quarantined by this policy; one of {names}")
    lifted = asyncio.run(on_live_store(engine, store_url, lambda: engine.store.lift(dimension, key)))
    if not lifted:
        raise click.ClickException(f"no quarantine of {dimension} {key}: see `detector quarantine list`")
    click.echo(f"lifted the quarantine of {dimension} {key}")


def _as_dict(q: Quarantine) -> dict[str, object]:
    return {
        "dimension": q.dimension,
        "label": q.label,
        "since": _at(q.since),
        "until": _at(q.until),
        "offences": q.offences,
        "key": q.key,
    }


def _at(ts: float) -> str:
    return format_timestamp(ts)
