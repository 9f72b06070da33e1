"""The 8x8 API key: loaded from the environment or a mounted file, never shown.

`ApiKey` wraps the value so that ``repr``, ``str``, f-strings, logging and pickling cannot reveal it;
only :meth:`Secret.reveal` returns it, and the 8x8 client calls that once, to build its
``Authorization`` header.

Where the key comes from, in order:

- ``EIGHTBYEIGHT_API_KEY``: the key itself;
- ``EIGHTBYEIGHT_API_KEY_FILE``: a path to a file holding the key (a mounted Kubernetes or Docker
  secret); one trailing newline is stripped.

Setting both is an error (which one would win is a guess nobody should have to make).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from detector.errors import ConfigurationError

API_KEY_ENV = "EIGHTBYEIGHT_API_KEY"
API_KEY_FILE_ENV = f"{API_KEY_ENV}_FILE"

_MASK = "****"


class SecretError(ConfigurationError, ValueError):
    """A secret is missing or unusable. The message names what to set; it never contains the value."""


class Secret:
    """A string that does not show itself. Compare with ``==`` (constant time); read with ``reveal()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{type(self).__name__} takes a str, not {type(value).__name__}")
        if not value:
            raise SecretError(f"{type(self).__name__} is empty")
        self._value = value

    def reveal(self) -> str:
        """The value itself. Use it where it is needed (a header) and nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled; pass where it comes from instead")


class ApiKey(Secret):
    """An 8x8 API key: sent as ``Authorization: Bearer <key>``, so it must be one visible-ASCII token."""

    __slots__ = ()

    def __init__(self, value: str) -> None:
        super().__init__(value)
        if not all("!" <= ch <= "~" for ch in value):
            # Saying which character is wrong would reveal part of the key; the position is enough.
            bad = next(i for i, ch in enumerate(value) if not "!" <= ch <= "~")
            raise SecretError(
                f"the API key has a space, control or non-ASCII character at position {bad} "
                f"(of {len(value)}); an 8x8 key is a single printable ASCII token"
            )


def load_api_key(
    env: Mapping[str, str] | None = None,
    *,
    name: str = API_KEY_ENV,
    file_name: str | None = None,
    what: str = "8x8 API key",
) -> ApiKey:
    """The API key from ``$name`` or from the file at ``$name_FILE``.

    ``env`` defaults to ``os.environ``; ``file_name`` defaults to ``name + "_FILE"``.
    Raises :class:`SecretError` saying which variable to set when neither is present.
    """
    env = os.environ if env is None else env
    file_name = file_name or f"{name}_FILE"
    value, path = env.get(name), env.get(file_name)
    if value is not None and path is not None:
        raise SecretError(f"both {name} and {file_name} are set; set only one of them")
    if value is not None:
        return _checked(value, f"${name}")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretError(
                f"{file_name} points to {path!r}, which cannot be read: {exc.strerror}"
            ) from None
        if text.endswith("\n"):
            text = text[:-1].removesuffix("\r")
        return _checked(text, f"the file at ${file_name} ({path})")
    raise SecretError(
        f"no {what}: set {name} to the key, or {file_name} to the path of a file that holds it "
        "(for example a mounted Kubernetes secret)"
    )


def _checked(value: str, source: str) -> ApiKey:
    try:
        return ApiKey(value)
    except SecretError as exc:
        raise SecretError(f"{source}: {exc}") from None
