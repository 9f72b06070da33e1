"""`detector policy check | show`: validate a policy file, or print the policy in effect."""

from __future__ import annotations

import click
import msgspec

from detector.cli.common import policy_for


@click.group()
def policy() -> None:
    """Check and show policies."""


@policy.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def policy_check(file: str) -> None:
    """Validate FILE merged over the default policy, and the list files it names.

    Every problem is reported at once, each naming its field; a misspelt key gets the closest valid
    names, a wrong value the valid ones.
    """
    loaded = policy_for(file)
    click.echo(f"{file}: ok (version {loaded.version}, mode {loaded.mode})")


@policy.command("show")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
def policy_show(file: str | None) -> None:
    """Print the effective policy (FILE merged over the default) as JSON."""
    click.echo(msgspec.json.format(msgspec.json.encode(policy_for(file))).decode())
