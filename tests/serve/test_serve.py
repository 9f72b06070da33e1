"""`detector serve` over real HTTP on the session's Redis: contract, auth, errors, challenges, metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from detector.events import parse_timestamp
from detector.hashing import KeyedHasher
from detector.testing.siteverify_double import SiteVerifyDouble
from tests.serve.conftest import (
    HASH_KEY,
    OTHER_TOKEN,
    TOKEN,
    ServeProcess,
    unique_id,
    unique_ip,
    unique_phone,
)

pytestmark = pytest.mark.redis


def check_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": unique_id(),
        "phone": unique_phone(),
        "client_ip": unique_ip(),  # counters of the session's Redis outlive a run: no IP piles up
        "flow": "login",
        "message": {"text": "Your code is 123456"},
    }
    body.update(fields)
    return body


async def test_a_check_is_answered_with_a_decision_at_the_servers_time(client: httpx.AsyncClient) -> None:
    body = check_body()
    before = time.time()
    response = await client.post("/v1/checks", json=body)
    after = time.time()
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["type"] == "otp_decision"
    assert decision["request_id"] == body["request_id"]
    assert decision["action"] in ("allow", "challenge", "block")
    assert decision["phone"] == body["phone"]
    assert before - 0.01 <= parse_timestamp(decision["ts"]) <= after + 0.01


async def test_a_time_far_from_the_servers_is_clamped_to_it(client: httpx.AsyncClient) -> None:
    ahead = time.time() + 30 * 86400
    response = await client.post("/v1/checks", json=check_body(ts=ahead))
    assert response.status_code == 200, response.text
    decision = response.json()
    assert "ts_clamped" in [reason["code"] for reason in decision["reasons"]]
    assert parse_timestamp(decision["ts"]) <= time.time() + 5 * 60 + 1  # time.max_skew of the default policy


async def test_a_trusted_callers_recent_time_is_kept(client: httpx.AsyncClient) -> None:
    sent = time.time() - 20.0
    decision = (await client.post("/v1/checks", json=check_body(ts=sent))).json()
    assert abs(parse_timestamp(decision["ts"]) - sent) < 0.01
    assert "ts_clamped" not in [reason["code"] for reason in decision["reasons"]]


async def test_a_check_with_upstream_bot_signal_is_challenged(client: httpx.AsyncClient) -> None:
    decision = (await client.post("/v1/checks", json=check_body(signals={"bot": True}))).json()
    assert decision["verdict"] == "challenge"
    assert "upstream_bot" in [reason["code"] for reason in decision["reasons"]]


# --- auth --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789abcdef", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", ""],
    ids=["missing", "wrong", "other-scheme", "longer", "empty-bearer", "empty"],
)
async def test_a_call_without_the_right_token_is_refused(
    server: ServeProcess, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for path, body in (
            ("/v1/checks", check_body()),
            ("/v1/feedback", {"request_id": "x", "outcome": "verified"}),
            ("/v1/challenges/x", {"challenge_id": "c", "result": "passed"}),
        ):
            response = await http.post(path, json=body, headers=headers)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in response.text


@pytest.mark.parametrize("token", [TOKEN, OTHER_TOKEN])
async def test_every_token_of_the_file_is_accepted(server: ServeProcess, token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.post(
            "/v1/checks", json=check_body(), headers={"Authorization": f"bearer {token}"}
        )
    assert response.status_code == 200, response.text


async def test_health_readiness_metrics_and_the_openapi_document_are_open(server: ServeProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.get("/healthz")).json() == {"status": "alive"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert (await http.get("/metrics")).status_code == 200
        document = (await http.get("/schema/openapi.json")).json()
    assert {"/v1/checks", "/v1/feedback", "/v1/challenges/{request_id}", "/healthz", "/readyz"} <= set(
        document["paths"]
    )
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert document["paths"]["/v1/checks"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": 5}, "$.phone"),
        ({"phone": ""}, "$.phone"),
        ({"phone_country": "gb"}, "$.phone_country"),
        ({"signals": {"bot": "yes"}}, "$.signals.bot"),
        ({"flow": "steal"}, "$.flow"),
        ({"message": {"text": 7}}, "$.message.text"),
        ({"ts": "yesterday"}, "$.ts"),
        ({"ts": 1e20}, "$.ts"),
        ({"ts": True}, "$.ts"),
        ({"request_id": None}, "$.request_id"),
    ],
)
async def test_an_invalid_field_is_a_422_that_names_it(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/checks", json=check_body(**change))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["error"]


async def test_a_missing_field_is_named_too(client: httpx.AsyncClient) -> None:
    body = check_body()
    del body["phone"]
    response = await client.post("/v1/checks", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "$.phone"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b'{"request_id": "a"'])
async def test_unreadable_json_is_a_400_or_422_never_a_500(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post("/v1/checks", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert "error" in response.json()


async def test_malformed_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/checks", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


async def test_a_body_over_64_kib_is_a_413(client: httpx.AsyncClient) -> None:
    body = check_body(user_agent="x" * 70_000)
    response = await client.post("/v1/checks", json=body)
    assert response.status_code == 413
    assert response.json()["error"]


async def test_unknown_paths_and_methods_are_answered_in_json(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/nothing")).status_code == 404
    wrong_method = await client.get("/v1/checks")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]


# --- feedback ----------------------------------------------------------------------------------------------


async def test_feedback_on_a_decided_request_is_applied_once(client: httpx.AsyncClient) -> None:
    body = check_body()
    assert (await client.post("/v1/checks", json=body)).status_code == 200
    first = await client.post("/v1/feedback", json={"request_id": body["request_id"], "outcome": "verified"})
    again = await client.post("/v1/feedback", json={"request_id": body["request_id"], "outcome": "verified"})
    assert first.status_code == 200, first.text
    assert first.json() == {"request_id": body["request_id"], "status": "applied"}
    assert again.json()["status"] == "duplicate"


async def test_feedback_on_an_unknown_request_is_a_404_with_the_status(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/feedback", json={"request_id": unique_id(), "outcome": "failed"})
    assert response.status_code == 404
    assert response.json()["status"] == "unknown"


async def test_invalid_feedback_names_its_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/feedback", json={"request_id": "r", "outcome": "maybe"})
    assert response.status_code == 422
    assert response.json()["field"] == "$.outcome"


# --- challenges --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"challenge_id": "c", "result": "passed", "token": "t"}, "$"),
        ({"challenge_id": "c"}, "$"),
        ({"result": "passed"}, "$.challenge_id"),
        ({"challenge_id": "", "result": "passed"}, "$.challenge_id"),
        ({"challenge_id": "c", "result": "maybe"}, "$.result"),
    ],
)
async def test_an_invalid_challenge_result_names_its_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post(f"/v1/challenges/{unique_id()}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def challenge_id(request_id: str) -> str:
    """What the service shows with a challenge: a digest of the request id under the service's hash key."""
    return KeyedHasher(HASH_KEY.encode())("challenge", request_id)


