"""CLI tests see only the settings they give, whatever `make services` variables the shell has loaded."""

import os

import pytest


@pytest.fixture(autouse=True)
def no_settings_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DETECTOR_", "EIGHTBYEIGHT_")):
            monkeypatch.delenv(name)
