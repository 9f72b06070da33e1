"""The 8x8 account's options, shared by the commands that call 8x8 (`send-worker`, `prices fetch`).

They are read under 8x8's own variable names (EIGHTBYEIGHT_*), and the API key only from
EIGHTBYEIGHT_API_KEY or the file named by EIGHTBYEIGHT_API_KEY_FILE, never from a flag.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from detector.cli.options import option

if TYPE_CHECKING:
    from detector.send import EightByEightConfig

F = TypeVar("F", bound=Callable[..., Any])
# Each option's parameter name → the variable `EightByEightConfig.from_env` reads it from.
VENDOR_ENV = {
    "sub_account": "EIGHTBYEIGHT_SUBACCOUNT_ID",
    "region": "EIGHTBYEIGHT_REGION",
    "base_url": "EIGHTBYEIGHT_BASE_URL",
    "timeout": "EIGHTBYEIGHT_TIMEOUT",
    "account_id": "EIGHTBYEIGHT_ACCOUNT_ID",
}


def vendor_options(*, sub_account_help: str, account_id_help: str) -> Callable[[F], F]:
    """--sub-account, --region, --base-url, --account-id and --timeout."""
    decorators = [
        option(
            "--sub-account", "sub_account", env=VENDOR_ENV["sub_account"], default=None, help=sub_account_help
        ),
        option(
            "--region",
            "region",
            env=VENDOR_ENV["region"],
            default="ap",
            type=click.Choice(["ap", "us", "uk", "id"]),
            help="8x8 region.",
        ),
        option(
            "--base-url",
            "base_url",
            env=VENDOR_ENV["base_url"],
            default=None,
            help="8x8 API base URL, instead of the region's.",
        ),
        option(
            "--account-id", "account_id", env=VENDOR_ENV["account_id"], default=None, help=account_id_help
        ),
        option(
            "--timeout",
            "timeout",
            env=VENDOR_ENV["timeout"],
            default=5.0,
            type=click.FloatRange(0.01, 300),
            help="Seconds for each of connect, write and read.",
        ),
    ]

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def vendor_config(options: dict[str, Any], problems: list[str], *, purpose: str) -> EightByEightConfig | None:
    """The 8x8 account from the vendor options (popped from `options`) over the environment; every problem
    with it goes to `problems` (all of them, not the first). `purpose`: what the sub-account is for."""
    from detector.send import EightByEightConfig, SecretError, load_api_key

    env = dict(os.environ)
    for name, variable in VENDOR_ENV.items():
        value = options.pop(name)
        if value is not None:
            env[variable] = str(value)
        else:
            env.pop(variable, None)
    missing = not env.get(VENDOR_ENV["sub_account"])
    if missing:
        problems.append(f"set EIGHTBYEIGHT_SUBACCOUNT_ID (or --sub-account) to the 8x8 sub-account {purpose}")
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