async def challenged(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    body = check_body(signals={"bot": True})
    decision = (await client.post("/v1/checks", json=body)).json()
    assert decision["action"] == "challenge", decision
    assert decision["challenge_id"] == challenge_id(body["request_id"])
    assert parse_timestamp(decision["challenge_expires"]) > time.time()
    return body, decision


async def test_a_result_for_a_request_never_challenged_is_a_404(client: httpx.AsyncClient) -> None:
    request_id = unique_id()
    response = await client.post(
        f"/v1/challenges/{request_id}", json={"challenge_id": challenge_id(request_id), "result": "passed"}
    )
    assert response.status_code == 404, response.text
    assert response.json()["status"] == "unknown"


async def test_a_passed_challenge_supersedes_the_decision_with_allow_once(client: httpx.AsyncClient) -> None:
    body, first = await challenged(client)
    path = f"/v1/challenges/{body['request_id']}"
    passed = await client.post(path, json={"challenge_id": first["challenge_id"], "result": "passed"})
    assert passed.status_code == 200, passed.text
    decision = passed.json()
    assert (decision["request_id"], decision["action"], decision["supersedes"]) == (
        body["request_id"],
        "allow",
        "challenge",
    )
    assert "challenge_passed" in [reason["code"] for reason in decision["reasons"]]
    again = await client.post(path, json={"challenge_id": first["challenge_id"], "result": "passed"})
    assert (again.status_code, again.json()["status"]) == (409, "duplicate")


async def test_a_failed_challenge_ends_in_a_block(client: httpx.AsyncClient) -> None:
    body, first = await challenged(client)
    failed = await client.post(
        f"/v1/challenges/{body['request_id']}",
        json={"challenge_id": first["challenge_id"], "result": "failed"},
    )
    assert failed.status_code == 200, failed.text
    assert (failed.json()["action"], failed.json()["supersedes"]) == ("block", "challenge")


async def test_a_challenge_id_not_shown_for_the_request_is_a_409(client: httpx.AsyncClient) -> None:
    body, _ = await challenged(client)
    forged = await client.post(
        f"/v1/challenges/{body['request_id']}",
        json={"challenge_id": challenge_id("another"), "result": "passed"},
    )
    assert (forged.status_code, forged.json()["status"]) == (409, "mismatch")


async def test_a_challenge_id_with_any_characters_is_a_mismatch_not_a_crash(
    client: httpx.AsyncClient,
) -> None:
    body, _ = await challenged(client)
    for forged in ("\u009d", "é" * 24, "\U0001f600"):
        response = await client.post(
            f"/v1/challenges/{body['request_id']}", json={"challenge_id": forged, "result": "passed"}
        )
        assert (response.status_code, response.json()["status"]) == (409, "mismatch"), response.text


async def test_a_result_repeating_another_number_is_not_accepted(client: httpx.AsyncClient) -> None:
    body, first = await challenged(client)
    response = await client.post(
        f"/v1/challenges/{body['request_id']}",
        json={
            "challenge_id": first["challenge_id"],
            "result": "passed",
            "phone": unique_phone(),
            "client_ip": body["client_ip"],
        },
    )
    assert (response.status_code, response.json()["status"]) == (409, "mismatch")  # never an allow for it


async def test_a_valid_captcha_token_passes_the_challenge(
    client: httpx.AsyncClient, siteverify: SiteVerifyDouble
) -> None:
    body, first = await challenged(client)
    token = siteverify.issue()
    seen = len(siteverify.seen)
    response = await client.post(
        f"/v1/challenges/{body['request_id']}",
        json={"challenge_id": first["challenge_id"], "token": token, "remote_ip": "198.51.100.7"},
    )
    assert [(s.response, s.remoteip, s.had_secret) for s in siteverify.seen[seen:]] == [
        (token, "198.51.100.7", True)
    ]
    assert response.status_code == 200, response.text
    assert (response.json()["action"], response.json()["supersedes"]) == ("allow", "challenge")


async def test_a_forged_or_reused_captcha_token_fails_the_challenge(
    client: httpx.AsyncClient, siteverify: SiteVerifyDouble
) -> None:
    body, first = await challenged(client)
    response = await client.post(
        f"/v1/challenges/{body['request_id']}",
        json={"challenge_id": first["challenge_id"], "token": "turnstile.forged-token"},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["action"], response.json()["supersedes"]) == ("block", "challenge")
    assert "challenge_failed" in [reason["code"] for reason in response.json()["reasons"]]


async def test_a_provider_without_a_verdict_is_a_503_to_retry(
    client: httpx.AsyncClient, siteverify: SiteVerifyDouble
) -> None:
    siteverify.fail_with = 500
    try:
        response = await client.post(
            f"/v1/challenges/{unique_id()}", json={"challenge_id": "c", "token": siteverify.issue()}
        )
    finally:
        siteverify.fail_with = None
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["status"] == "siteverify_unavailable"


async def test_a_slow_provider_is_cut_at_its_timeout(
    client: httpx.AsyncClient, siteverify: SiteVerifyDouble
) -> None:
    siteverify.slow = 5.0
    started = time.monotonic()
    try:
        response = await client.post(
            f"/v1/challenges/{unique_id()}", json={"challenge_id": "c", "token": siteverify.issue()}
        )
    finally:
        siteverify.slow = 0.0
    assert response.status_code == 503
    assert time.monotonic() - started < 3.0  # DETECTOR_CAPTCHA_TIMEOUT=1


# --- batching and metrics ---------------------------------------------------------------------------


async def test_concurrent_checks_each_get_their_own_decision(client: httpx.AsyncClient) -> None:
    bodies = [check_body() for _ in range(60)]
    responses = await asyncio.gather(*(client.post("/v1/checks", json=body) for body in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert [r.json()["request_id"] for r in responses] == [b["request_id"] for b in bodies]
    assert [r.json()["phone"] for r in responses] == [b["phone"] for b in bodies]


async def test_metrics_count_requests_by_route_and_status_and_decisions(
    client: httpx.AsyncClient, server: ServeProcess
) -> None:
    await client.post("/v1/checks", json=check_body())
    await client.post("/v1/checks", json=check_body(phone=5))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await http.post("/v1/checks", json=check_body())  # no token
        text = (await http.get("/metrics")).text
    assert 'detector_http_requests_total{method="POST",route="/v1/checks",status="200"}' in text
    assert 'detector_http_requests_total{method="POST",route="/v1/checks",status="422"}' in text
    assert 'detector_http_requests_total{method="POST",route="unrouted",status="401"}' in text
    assert 'detector_http_request_seconds_bucket{le="0.01",route="/v1/checks"}' in text
    assert 'detector_decisions_total{action="allow",mode="enforce",verdict="allow"}' in text
    assert 'detector_batch_size_count{topic="http"}' in text
    assert "detector_degraded_decisions_total 0.0" in text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"request_id": "a", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"request_id": "a", "signals": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
        b"[" * 60_000,
        b'{"request_id": "' + "\u202e".encode() * 200 + b'", "phone": "+447400123456", "client_ip": "::1"}',
        b'{"request_id": "a", "phone": "+447400123456", "client_ip": "203.0.113.1", "ts": NaN}',
        b'{"request_id": "a", "phone": "+447400123456", "client_ip": "203.0.113.1", "ts": 1e400}',
    ],
    ids=["deep-array", "deep-object", "unclosed", "long-id", "nan", "inf"],
)
@pytest.mark.parametrize("path", ["/v1/checks", "/v1/feedback", "/v1/challenges/r"])
async def test_hostile_bodies_get_a_client_error(client: httpx.AsyncClient, raw: bytes, path: str) -> None:
    response = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]


async def test_over_long_challenge_fields_are_named(client: httpx.AsyncClient) -> None:
    long_path = await client.post(
        f"/v1/challenges/{'r' * 129}", json={"challenge_id": "c", "result": "passed"}
    )
    assert (long_path.status_code, long_path.json()["field"]) == (422, "request_id")
    long_token = await client.post("/v1/challenges/r", json={"challenge_id": "c", "token": "t" * 5000})
    assert (long_token.status_code, long_token.json()["field"]) == (422, "$.token")
