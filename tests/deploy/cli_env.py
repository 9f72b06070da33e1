"""Which environment variables the detector reads: the contract every deployment file is checked against.

Two sources, both from the code rather than from a list kept here:

* every click option's ``envvar``, walking the command tree from ``detector.cli.main``;
* every ``DETECTOR_*`` / ``EIGHTBYEIGHT_*`` name written in the package's source: the variables read with
  ``os.environ`` (the hash key, the 8x8 account and key and their ``*_FILE`` forms), including names built as
  ``f"{NAME}_FILE"`` from a constant.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"^(DETECTOR|EIGHTBYEIGHT)_[A-Z0-9_]*[A-Z0-9]$")

# Documented in the README as the secret and account variables: each must still be read somewhere.
SECRET_AND_ACCOUNT = frozenset({
    "DETECTOR_HASH_KEY",
    "DETECTOR_HASH_KEY_FILE",
    "EIGHTBYEIGHT_API_KEY",
    "EIGHTBYEIGHT_API_KEY_FILE",
    "EIGHTBYEIGHT_SUBACCOUNT_ID",
    "EIGHTBYEIGHT_REGION",
    "EIGHTBYEIGHT_BASE_URL",
})  # fmt: skip


def _commands(command: click.Command) -> Iterator[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _commands(sub)


def click_envvars() -> set[str]:
    from detector.cli import main

    names: set[str] = set()
    for command in _commands(main):
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    return names


def cli_command_names() -> set[str]:
    from detector.cli import main

    return {command.name or "" for command in _commands(main)}


def _names_in_module(tree: ast.Module) -> set[str]:
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }  # fmt: skip
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value):
            found.add(node.value)
        elif isinstance(node, ast.JoinedStr):  # f"{API_KEY_ENV}_FILE"
            text = ""
            for part in node.values:
                if isinstance(part, ast.Constant):
                    text += str(part.value)
                elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name):
                    text += constants.get(part.value.id, "\0")
                else:
                    text += "\0"
            if ENV_NAME.match(text):
                found.add(text)
    return found


def source_envvars() -> set[str]:
    names: set[str] = set()
    for path in sorted((REPO / "detector").rglob("*.py")):
        if "testing" in path.relative_to(REPO / "detector").parts:
            continue  # test doubles and launchers are not the product
        names |= _names_in_module(ast.parse(path.read_text(), filename=str(path)))
    return names


def read_by_detector() -> set[str]:
    """Every variable a deployment may set: what the CLI and the code read."""
    return click_envvars() | source_envvars()
