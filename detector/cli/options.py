"""The one way a command declares an option: a flag, its environment variable, and help that names both.

Every setting of every command can come from the environment (twelve-factor); `environment_variables`
lists them all, so deployment files and `make services` can be checked against what the CLI reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from detector.state.open import DEFAULT_STORE

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def option(*decls: str, env: str, help: str, **kwargs: Any) -> Callable[[F], F]:
    """`click.option` read from `env` too, with `[env: NAME]` in the help and the default shown."""
    kwargs.setdefault("show_default", True)
    return click.option(*decls, envvar=env, help=f"{help} [env: {env}]".lstrip(), **kwargs)


def policy_option(**kwargs: Any) -> Callable[[F], F]:
    return option(
        "--policy",
        "policy_path",
        env="DETECTOR_POLICY",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Policy YAML; sets only the keys it changes from the default policy.",
        **kwargs,
    )


def shadow_option() -> Callable[[F], F]:
    """The service-wide shadow switch of the long-running commands (worker, serve)."""
    return option(
        "--shadow",
        "shadow",
        env="DETECTOR_SHADOW",
        is_flag=True,
        default=False,
        help="Shadow mode: decide and count, but every action is allow.",
    )


def store_option(
    default: str = DEFAULT_STORE, help: str = "Where counters live: memory:// or redis://HOST:PORT/DB."
) -> Callable[[F], F]:
    return option("--store", "store_url", env="DETECTOR_STORE", default=default, help=help)


def environment_variables(command: click.Command) -> set[str]:
    """Every variable `command` and its subcommands read: their options', and the secrets (never flags)."""
    from detector.challenges import siteverify
    from detector.hashing import HASH_KEY_ENV, HASH_KEY_FILE_ENV
    from detector.send.secrets import API_KEY_ENV, API_KEY_FILE_ENV
    from detector.serve.auth import API_TOKENS_ENV, API_TOKENS_FILE_ENV

    captcha = {
        siteverify.PROVIDER_ENV,
        siteverify.VERIFY_URL_ENV,
        siteverify.SECRET_ENV,
        siteverify.SECRET_FILE_ENV,
        siteverify.TIMEOUT_ENV,
    }
    secrets = {
        HASH_KEY_ENV,
        HASH_KEY_FILE_ENV,
        API_KEY_ENV,
        API_KEY_FILE_ENV,
        API_TOKENS_ENV,
        API_TOKENS_FILE_ENV,
    }
    return _option_variables(command) | secrets | captcha


def _option_variables(command: click.Command) -> set[str]:
    names = {name for param in command.params for name in _envvars(param)}
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            names |= _option_variables(sub)
    return names


def _envvars(param: click.Parameter) -> list[str]:
    envvar = param.envvar
    if envvar is None:
        return []
    return [envvar] if isinstance(envvar, str) else list(envvar)
