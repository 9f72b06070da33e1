"""Starting and stopping `detector serve`: no tokens no service, --insecure-local, SIGTERM mid-request."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from detector.testing.siteverify_double import SiteVerifyDouble
from tests.serve.conftest import CAPTCHA_SECRET, TOKEN, ServeProcess, serve_env, unique_id


def test_the_service_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "detector", "serve", "--port", "0"],
        env=serve_env("memory://"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "no API tokens" in done.stderr and "DETECTOR_API_TOKENS" in done.stderr
    assert "--insecure-local" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_service_refuses_to_start_without_a_hash_key(tmp_path: Path) -> None:
    env = serve_env("memory://", DETECTOR_API_TOKENS=TOKEN)
    del env["DETECTOR_HASH_KEY"]
    done = subprocess.run(
        [sys.executable, "-m", "detector", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DETECTOR_HASH_KEY" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("tokens", ["tiny-Q7x", "a-good-long-token-123456,with space in it!!"])
def test_weak_or_malformed_tokens_are_refused_without_showing_them(tmp_path: Path, tokens: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "detector", "serve", "--port", "0"],
        env=serve_env("memory://", DETECTOR_API_TOKENS=tokens),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "API token" in done.stderr
    for token in tokens.split(","):
        assert token not in done.stderr


async def test_insecure_local_serves_without_tokens_on_loopback_only(tmp_path: Path) -> None:
    env = serve_env("memory://", DETECTOR_SERVE_HOST="0.0.0.0")
    server = ServeProcess(tmp_path, env, "--insecure-local").wait_ready()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            body = {"request_id": unique_id(), "phone": "+447400123456", "client_ip": "203.0.113.9"}
            assert (await http.post("/v1/checks", json=body)).status_code == 200
    finally:
        assert server.stop() == 0
    log = server.output()
    assert "--insecure-local" in log and "no authentication" in log
    assert f"http://127.0.0.1:{server.port}" in log and "0.0.0.0" in log  # asked for, not bound


async def test_sigterm_finishes_the_request_in_flight_and_exits_0(tmp_path: Path) -> None:
    async with SiteVerifyDouble(CAPTCHA_SECRET) as double:
        env = serve_env(
            "memory://",
            DETECTOR_API_TOKENS=TOKEN,
            DETECTOR_CAPTCHA_VERIFY_URL=double.url,
            DETECTOR_CAPTCHA_SECRET=CAPTCHA_SECRET,
        )
        server = ServeProcess(tmp_path, env).wait_ready()
        double.slow = 1.5  # the request is in flight, waiting on the provider, when SIGTERM arrives
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            in_flight = asyncio.create_task(
                http.post(
                    f"/v1/challenges/{unique_id()}",
                    json={"challenge_id": "c", "token": double.issue()},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            )
            while not double.seen:
                await asyncio.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            answer = await in_flight
            code = await asyncio.to_thread(server.proc.wait, 20)
    assert (answer.status_code, answer.json()["status"]) == (409, "mismatch"), (
        answer.text
    )  # answered, not cut
    assert code == 0, server.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)
