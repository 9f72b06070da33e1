"""The external tools the deployment tests drive: Helm (built once with `go install`), promtool, podman."""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest

from tests.deploy.cli_env import REPO

SCRIPTS = REPO / "scripts"


@functools.cache
def helm() -> str:
    """Path of helm; scripts/helm.sh builds it from the Go module proxy the first time (minutes)."""
    done = subprocess.run(["bash", str(SCRIPTS / "helm.sh")], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        pytest.fail(f"cannot get helm:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    return path


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)
