"""The service and its store: readiness follows the store, a store outage never hangs a request, and a
number's limit holds across HTTP checks and Kafka-style engine calls on the same Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

from detector.events import Decision, OtpRequest
from detector.testing.services import RedisServer
from detector.wiring import build_engine
from tests.serve.conftest import HASH_KEY, TOKEN, ServeProcess, serve_env, unique_id, unique_phone

pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def check(phone: str, ip: str = "203.0.113.61") -> dict[str, object]:
    return {"request_id": unique_id(), "phone": phone, "client_ip": ip, "flow": "login"}


async def test_an_outage_degrades_checks_and_readiness_without_hanging(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = serve_env(redis_server.url, DETECTOR_API_TOKENS=TOKEN)
    server = ServeProcess(tmp_path, env).wait_ready()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=15) as http:
            assert (await http.get("/readyz")).status_code == 200
            redis_server.stop()
            # Degraded, not out: the service still decides (limits per process), so it stays in the Service.
            degraded = await http.get("/readyz")
            assert degraded.status_code == 200
            assert degraded.json()["status"] == "degraded" and "store" in degraded.json()["error"]
            assert (await http.get("/healthz")).status_code == 200

            started = time.monotonic()
            answers = await asyncio.gather(
                *(http.post("/v1/checks", json=check(unique_phone())) for _ in range(5))
            )
            assert time.monotonic() - started < 6.0  # the engine's deadline, not a hang
            assert [a.status_code for a in answers] == [200] * 5
            for answer in answers:  # the policy's fail mode (default: degrade) applied, and said
                assert "state_degraded" in [r["code"] for r in answer.json()["reasons"]], answer.text
            feedback = await http.post("/v1/feedback", json={"request_id": "r", "outcome": "verified"})
            assert (feedback.status_code, feedback.json()["status"]) == (503, "unavailable")

            redis_server.start()
            deadline = time.monotonic() + 15
            while (await http.get("/readyz")).json()["status"] != "ready":
                assert time.monotonic() < deadline, "not ready again after the store came back"
                await asyncio.sleep(0.2)
            metrics = (await http.get("/metrics")).text
        assert "detector_degraded_decisions_total 5.0" in metrics
        assert 'detector_store_errors_total{operation="feedback"} 1.0' in metrics
    finally:
        assert server.stop() == 0, server.output()


async def test_a_numbers_limit_holds_across_http_and_kafka_workers(
    redis_url: str, quiet_policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 sends per number per 30 minutes: 6 decided by a worker's engine, 6 over HTTP, 10 allowed in all."""
    # A namespace of its own: counters the session's other tests left (learned home countries, segments)
    # must not decide these requests.
    store_url = f"{redis_url}?namespace=limit-{uuid.uuid4().hex[:8]}:"
    server = ServeProcess(
        tmp_path, serve_env(store_url, quiet_policy, DETECTOR_API_TOKENS=TOKEN)
    ).wait_ready()
    monkeypatch.setenv("DETECTOR_HASH_KEY", HASH_KEY)
    worker_engine = build_engine(str(quiet_policy), store_url)  # what `detector worker` builds
    phone = unique_phone()
    actions: list[tuple[str, str]] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=15) as http:
            for round_ in range(4):
                for _ in range(3):
                    if round_ % 2 == 0:
                        now = time.time()
                        request = OtpRequest(
                            request_id=unique_id(), ts=now, phone=phone, client_ip="203.0.113.62"
                        )
                        [decision] = await worker_engine.process([request], references=[now])
                        assert isinstance(decision, Decision)
                        actions.append(("kafka", decision.action))
                    else:
                        answer = await http.post("/v1/checks", json=check(phone))
                        assert answer.status_code == 200, answer.text
                        actions.append(("http", answer.json()["action"]))
    finally:
        await worker_engine.store.close()
        assert server.stop() == 0, server.output()
    allowed = [path for path, action in actions if action == "allow"]
    assert len(allowed) == 10, actions
    assert {"kafka", "http"} <= set(allowed)
    assert [action for _, action in actions[10:]] == ["block", "block"]


async def test_the_limit_holds_when_http_and_worker_race_for_the_last_slots(
    redis_url: str, quiet_policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """15 checks over HTTP and 15 worker decisions, all at once, for one number: exactly 10 allowed."""
    # A namespace of its own: counters the session's other tests left (learned home countries, segments)
    # must not decide these requests.
    store_url = f"{redis_url}?namespace=limit-{uuid.uuid4().hex[:8]}:"
    server = ServeProcess(
        tmp_path, serve_env(store_url, quiet_policy, DETECTOR_API_TOKENS=TOKEN)
    ).wait_ready()
    monkeypatch.setenv("DETECTOR_HASH_KEY", HASH_KEY)
    worker_engine = build_engine(str(quiet_policy), store_url)
    phone = unique_phone()

    async def over_http(http: httpx.AsyncClient) -> str:
        answer = await http.post("/v1/checks", json=check(phone))
        assert answer.status_code == 200, answer.text
        return str(answer.json()["action"])

    async def by_worker() -> str:
        now = time.time()
        request = OtpRequest(request_id=unique_id(), ts=now, phone=phone, client_ip="203.0.113.63")
        [decision] = await worker_engine.process([request], references=[now])
        assert isinstance(decision, Decision)
        return decision.action

    try:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=15) as http:
            actions = await asyncio.gather(
                *(over_http(http) for _ in range(15)), *(by_worker() for _ in range(15))
            )
    finally:
        await worker_engine.store.close()
        assert server.stop() == 0, server.output()
    assert actions.count("allow") == 10, actions
    assert actions.count("block") == 20


async def test_not_ready_until_the_store_first_answers(redis_server: RedisServer, tmp_path: Path) -> None:
    """A store URL that points nowhere never makes a ready service (it would decide everything degraded)."""
    redis_server.stop()
    env = serve_env(redis_server.url, DETECTOR_API_TOKENS=TOKEN)
    server = ServeProcess(tmp_path, env)
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=15) as http:
            deadline = time.monotonic() + 30
            while True:  # wait for the process to answer at all
                try:
                    not_ready = await http.get("/readyz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, server.output()
                    await asyncio.sleep(0.2)
            assert (not_ready.status_code, not_ready.json()["status"]) == (503, "unavailable")
            redis_server.start()
            while (await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "not ready once the store answered"
                await asyncio.sleep(0.2)
    finally:
        assert server.stop() == 0, server.output()
