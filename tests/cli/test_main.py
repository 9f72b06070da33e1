"""The `detector` entry point: its version, its commands, and `python -m detector`."""

import subprocess
import sys
from importlib import metadata

from click.testing import CliRunner

from detector.cli import main
from detector.cli.options import environment_variables


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"detector {metadata.version('sms-pumping-detector')}\n"


def test_python_m_detector_runs_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "detector", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    for command in ("replay", "policy", "simulate", "evaluate", "demo", "worker", "send-worker"):
        assert f"  {command} " in done.stdout


def test_every_setting_of_the_workers_has_its_variable() -> None:
    """Each option of the long-running commands can come from the environment (twelve-factor)."""
    for name in ("worker", "send-worker"):
        command = main.commands[name]
        options = [param for param in command.params if param.name != "help"]
        assert all(param.envvar for param in options), [p.name for p in options if not p.envvar]
    names = environment_variables(main)
    assert {"DETECTOR_KAFKA_BROKERS", "DETECTOR_STORE", "DETECTOR_SEND_LEDGER", "DETECTOR_POLICY"} <= names
