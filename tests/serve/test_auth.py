"""Bearer tokens: where they come from, how they are compared, and that they never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.errors import ConfigurationError
from detector.serve.auth import ApiTokens

A = "token-a-0123456789abcdef"
B = "token-b-0123456789abcdef"


def test_tokens_from_a_comma_separated_variable() -> None:
    tokens = ApiTokens.from_env({"DETECTOR_API_TOKENS": f" {A}, ,{B} "})
    assert tokens is not None and len(tokens) == 2
    assert tokens.accepts(f"Bearer {A}") and tokens.accepts(f"bearer {B}") and tokens.accepts(f"BEARER  {A} ")


def test_tokens_from_a_file_skip_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# rotated weekly\n\n{A}\n   # {B} retired\n")
    tokens = ApiTokens.from_env({"DETECTOR_API_TOKENS_FILE": str(path)})
    assert tokens is not None and len(tokens) == 1
    assert tokens.accepts(f"Bearer {A}")
    assert not tokens.accepts(f"Bearer {B}")


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", f"Basic {A}", f"Bearer {A}x", f"Bearer {A[:-1]}", f"{A}", f"Token {A}"],
)
def test_anything_but_a_known_bearer_token_is_refused(header: str | None) -> None:
    assert not ApiTokens([A, B]).accepts(header)


def test_tokens_never_show(tmp_path: Path) -> None:
    tokens = ApiTokens([A, B])
    assert A not in repr(tokens) and A not in str(tokens)
    path = tmp_path / "tokens"
    path.write_text(f"{A}\nshort\n")
    with pytest.raises(ConfigurationError) as raised:
        ApiTokens.from_env({"DETECTOR_API_TOKENS_FILE": str(path)})
    assert "token 2" in str(raised.value) and "short" not in str(raised.value).replace("too short", "")


def test_configuration_errors_name_what_to_fix(tmp_path: Path) -> None:
    assert ApiTokens.from_env({}) is None
    with pytest.raises(ConfigurationError, match="set one"):
        ApiTokens.from_env({"DETECTOR_API_TOKENS": A, "DETECTOR_API_TOKENS_FILE": "/x"})
    with pytest.raises(ConfigurationError, match="cannot be read"):
        ApiTokens.from_env({"DETECTOR_API_TOKENS_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ConfigurationError, match="holds no token"):
        ApiTokens.from_env({"DETECTOR_API_TOKENS_FILE": str(tmp_path / "empty")})
