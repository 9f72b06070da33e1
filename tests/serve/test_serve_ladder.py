"""The delay rung over real HTTP: `detector serve` answers `delay` with `retry_after`, per the contract."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.serve.conftest import TOKEN, ServeProcess, serve_env, unique_id, unique_ip, unique_phone

pytestmark = pytest.mark.redis

SCHEMAS = Path(__file__).parent.parent.parent / "schemas"
LADDER_POLICY = """\
version: serve-ladder-1
score: {delay_at: 15, delay_for: 30s}
rules:
  retry_delay: {mode: "off"}
"""


@pytest.fixture(scope="module")
def ladder_server(
    redis_url: str, tokens_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("serve-ladder")
    policy = folder / "policy.yaml"
    policy.write_text(LADDER_POLICY)
    env = serve_env(
        f"{redis_url}?namespace=ladder-{uuid.uuid4().hex[:8]}:",
        policy,
        DETECTOR_API_TOKENS_FILE=str(tokens_file),
    )
    process = ServeProcess(folder, env).wait_ready()
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture
async def client(ladder_server: ServeProcess) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=ladder_server.url, headers=headers, timeout=10) as http:
        yield http


async def test_a_check_in_the_delay_band_is_delayed_with_retry_after(client: httpx.AsyncClient) -> None:
    phone, ip = unique_phone(), unique_ip()
    body = {"phone": phone, "client_ip": ip, "signals": {"anonymizer": True}, "message": {"text": "code 1"}}
    first = (await client.post("/v1/checks", json={"request_id": unique_id(), **body})).json()
    assert (first["action"], first["verdict"], first["retry_after"]) == ("delay", "delay", 30.0)
    assert "challenge_id" not in first
    validator = jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / "otp_decision.schema.json").read_text())
    )
    validator.validate({"type": "otp_decision", **first})
    again = (await client.post("/v1/checks", json={"request_id": unique_id(), **body})).json()
    assert again["action"] == "delay" and 0 < again["retry_after"] < 30.0  # the rest of the wait
    plain = {"request_id": unique_id(), "phone": unique_phone(), "client_ip": unique_ip()}
    assert (await client.post("/v1/checks", json=plain)).json()["action"] == "allow"
