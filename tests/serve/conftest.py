"""`detector serve` as a real process on a loopback port, called with a real HTTP client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from detector.testing.services import free_port
from detector.testing.siteverify_double import SiteVerifyDouble
from tests.test_stream import QUIET_POLICY

HASH_KEY = "serve-tests-hash-key-0123456789"
TOKEN = "serve-token-" + "a" * 24
OTHER_TOKEN = "serve-token-" + "b" * 24
CAPTCHA_SECRET = "0x4AAAAAAAserve-tests"


class ServeProcess:
    def __init__(self, workdir: Path, env: dict[str, str], *args: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"serve-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "detector", "serve", "--port", str(self.port), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"detector serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"detector serve did not answer within {timeout:.0f}s:\n{self.output()}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def serve_env(store: str, policy: Path | None = None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DETECTOR_")}
    env.update({"DETECTOR_HASH_KEY": HASH_KEY, "DETECTOR_STORE": store, "PYTHONUNBUFFERED": "1"})
    if policy is not None:
        env["DETECTOR_POLICY"] = str(policy)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def quiet_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve-policy") / "quiet.yaml"
    path.write_text(QUIET_POLICY)
    return path


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve-tokens") / "api-tokens"
    path.write_text(f"# callers of the service\n{TOKEN}\n\n  {OTHER_TOKEN}  \n# retired: old-token\n")
    return path


@pytest.fixture(scope="module")
def siteverify() -> Iterator[SiteVerifyDouble]:
    double = SiteVerifyDouble(CAPTCHA_SECRET, provider="turnstile")
    with double.in_thread():
        yield double


@pytest.fixture(scope="module")
def server(
    redis_url: str, tokens_file: Path, siteverify: SiteVerifyDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """One service on the session's Redis: default policy, tokens from a file, CAPTCHA on the double."""
    # A namespace of its own: what the engine learns (home countries, segments) must not carry over from
    # other tests on the session's Redis.
    env = serve_env(
        f"{redis_url}?namespace=serve-{uuid.uuid4().hex[:8]}:",
        DETECTOR_API_TOKENS_FILE=str(tokens_file),
        DETECTOR_CAPTCHA_VERIFY_URL=siteverify.url,
        DETECTOR_CAPTCHA_SECRET=CAPTCHA_SECRET,
        DETECTOR_CAPTCHA_TIMEOUT="1",
    )
    process = ServeProcess(tmp_path_factory.mktemp("serve"), env).wait_ready()
    yield process
    code = process.stop()
    assert code == 0, process.output()
    assert TOKEN not in process.output() and CAPTCHA_SECRET not in process.output()


@pytest.fixture
async def client(server: ServeProcess) -> httpx.AsyncClient:
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as http:
        yield http  # type: ignore[misc]


def unique_id(stem: str = "req") -> str:
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def unique_ip() -> str:
    """A private address (a possible client) in one of 65,536 /24s."""
    value = uuid.uuid4().int
    return f"10.{value % 256}.{(value >> 8) % 256}.{1 + (value >> 16) % 254}"


def unique_phone() -> str:
    """A valid UK mobile number that no other test run uses (07400 000000 – 07400 999999 range)."""
    return f"+447400{uuid.uuid4().int % 1_000_000:06d}"
