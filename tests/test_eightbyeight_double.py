"""The 8x8 double: it must refuse what 8x8's contract refuses, and answer what the contract describes.

Requests here are raw httpx calls, not the client, so each test says exactly what goes on the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.testing.eightbyeight_double import (
    BATCH,
    CONTRACT_CODE,
    INVALID_MSISDN,
    SMS_API,
    SPECS_ENV,
    Contract,
    Drop,
    EightByEightDouble,
    RateLimited,
    ServerError,
    Slow,
    specs_dir,
)

KEY = "test-key-not-a-real-8x8-key"
SEND_PATH = "/api/v1/subaccounts/acme-otp/messages"
BATCH_PATH = "/api/v1/subaccounts/acme-otp/messages/batch"
GOOD = {
    "destination": "+6591234567",
    "text": "Your code is 123456",
    "clientMessageId": "req-1",
    "clientIp": "203.0.113.9",
    "track": "Outcome",
}


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract()


@pytest.fixture
async def double(contract: Contract) -> AsyncIterator[EightByEightDouble]:
    async with EightByEightDouble(api_key=KEY, contract=contract) as double:
        yield double


@pytest.fixture
async def http(double: EightByEightDouble) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=double.base_url, headers=headers, timeout=5) as client:
        yield client


def assert_answer_matches_contract(
    contract: Contract, response: httpx.Response, *, as_status: int = 0
) -> None:
    errors = contract.response_errors(
        response.request.method,
        response.request.url.path,
        as_status or response.status_code,
        response.content,
        content_type=response.headers.get("content-type", ""),
    )
    assert errors == []


# --- requests that keep the contract ---


async def test_a_valid_send_is_queued_and_answered_as_the_contract_describes(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    response = await http.post(SEND_PATH, json=GOOD)

    assert response.status_code == 200
    assert_answer_matches_contract(contract, response)
    body = response.json()
    assert uuid.UUID(body["umid"])
    assert body["status"] == {"code": "QUEUED", "description": "SMS is accepted and queued for processing"}
    assert body["clientMessageId"] == "req-1"
    assert double.violations == []
    [sent] = double.sent
    assert (sent.umid, sent.sub_account_id, sent.destination) == (body["umid"], "acme-otp", "+6591234567")
    assert (sent.client_message_id, sent.client_ip, sent.track) == ("req-1", "203.0.113.9", "Outcome")


async def test_a_rejected_destination_is_answered_200_rejected(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    double.reject("6591234567")

    response = await http.post(SEND_PATH, json=GOOD)

    assert response.status_code == 200
    assert_answer_matches_contract(contract, response)
    assert response.json()["status"] == {"code": "REJECTED", "description": INVALID_MSISDN}
    assert double.sent == [] and [m.client_message_id for m in double.rejected] == ["req-1"]


async def test_a_batch_lists_each_message_when_asked(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    double.reject("+6590000002")
    messages = [{**GOOD, "destination": f"+659000000{i}", "clientMessageId": f"req-{i}"} for i in (1, 2, 3)]

    listed = await http.post(
        BATCH_PATH,
        json={"messages": messages, "clientBatchId": "b-1", "includeMessagesInResponse": True},
    )
    summary = await http.post(BATCH_PATH, json={"messages": messages[:1], "clientIp": "198.51.100.7"})

    for response in (listed, summary):
        assert response.status_code == 200
        assert_answer_matches_contract(contract, response)
    body = listed.json()
    assert (body["acceptedCount"], body["rejectedCount"], body["clientBatchId"]) == (2, 1, "b-1")
    assert [m["status"]["code"] for m in body["messages"]] == ["QUEUED", "REJECTED", "QUEUED"]
    assert "messages" not in summary.json()
    assert double.violations == []
    assert [m.client_message_id for m in double.sent] == ["req-1", "req-3", "req-1"]
    assert double.sent[0].batch_id == body["batchId"]


async def test_feedback_is_recorded_for_a_sent_message(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    umid = (await http.post(SEND_PATH, json=GOOD)).json()["umid"]

    response = await http.post(
        f"{SEND_PATH}/{umid}/feedback", json={"outcome": "success", "timestamp": "2026-11-23T08:55:00Z"}
    )
    unknown = await http.post(f"{SEND_PATH}/{uuid.uuid4()}/feedback", json={"outcome": "failure"})

    assert response.status_code == 200
    assert_answer_matches_contract(contract, response)
    assert [(f.umid, f.outcome, f.timestamp) for f in double.feedback] == [
        (umid, "success", "2026-11-23T08:55:00Z")
    ]
    assert unknown.status_code == 400 and unknown.json()["message"] == "Message not found."
    assert_answer_matches_contract(contract, unknown)
    assert double.violations == []


# --- requests that break it: the double must be able to fail ---

BROKEN: list[tuple[str, str, Any, str]] = [
    ("destination abc", SEND_PATH, {**GOOD, "destination": "abc"}, "$.destination"),
    ("destination with a leading 0", SEND_PATH, {**GOOD, "destination": "06591234567"}, "$.destination"),
    ("missing text", SEND_PATH, {k: v for k, v in GOOD.items() if k != "text"}, "'text' is a required"),
    ("bad sub-account", "/api/v1/subaccounts/a!/messages", GOOD, "parameter subAccountId"),
    ("sub-account too long", f"/api/v1/subaccounts/{'a' * 51}/messages", GOOD, "parameter subAccountId"),
    ("unknown track", SEND_PATH, {**GOOD, "track": "yes"}, "$.track"),
    ("clientMessageId over 350", SEND_PATH, {**GOOD, "clientMessageId": "x" * 351}, "$.clientMessageId"),
    ("text not a string", SEND_PATH, {**GOOD, "text": 123456}, "$.text"),
    ("no body", SEND_PATH, None, "no JSON body"),
    ("empty batch", BATCH_PATH, {"messages": []}, "$.messages"),
    ("batch item without text", BATCH_PATH, {"messages": [{"destination": "+6591234567"}]}, "$.messages[0]"),
    ("feedback outcome", f"{SEND_PATH}/some-umid/feedback", {"outcome": "meh"}, "$.outcome"),
    (
        "feedback time",
        f"{SEND_PATH}/u/feedback",
        {"outcome": "success", "timestamp": "yesterday"},
        "$.timestamp",
    ),
]


@pytest.mark.parametrize(("path", "body", "expected"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
async def test_a_request_that_breaks_the_schema_is_refused_and_recorded(
    double: EightByEightDouble,
    http: httpx.AsyncClient,
    contract: Contract,
    path: str,
    body: Any,
    expected: str,
) -> None:
    response = await http.post(path, json=body) if body is not None else await http.post(path)

    assert response.status_code == 400
    assert_answer_matches_contract(contract, response)
    assert response.json()["code"] == CONTRACT_CODE
    [violation] = double.violations
    assert violation.path == path
    assert any(expected in error for error in violation.errors), violation.errors
    assert double.sent == [] and double.feedback == []


async def test_a_body_that_is_not_json_is_a_violation(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    response = await http.post(SEND_PATH, content=b"{not json", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert len(double.violations) == 1


async def test_no_credentials_is_401_and_a_violation(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    for authorization in ("", "Basic dXNlcjpwYXNz"):
        response = await http.post(SEND_PATH, json=GOOD, headers={"Authorization": authorization})
        assert response.status_code == 401
        assert_answer_matches_contract(contract, response)
        assert response.json()["code"] == 1200
    assert len(double.violations) == 2
    assert double.sent == []


async def test_a_wrong_key_is_401_but_keeps_the_contract(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    response = await http.post(SEND_PATH, json=GOOD, headers={"Authorization": "Bearer some-other-key"})

    assert response.status_code == 401
    assert_answer_matches_contract(contract, response)
    assert double.violations == [] and double.sent == []


async def test_paths_and_methods_outside_the_document_are_violations(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    assert (await http.post("/api/v1/subaccounts/acme-otp/sms", json=GOOD)).status_code == 404
    assert (await http.put(SEND_PATH, json=GOOD)).status_code == 405
    assert [v.method for v in double.violations] == ["POST", "PUT"]


async def test_documented_operations_it_does_not_play_are_501_not_violations(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    response = await http.get("/api/v1/accounts/0123456789abcdef0123456789abcdef/webhooks")

    assert response.status_code == 501
    assert double.violations == []


# --- the fast check in the double agrees with openapi-core's reading of the document ---

AUTH = {"Authorization": f"Bearer {KEY}"}


def test_the_fast_check_agrees_with_openapi_core_on_the_cases_above(contract: Contract) -> None:
    cases = [("good", SEND_PATH, GOOD, ""), ("good batch", BATCH_PATH, {"messages": [GOOD]}, ""), *BROKEN]
    for name, path, body, _ in cases:
        raw = json.dumps(body).encode() if body is not None else b""
        fast = contract.check("POST", path, AUTH, raw, "application/json")
        reference = contract.reference_request_errors("POST", path, AUTH, raw, "application/json")
        if name == "no body":  # the document does not mark these bodies required; the double does
            assert fast.kind == "invalid" and reference == []
        else:
            assert (fast.kind == "ok") == (reference == []), (name, fast.errors, reference)
    for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer"}):
        assert contract.check("POST", SEND_PATH, headers, b"{}", "application/json").kind == "unauthenticated"
        assert contract.reference_request_errors("POST", SEND_PATH, headers, b"{}", "application/json")
    assert contract.check("POST", "/api/v2/x", AUTH, b"{}", "application/json").kind == "no_such_path"
    assert contract.check("PATCH", SEND_PATH, AUTH, b"{}", "application/json").kind == "no_such_method"


_anything = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
_valid_sms_request = st.fixed_dictionaries(
    {"destination": st.from_regex(r"\+?[1-9][0-9]{6,14}", fullmatch=True), "text": st.text(max_size=20)},
    optional={
        "clientMessageId": st.text(max_size=350),
        "clientIp": st.text(max_size=15),
        "track": st.sampled_from(["Outcome", "None"]),
        "encoding": st.sampled_from(["AUTO", "GSM7", "UCS2"]),
        "source": st.text(max_size=16),
        "country": st.text(max_size=2),
        "scheduled": st.just("2026-11-23T08:55:00Z"),
        "dlrCallbackUrl": st.just("https://example.com/dlr"),
    },
)
_field = st.sampled_from(
    ["destination", "text", "clientMessageId", "track", "encoding", "source", "scheduled"]
)
_breakage = st.one_of(
    st.tuples(_field, _anything),
    st.tuples(_field, st.sampled_from(["+0123456789", "12345", "x" * 351, "outcome", "UTF8", "soon"])),
    st.tuples(_field, st.just(None)).map(lambda broken: (broken[0], "<delete>")),
)


def _break(request: tuple[dict[str, Any], tuple[str, Any] | None]) -> dict[str, Any]:
    body, breakage = request
    if breakage is not None:
        name, value = breakage
        if value == "<delete>":
            body.pop(name, None)
        else:
            body[name] = value
    return body


# About half valid, half with one field broken (or not: a "breakage" can happen to be valid too).
_sms_request = st.tuples(_valid_sms_request, st.one_of(st.none(), _breakage)).map(_break)
_sub_account = st.one_of(
    st.from_regex(r"[A-Za-z0-9\-._&]{3,50}", fullmatch=True),
    st.text(alphabet="abcXYZ019-._&! ~*", min_size=1, max_size=53),
)


@settings(max_examples=200, deadline=None)
@given(
    sub_account=_sub_account,
    body=st.one_of(
        _sms_request.map(lambda body: ("messages", body)),
        st.lists(_sms_request, max_size=3).map(lambda messages: ("messages/batch", {"messages": messages})),
    ),
)
def test_the_fast_check_agrees_with_openapi_core_on_generated_requests(
    contract: Contract, sub_account: str, body: tuple[str, Any]
) -> None:
    suffix, payload = body
    path = f"/api/v1/subaccounts/{sub_account}/{suffix}"
    raw = json.dumps(payload).encode()

    fast = contract.check("POST", path, AUTH, raw, "application/json")
    reference = contract.reference_request_errors("POST", path, AUTH, raw, "application/json")

    assert (fast.kind == "ok") == (reference == []), (fast.errors, reference)


# --- faults ---


async def test_injected_faults_apply_to_the_next_requests_in_order(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    double.inject(RateLimited("7"), ServerError(503, retry_after="2"), ServerError())

    limited, unavailable, failed, ok = [await http.post(SEND_PATH, json=GOOD) for _ in range(4)]

    assert (limited.status_code, limited.headers["Retry-After"], limited.json()["code"]) == (429, "7", 429)
    # The send operations document 400/401/500 only; 429 and 503 carry the same ErrorResponse schema.
    assert_answer_matches_contract(contract, limited, as_status=400)
    assert (unavailable.status_code, unavailable.headers["Retry-After"]) == (503, "2")
    assert_answer_matches_contract(contract, unavailable, as_status=500)
    assert (failed.status_code, failed.json()["code"]) == (500, 2000)
    assert_answer_matches_contract(contract, failed)
    assert ok.status_code == 200
    assert len(double.sent) == 1


async def test_a_rule_applies_to_every_matching_request(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    double.add_rule(ServerError(), when=lambda seen: seen.operation == BATCH)

    batch = [await http.post(BATCH_PATH, json={"messages": [GOOD]}) for _ in range(2)]
    single = await http.post(SEND_PATH, json=GOOD)

    assert [r.status_code for r in batch] == [500, 500]
    assert single.status_code == 200
    double.clear_faults()
    assert (await http.post(BATCH_PATH, json={"messages": [GOOD]})).status_code == 200


async def test_the_contract_is_checked_before_a_fault(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    double.inject(RateLimited())

    broken = await http.post(SEND_PATH, json={**GOOD, "destination": "abc"})
    limited = await http.post(SEND_PATH, json=GOOD)

    assert (broken.status_code, limited.status_code) == (400, 429)


async def test_a_dropped_connection_gets_no_answer(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    double.inject(Drop())

    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(SEND_PATH, json=GOOD)
    assert (await http.post(SEND_PATH, json=GOOD)).status_code == 200


async def test_a_slow_answer_outlasts_a_short_timeout_and_then_comes(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    double.inject(Slow(60), Slow(0.05))

    with pytest.raises(httpx.ReadTimeout):
        await http.post(SEND_PATH, json=GOOD, timeout=0.2)
    late = await http.post(SEND_PATH, json=GOOD)

    assert late.status_code == 200


async def test_stopping_releases_slow_answers(contract: Contract) -> None:
    double = EightByEightDouble(api_key=KEY, contract=contract)
    await double.start()
    double.inject(Slow(600))
    async with httpx.AsyncClient(
        base_url=double.base_url, headers={"Authorization": f"Bearer {KEY}"}
    ) as http:
        pending = asyncio.create_task(http.post(SEND_PATH, json=GOOD, timeout=30))
        await asyncio.wait_for(_arrived(double), timeout=5)
        await asyncio.wait_for(double.stop(), timeout=5)
        await asyncio.wait_for(pending, timeout=5)  # answered or cut off, but not left hanging


async def _arrived(double: EightByEightDouble) -> None:
    while not double.requests:
        await asyncio.sleep(0.005)


# --- running it outside pytest's loop ---


def test_it_serves_from_a_background_thread(contract: Contract) -> None:
    with EightByEightDouble(api_key=KEY, contract=contract).in_thread() as double:
        response = httpx.post(
            double.base_url + SEND_PATH, json=GOOD, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        )
        assert response.status_code == 200
        assert len(double.sent) == 1


def test_it_serves_as_a_process() -> None:
    env = {**os.environ, "EIGHTBYEIGHT_API_KEY": KEY}
    cmd = [sys.executable, "-m", "detector.testing.eightbyeight_double", "--port", "0"]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            base_url = line.rsplit(" ", 1)[-1].strip()
            assert base_url.startswith("http://127.0.0.1:"), line
            response = httpx.post(
                base_url + SEND_PATH, json=GOOD, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
            )
            assert response.status_code == 200
        finally:
            process.terminate()


def test_the_documents_are_found_or_the_error_says_where_to_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (specs_dir() / SMS_API).is_file()
    monkeypatch.setenv(SPECS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=SPECS_ENV):
        specs_dir()


def test_the_response_check_can_fail(contract: Contract) -> None:
    """The responses checked above would pass a check that accepts anything; this one does not."""
    errors = contract.response_errors("POST", SEND_PATH, 200, b'{"umid": 1, "status": {"code": "SENT"}}')
    assert any("$.umid" in e for e in errors)
    assert any("$.status.code" in e for e in errors)
    assert contract.response_errors(
        "POST", SEND_PATH, 400, b'{"code": "x", "errorId": "e", "timestamp": "t"}'
    )


async def test_the_log_export_and_the_balance_answer_as_the_contract_describes(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    await http.post(SEND_PATH, json=GOOD)
    started = await http.post("/api/v1/subaccounts/acme-otp/messages/exports", json={"limit": 0})
    assert started.status_code == 202
    assert_answer_matches_contract(contract, started)
    result_path = f"/api/v1/subaccounts/acme-otp/messages/exports/{started.json()['jobId']}"
    running = await http.get(result_path)
    assert running.json() == {"status": "running"}
    assert_answer_matches_contract(contract, running)
    done = await http.get(result_path)
    assert done.json()["status"] == "succeeded"
    assert_answer_matches_contract(contract, done)
    (link,) = done.json()["data"]
    csv_file = await http.get(link)
    assert csv_file.status_code == 200
    header, row = csv_file.text.splitlines()
    assert header.split(",")[:3] == ["umid", "subaccountid", "direction"]
    assert double.sent[0].umid in row and "req-1" in row and "6591234567" not in row, "number redacted"
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(link)).status_code == 401, "the file needs the key"
    missing = await http.get("/api/v1/subaccounts/acme-otp/messages/exports/nope")
    assert missing.status_code == 404
    assert_answer_matches_contract(contract, missing)
    balance = await http.get("/api/v1/accounts/0c4b8f52-6a1e-4d3b-9f2a-5e7d1c3b2a10/balance")
    assert balance.status_code == 200 and balance.json()["currency"] == "USD"
    assert_answer_matches_contract(contract, balance)
    assert double.violations == []


async def test_faults_after_accepting_queue_the_message_and_lose_the_answer(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    double.inject(Drop(after_accepting=True), Slow(2.0, after_accepting=True), operations=["Send-Sms-Single"])
    with pytest.raises(httpx.TransportError):
        await http.post(SEND_PATH, json=GOOD)
    with pytest.raises(httpx.TimeoutException):
        await http.post(SEND_PATH, json={**GOOD, "clientMessageId": "req-2"}, timeout=0.3)
    assert [sms.client_message_id for sms in double.sent] == ["req-1", "req-2"]


async def test_injected_faults_can_wait_for_the_operation_they_are_for(
    double: EightByEightDouble, http: httpx.AsyncClient
) -> None:
    double.inject(ServerError(502), operations=["Send-Many-Sms"])
    assert (await http.post(SEND_PATH, json=GOOD)).status_code == 200
    assert (await http.post(BATCH_PATH, json={"messages": [GOOD]})).status_code == 502
    assert (await http.post(BATCH_PATH, json={"messages": [GOOD]})).status_code == 200


ACCOUNT = "0c4b8f52-6a1e-4d3b-9f2a-5e7d1c3b2a10"


async def test_the_price_list_answers_as_the_contract_describes(
    double: EightByEightDouble, http: httpx.AsyncClient, contract: Contract
) -> None:
    double.prices = {"SG": [0.0099, 0.012], "GB": [0.04]}
    listed = await http.get(f"/api/v1/accounts/{ACCOUNT}/prices", params={"direction": "outbound"})
    assert listed.status_code == 200
    assert_answer_matches_contract(contract, listed)
    [account] = listed.json()["subAccounts"]
    [outbound] = account["outbound"]
    amounts = {c["alpha2Code"]: [o["price"]["amount"] for o in c["operators"]] for c in outbound["countries"]}
    assert amounts == {"GB": [0.04], "SG": [0.0099, 0.012]}
    one = await http.get(f"/api/v1/accounts/{ACCOUNT}/prices", params={"country": "GB"})
    assert [c["alpha2Code"] for c in one.json()["subAccounts"][0]["outbound"][0]["countries"]] == ["GB"]
    assert double.violations == []


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"direction": "sideways"}, "query parameter direction"),
        ({"country": "GBR"}, "query parameter country"),
        ({"mcc": "five"}, "query parameter mcc"),
        ({"currency": "USD"}, "not a parameter of get-price-list"),
    ],
)
async def test_price_list_query_parameters_are_held_to_the_contract(
    double: EightByEightDouble, http: httpx.AsyncClient, query: dict[str, str], problem: str
) -> None:
    refused = await http.get(f"/api/v1/accounts/{ACCOUNT}/prices", params=query)
    assert refused.status_code == 400 and problem in refused.json()["message"]
    assert len(double.violations) == 1
