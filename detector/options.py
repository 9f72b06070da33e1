"""Command-line options that several commands share, so they read and behave the same everywhere."""

from __future__ import annotations

import click

from detector.wiring import DEFAULT_STORE

POLICY_OPTION = click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False),
    envvar="DETECTOR_POLICY",
    help="Policy YAML; sets only the keys it changes from the default policy. [env: DETECTOR_POLICY]",
)
STORE_OPTION = click.option(
    "--store",
    "store_url",
    default=DEFAULT_STORE,
    show_default=True,
    envvar="DETECTOR_STORE",
    help="Where counters live: memory:// or redis://HOST:PORT/DB. [env: DETECTOR_STORE]",
)
