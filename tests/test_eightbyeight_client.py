"""The 8x8 client against the contract-checking double, plus its key, retry and rate-limit pieces.

Every client test talks HTTP to the double on loopback and ends by asserting the double saw no
contract violation (except the test that provokes one). Waits go through a fake clock: the only real
waiting is the client's own timeout in the timeout test.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import random
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from detector.send import (
    MAX_BATCH,
    NO_RETRIES,
    ApiKey,
    EightByEightClient,
    EightByEightConfig,
    FeedbackAccepted,
    PermanentFailure,
    Queued,
    Rejected,
    Retrier,
    Retry,
    RetryableFailure,
    RetryPolicy,
    Secret,
    SecretError,
    SmsMessage,
    TokenBucket,
    load_api_key,
    parse_retry_after,
)
from detector.send.eightbyeight import (
    ACCOUNT_ID,
    DESTINATION,
    DESTINATION_PATTERN,
    MAX_CLIENT_MESSAGE_ID,
    MAX_SOURCE,
    SUB_ACCOUNT_ID,
    Balance,
)
from detector.testing.eightbyeight_double import (
    INVALID_MSISDN,
    Contract,
    Drop,
    EightByEightDouble,
    RateLimited,
    ServerError,
    Slow,
)

KEY = "k3y-Th1s-Must-N3ver-Be-Sh0wn-0123456789"
SUB_ACCOUNT = "acme-otp"
ACCOUNT = "0c4b8f52-6a1e-4d3b-9f2a-5e7d1c3b2a10"


class FakeTime:
    """A monotonic clock that moves only when something sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let others run, as a real sleep would


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract()


@pytest.fixture
async def double(contract: Contract) -> AsyncIterator[EightByEightDouble]:
    async with EightByEightDouble(api_key=KEY, contract=contract) as double:
        yield double
        if double.violations:  # tests that provoke one on purpose clear them
            pytest.fail(f"the client broke the 8x8 contract: {double.violations}")


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


ClientFactory = Callable[..., EightByEightClient]


@pytest.fixture
async def make_client(double: EightByEightDouble, fake_time: FakeTime) -> AsyncIterator[ClientFactory]:
    clients: list[EightByEightClient] = []

    def make(
        *, key: str = KEY, base_url: str | None = None, timeout: float = 5.0, **options: Any
    ) -> EightByEightClient:
        config = EightByEightConfig(
            SUB_ACCOUNT, ApiKey(key), base_url=base_url or double.base_url, timeout=timeout
        )
        options.setdefault("clock", fake_time.clock)
        options.setdefault("sleep", fake_time.sleep)
        options.setdefault("rng", random.Random(7))
        client = EightByEightClient(config, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def otp(n: int = 1, destination: str = "+6591234567") -> SmsMessage:
    return SmsMessage(destination, f"Your code is {n:06d}", f"req-{n}", client_ip="203.0.113.9")


# --- one send, every outcome ---


async def test_send_is_queued_with_everything_8x8_needs(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    result = await make_client().send(otp())

    assert isinstance(result, Queued)
    [sent] = double.sent
    assert (result.umid, result.client_message_id) == (sent.umid, "req-1")
    assert (sent.destination, sent.text) == ("+6591234567", "Your code is 000001")
    assert (sent.client_message_id, sent.client_ip, sent.track) == ("req-1", "203.0.113.9", "Outcome")


async def test_send_rejected_by_8x8_carries_its_reason(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    double.reject("+6591234567")

    result = await make_client().send(otp())

    assert isinstance(result, Rejected)
    assert (result.code, result.message, result.client_message_id) == ("REJECTED", INVALID_MSISDN, "req-1")
    assert uuid.UUID(result.umid)


async def test_a_message_that_breaks_the_contract_fails_permanently_without_retry(
    double: EightByEightDouble, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    result = await make_client().send(SmsMessage("abc", "code 1", "req-1"))

    assert isinstance(result, PermanentFailure)
    assert (result.reason, result.status, result.code) == ("bad_request", 400, 1000)
    assert result.error_id is not None and uuid.UUID(result.error_id)
    assert "destination" in result.message
    assert len(double.violations) == 1 and len(double.requests) == 1
    assert fake_time.sleeps == []
    double.violations.clear()


async def test_a_wrong_key_fails_permanently_without_retry(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    result = await make_client(key="not-the-key").send(otp())

    assert isinstance(result, PermanentFailure)
    assert (result.reason, result.status, result.code) == ("unauthorized", 401, 1200)
    assert len(double.requests) == 1


async def test_429_waits_as_long_as_retry_after_says(
    double: EightByEightDouble, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    double.inject(RateLimited("3"))

    result = await make_client().send(otp())

    assert isinstance(result, Queued)
    assert len(double.requests) == 2
    [wait] = fake_time.sleeps
    assert wait >= 3


async def test_429_with_an_http_date_retry_after(
    double: EightByEightDouble, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    now = 1_795_000_000.0
    double.inject(RateLimited(format_datetime(datetime.fromtimestamp(now + 7, UTC), usegmt=True)))

    result = await make_client(wall_clock=lambda: now).send(otp())

    assert isinstance(result, Queued)
    assert fake_time.sleeps[0] >= 7


async def test_500_is_retried_with_backoff_then_succeeds(
    double: EightByEightDouble, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    double.inject(ServerError(), ServerError(503))
    policy = RetryPolicy(base_delay=0.5, max_delay=4)

    result = await make_client(retry=policy).send(otp())

    assert isinstance(result, Queued)
    assert len(double.requests) == 3 and len(double.sent) == 1
    assert len(fake_time.sleeps) == 2
    assert all(0 <= wait <= policy.ceiling(n) for n, wait in enumerate(fake_time.sleeps, start=1))


async def test_retries_run_out_into_a_retryable_failure(
    double: EightByEightDouble, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    double.add_rule(ServerError())

    with caplog.at_level(logging.WARNING, logger="detector.send.eightbyeight"):
        result = await make_client(retry=RetryPolicy(max_attempts=3)).send(otp())

    assert isinstance(result, RetryableFailure)
    assert (result.reason, result.status, result.code) == ("server_error", 500, 2000)
    assert len(double.requests) == 3
    assert len([r for r in caplog.records if "retrying in" in r.getMessage()]) == 2


async def test_a_retry_after_beyond_the_time_budget_is_not_waited_for(
    double: EightByEightDouble, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    double.inject(RateLimited("3600"))

    result = await make_client(retry=RetryPolicy(max_elapsed=30)).send(otp())

    assert isinstance(result, RetryableFailure)
    assert (result.reason, result.retry_after) == ("rate_limited", 3600)
    assert fake_time.sleeps == [] and len(double.requests) == 1


async def test_a_timeout_is_retried(double: EightByEightDouble, make_client: ClientFactory) -> None:
    double.inject(Slow(60))

    result = await make_client(timeout=0.2).send(otp())

    assert isinstance(result, Queued)
    assert len(double.requests) == 2


async def test_a_timeout_that_persists_is_a_retryable_failure(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    double.inject(Slow(60))

    result = await make_client(timeout=0.1, retry=NO_RETRIES).send(otp())

    assert isinstance(result, RetryableFailure) and result.reason == "timeout"


async def test_a_dropped_connection_is_retried(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    double.inject(Drop())

    result = await make_client().send(otp())

    assert isinstance(result, Queued)
    assert len(double.requests) == 2


async def test_nobody_listening_is_a_retryable_connection_failure(make_client: ClientFactory) -> None:
    with socket.socket() as sock:  # a loopback port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]

    result = await make_client(
        base_url=f"http://127.0.0.1:{closed_port}", retry=RetryPolicy(max_attempts=2)
    ).send(otp())

    assert isinstance(result, RetryableFailure) and result.reason == "connection"


async def test_the_rate_limit_spaces_out_sends(
    double: EightByEightDouble, make_client: ClientFactory, fake_time: FakeTime
) -> None:
    bucket = TokenBucket(rate=2, burst=1, clock=fake_time.clock, sleep=fake_time.sleep)
    client = make_client(limiter=bucket)

    results = [await client.send(otp(n)) for n in range(1, 4)]

    assert all(isinstance(r, Queued) for r in results)
    assert fake_time.sleeps == pytest.approx([0.5, 0.5])


# --- batch ---


async def test_batch_answers_each_message_in_order(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    double.reject("+6590000002")
    messages = [otp(n, destination=f"+659000000{n}") for n in (1, 2, 3)]

    results = await make_client().send_batch(messages, client_batch_id="batch-1")

    assert [type(r) for r in results] == [Queued, Rejected, Queued]
    assert [r.client_message_id for r in results if isinstance(r, Queued | Rejected)] == [
        "req-1",
        "req-2",
        "req-3",
    ]
    assert len(double.batches) == 1
    assert [m.client_message_id for m in double.sent] == ["req-1", "req-3"]
    assert {m.umid for m in double.sent} == {r.umid for r in results if isinstance(r, Queued)}


async def test_a_failed_batch_fails_every_message(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    double.add_rule(ServerError())

    results = await make_client(retry=RetryPolicy(max_attempts=2)).send_batch([otp(1), otp(2)])

    assert len(results) == 2 and results[0] == results[1]
    assert isinstance(results[0], RetryableFailure) and results[0].status == 500


async def test_batch_is_retried_as_a_whole(double: EightByEightDouble, make_client: ClientFactory) -> None:
    double.inject(RateLimited("1"))

    results = await make_client().send_batch([otp(1), otp(2)])

    assert [type(r) for r in results] == [Queued, Queued]
    assert len(double.batches) == 1 and len(double.requests) == 2


async def test_batch_misuse_is_refused_before_anything_is_sent(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    client = make_client()
    assert await client.send_batch([]) == []
    with pytest.raises(ValueError, match="client_message_id"):
        await client.send_batch([otp(1), otp(1)])
    with pytest.raises(ValueError, match="at most"):
        await client.send_batch([otp(n) for n in range(MAX_BATCH + 1)])
    assert double.requests == []


# --- feedback ---


async def test_feedback_reports_the_outcome_of_a_sent_message(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    client = make_client()
    sent = await client.send(otp())
    assert isinstance(sent, Queued)
    verified_at = datetime(2026, 11, 23, 8, 55, 3, tzinfo=UTC)

    result = await client.feedback(sent.umid, "success", at=verified_at)
    unknown = await client.feedback(str(uuid.uuid4()), "failure")

    assert result == FeedbackAccepted(sent.umid)
    [posted] = double.feedback
    assert (posted.umid, posted.outcome, posted.timestamp) == (sent.umid, "success", "2026-11-23T08:55:03Z")
    assert isinstance(unknown, PermanentFailure) and unknown.code == 1300


async def test_feedback_misuse_is_refused(make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(ValueError, match="success"):
        await client.feedback("umid", "verified")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone"):
        await client.feedback("umid", "success", at=datetime(2026, 11, 23))


# --- the key never shows ---


async def test_the_key_appears_in_no_log_result_or_error(
    double: EightByEightDouble, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: httpx, httpcore, aiohttp and ours propagate to it
    client = make_client(retry=RetryPolicy(max_attempts=2), timeout=0.2)
    first = await client.send(otp(1))
    assert isinstance(first, Queued)
    shown: list[object] = [client, client.config, client.config.api_key, first]

    shown.append(await client.feedback(first.umid, "success"))
    double.reject("+6590000000")
    shown.append(await client.send(otp(2, destination="+6590000000")))
    shown.append(await client.send(SmsMessage("abc", "x", "req-3")))  # 400
    double.inject(RateLimited("1"), ServerError(), Slow(60), Drop())
    shown += [await client.send(otp(4)), await client.send(otp(5))]  # 429 then 500; timeout then drop
    double.add_rule(ServerError())
    shown.append(await client.send(otp(6)))
    shown += await client.send_batch([otp(7), otp(8)])
    shown.append(await make_client(key=KEY[::-1]).send(otp(9)))  # 401: this key must not show either
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shown.append(await make_client(base_url=f"http://127.0.0.1:{port}", retry=NO_RETRIES).send(otp(10)))
    for bad in ("a!", "x" * 51):
        with pytest.raises(ValueError) as config_error:
            EightByEightConfig(bad, ApiKey(KEY))
        shown.append(config_error.value)
    double.violations.clear()  # the 400 above, on purpose

    kinds = {type(s).__name__ for s in shown}
    assert {"Queued", "Rejected", "PermanentFailure", "RetryableFailure", "ValueError"} <= kinds
    assert any(r.name.startswith("httpcore") for r in caplog.records), "httpcore's debug log was not captured"
    for secret in (KEY, KEY[::-1]):
        assert secret not in caplog.text
        for thing in shown:
            assert secret not in repr(thing) and secret not in str(thing), thing


async def test_a_server_that_echoes_the_key_is_scrubbed(make_client: ClientFactory) -> None:
    """A defence in depth: whatever text comes back, the key in it is masked before it leaves the client."""
    client = make_client()
    failure = client._classify(_response(400, {"code": 1, "message": f"bad key {KEY}", "errorId": "e"}))
    assert isinstance(failure, PermanentFailure)
    assert KEY not in failure.message and "****" in failure.message


def _response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("POST", "http://127.0.0.1/x"))


# --- configuration ---


def test_config_checks_the_sub_account_against_the_contract(contract: Contract) -> None:
    documented = contract.path_parameter_pattern(
        "/api/v1/subaccounts/{subAccountId}/messages", "subAccountId"
    )
    assert documented == f"^{SUB_ACCOUNT_ID.pattern}$"
    batch = contract.document["components"]["schemas"]["BatchSmsRequest"]["properties"]["messages"]
    assert batch["maxItems"] == MAX_BATCH

    for ok in ("abc", "a-b.c_d&e", "x" * 50):
        EightByEightConfig(ok, ApiKey(KEY))
    for bad in ("ab", "x" * 51, "a/b", "abc\n", "ab c", "a%2Fb"):
        with pytest.raises(ValueError, match="sub-account"):
            EightByEightConfig(bad, ApiKey(KEY))


def test_config_regions_and_environment() -> None:
    assert EightByEightConfig("acme", ApiKey(KEY)).base_url == "https://sms.8x8.com"
    assert EightByEightConfig.for_region("uk", "acme", ApiKey(KEY)).base_url == "https://sms.8x8.uk"
    with pytest.raises(ValueError, match="region"):
        EightByEightConfig.for_region("eu", "acme", ApiKey(KEY))

    config = EightByEightConfig.from_env(
        {"EIGHTBYEIGHT_SUBACCOUNT_ID": "acme", "EIGHTBYEIGHT_API_KEY": KEY, "EIGHTBYEIGHT_REGION": "us"}
    )
    assert (config.base_url, config.api_key) == ("https://sms.us.8x8.com", ApiKey(KEY))
    with pytest.raises(ValueError, match="EIGHTBYEIGHT_SUBACCOUNT_ID"):
        EightByEightConfig.from_env({"EIGHTBYEIGHT_API_KEY": KEY})
    with pytest.raises(SecretError, match="EIGHTBYEIGHT_API_KEY"):
        EightByEightConfig.from_env({"EIGHTBYEIGHT_SUBACCOUNT_ID": "acme"})
    with pytest.raises(ValueError, match="EIGHTBYEIGHT_TIMEOUT"):
        EightByEightConfig.from_env(
            {"EIGHTBYEIGHT_SUBACCOUNT_ID": "acme", "EIGHTBYEIGHT_API_KEY": KEY, "EIGHTBYEIGHT_TIMEOUT": "5s"}
        )


def test_the_message_keeps_number_and_code_out_of_its_repr() -> None:
    text = repr(otp())
    assert "6591234567" not in text and "000001" not in text and "req-1" in text
    assert otp().to_json() == {
        "destination": "+6591234567",
        "text": "Your code is 000001",
        "clientMessageId": "req-1",
        "clientIp": "203.0.113.9",
        "track": "Outcome",
    }


# --- Retry-After ---


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        ("-1", None),
        ("soon", None),
        ("inf", None),
        ("Mon, 23 Nov 2026 09:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 08:59:00 GMT", 0.0),  # in the past: go now
        ("Mon, 23 Nov 2026 09:00:10 -0000", 10.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(header, now) == seconds


# --- secrets ---


def test_a_secret_never_shows_its_value() -> None:
    key = ApiKey(KEY)
    for shown in (repr(key), str(key), f"{key}", f"{key!r}", f"{key:>40}", repr([key]), repr({"k": key})):
        assert KEY not in shown
    assert repr(key) == "ApiKey('****')"
    assert key.reveal() == KEY
    assert key == ApiKey(KEY) and key != ApiKey(KEY + "x") and len({key, ApiKey(KEY)}) == 1
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(key)
    with pytest.raises(SecretError):
        Secret("")


@pytest.mark.parametrize("bad", [f"{KEY} ", f"{KEY}\nX-Injected: 1", f"clé-{KEY}", f"\t{KEY}"])
def test_a_key_that_cannot_be_a_bearer_token_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(SecretError) as error:
        ApiKey(bad)
    assert KEY not in str(error.value) and "position" in str(error.value)


def test_key_from_the_environment() -> None:
    assert load_api_key({"EIGHTBYEIGHT_API_KEY": KEY}).reveal() == KEY
    assert load_api_key({"OTHER": KEY}, name="OTHER").reveal() == KEY


@pytest.mark.parametrize(("content", "expected"), [(KEY + "\n", KEY), (KEY + "\r\n", KEY), (KEY, KEY)])
def test_key_from_a_mounted_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "api-key"
    path.write_bytes(content.encode())
    assert load_api_key({"EIGHTBYEIGHT_API_KEY_FILE": str(path)}).reveal() == expected


def test_missing_or_ambiguous_key_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as missing:
        load_api_key({})
    assert "set EIGHTBYEIGHT_API_KEY" in str(missing.value) and "EIGHTBYEIGHT_API_KEY_FILE" in str(
        missing.value
    )

    with pytest.raises(SecretError, match="only one"):
        load_api_key({"EIGHTBYEIGHT_API_KEY": KEY, "EIGHTBYEIGHT_API_KEY_FILE": "/x"})
    with pytest.raises(
        SecretError, match=re.escape(f"EIGHTBYEIGHT_API_KEY_FILE points to '{tmp_path / 'nope'}'")
    ):
        load_api_key({"EIGHTBYEIGHT_API_KEY_FILE": str(tmp_path / "nope")})
    with pytest.raises(SecretError, match=r"\$EIGHTBYEIGHT_API_KEY: ApiKey is empty"):
        load_api_key({"EIGHTBYEIGHT_API_KEY": ""})
    (tmp_path / "blank").write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        load_api_key({"EIGHTBYEIGHT_API_KEY_FILE": str(tmp_path / "blank")})


# --- backoff ---


class _Ceiling(random.Random):
    """A random source that always picks the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=8)
    assert [policy.ceiling(n) for n in range(1, 9)] == [0.25, 0.5, 1, 2, 4, 8, 8, 8]
    assert [policy.delay(n, None, _Ceiling()) for n in (1, 3, 7)] == [0.25, 1, 8]
    rng = random.Random(1)
    draws = [policy.delay(4, None, rng) for _ in range(2000)]
    assert all(0 <= d <= 2 for d in draws)
    assert min(draws) < 0.1 and max(draws) > 1.9  # spread over the whole range: full jitter


def test_backoff_never_waits_less_than_retry_after() -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=8)
    assert policy.delay(1, 5.0, _Ceiling()) == 5.0
    assert policy.delay(6, 5.0, _Ceiling()) == 8.0  # the jittered wait is longer still
    assert all(policy.delay(3, 1.5, random.Random(n)) >= 1.5 for n in range(100))


@dataclass
class _Script:
    """An operation whose outcomes are scripted; it records when it was called."""

    outcomes: list[str]
    time: FakeTime
    calls: list[float] = field(default_factory=list)

    async def __call__(self) -> str:
        self.calls.append(self.time.now)
        return self.outcomes.pop(0)


def _hint(outcome: str) -> Retry | None:
    if outcome.startswith("retry-after-"):
        return Retry(float(outcome.removeprefix("retry-after-")))
    return Retry() if outcome == "retry" else None


async def _run(
    policy: RetryPolicy, outcomes: list[str]
) -> tuple[str, _Script, list[tuple[int, float, object]]]:
    time = FakeTime()
    script = _Script(outcomes, time)
    seen: list[tuple[int, float, object]] = []
    retrier = Retrier(
        policy,
        clock=time.clock,
        sleep=time.sleep,
        rng=_Ceiling(),
        on_retry=lambda n, wait, outcome: seen.append((n, wait, outcome)),
    )
    return await retrier.run(script, _hint), script, seen


async def test_retrier_stops_at_the_first_final_outcome() -> None:
    result, script, seen = await _run(
        RetryPolicy(base_delay=1, max_delay=10), ["retry", "retry", "ok", "retry"]
    )
    assert result == "ok"
    assert [c - script.calls[0] for c in script.calls] == [0, 1, 3]  # waited 1 then 2
    assert seen == [(1, 1.0, "retry"), (2, 2.0, "retry")]


async def test_retrier_gives_up_after_max_attempts() -> None:
    result, script, _ = await _run(RetryPolicy(max_attempts=3), ["retry"] * 5)
    assert result == "retry" and len(script.calls) == 3


async def test_retrier_gives_up_when_the_next_wait_would_pass_max_elapsed() -> None:
    policy = RetryPolicy(max_attempts=10, max_elapsed=10, base_delay=1, max_delay=100)
    result, script, seen = await _run(
        policy, ["retry"] * 10
    )  # waits 1, 2, 4 (7s); a wait of 8 would end at 15
    assert len(script.calls) == 4 and [s[1] for s in seen] == [1, 2, 4]

    result, script, seen = await _run(policy, ["retry-after-4", "retry-after-4", "retry-after-4", "ok"])
    assert result == "retry-after-4" and len(script.calls) == 3  # 4 + 4 fit in 10; a third 4 does not


async def test_retrier_does_not_retry_what_is_final() -> None:
    result, script, seen = await _run(RetryPolicy(), ["final", "ok"])
    assert result == "final" and len(script.calls) == 1 and seen == []


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=5, max_delay=1)


# --- token bucket ---


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    time = FakeTime()
    bucket = TokenBucket(rate=10, burst=5, clock=time.clock, sleep=time.sleep)

    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    time.now += 0.1
    assert bucket.try_acquire() and not bucket.try_acquire()
    time.now += 60
    assert bucket.available == 5  # never more than the burst


async def test_bucket_acquire_waits_exactly_long_enough() -> None:
    time = FakeTime()
    bucket = TokenBucket(rate=4, burst=2, clock=time.clock, sleep=time.sleep)

    waits = [await bucket.acquire() for _ in range(4)]
    big = await bucket.acquire(2)

    assert waits == [0, 0, 0.25, 0.25]
    assert big == pytest.approx(0.5)
    assert time.now == pytest.approx(1000 + 1.0)


async def test_bucket_serves_waiters_in_arrival_order() -> None:
    time = FakeTime()
    bucket = TokenBucket(rate=2, burst=1, clock=time.clock, sleep=time.sleep)
    served: list[int] = []

    async def take(n: int) -> None:
        await bucket.acquire()
        served.append(n)

    await asyncio.gather(*(take(n) for n in range(5)))

    assert served == [0, 1, 2, 3, 4]
    assert time.now == pytest.approx(1000 + 4 * 0.5)
    assert not bucket.try_acquire()  # all used up: the clock has not moved since the last one


def test_bucket_rejects_nonsense() -> None:
    for rate, burst in ((0, 1), (1, 0.5), (-1, 5)):
        with pytest.raises(ValueError):
            TokenBucket(rate=rate, burst=burst)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(rate=1, burst=2).try_acquire(3)


# --- the message rules, checked before a message joins a batch ---


def test_the_message_rules_are_the_contracts(contract: Contract) -> None:
    request = contract.document["components"]["schemas"]["SmsRequest"]["properties"]
    documented = request["destination"]["pattern"]
    assert documented == DESTINATION_PATTERN
    samples = ["+6591234567", "6591234567", "+0591234567", "+659", "+" + "9" * 15, "+" + "9" * 16, "+65 912"]
    for sample in [*samples, "+65\uff19\uff11234567", "+65\u0669\u0661234567", "+65912a4567"]:
        assert bool(DESTINATION.fullmatch(sample)) == bool(re.search(documented, sample, re.ASCII)), sample
    assert request["clientMessageId"]["maxLength"] == MAX_CLIENT_MESSAGE_ID
    assert request["source"]["maxLength"] == MAX_SOURCE
    account = contract.path_parameter_pattern("/api/v1/accounts/{accountId}/balance", "accountId")
    assert account == f"^{ACCOUNT_ID.pattern}$"


@pytest.mark.parametrize(
    ("destination", "client_message_id", "source", "problem"),
    [
        ("+447400123456", "req-1", None, None),
        ("447400123456", "r" * 350, "S" * 16, None),
        ("+4474\uff10\uff10123456", "req-1", None, "destination"),  # full-width digits
        ("+4474\u0660\u0660123456", "req-1", None, "destination"),  # Arabic-Indic: canonical first
        ("+447400123456\n", "req-1", None, "destination"),
        ("+447400ABCDEF", "req-1", None, "destination"),
        ("+0447400123456", "req-1", None, "destination"),
        ("+44740", "req-1", None, "destination"),
        ("+447400123456", "r" * 351, None, "request_id"),
        ("+447400123456", "", None, "request_id"),
        ("+447400123456", "req-1", "S" * 17, "source"),
        ("+447400123456", "req-\ud800", None, "Unicode"),
    ],
)
def test_a_message_that_8x8_would_refuse_says_why_without_the_number(
    destination: str, client_message_id: str, source: str | None, problem: str | None
) -> None:
    found = SmsMessage(destination, "Your code is 123456", client_message_id, source=source).problem()
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and "7400" not in found


async def test_what_the_contract_check_refuses_8x8_refuses_for_the_whole_batch(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    """Why the check runs before batching: one message over a limit and 8x8 answers 400 for all."""
    messages = [otp(n, destination=f"+659000000{n}") for n in (1, 2)]
    messages.append(SmsMessage("+6590000003", "code", "req-3", source="S" * 17))
    results = await make_client(retry=NO_RETRIES).send_batch(messages)
    assert [getattr(r, "status", None) for r in results] == [400, 400, 400] and double.sent == []
    assert [m.problem() is None for m in messages] == [True, True, False]
    double.violations.clear()


def test_an_account_id_must_be_the_guid_8x8_shows() -> None:
    assert EightByEightConfig("acme", ApiKey(KEY), account_id=ACCOUNT).account_id == ACCOUNT
    for bad in ("acme", ACCOUNT + "0", ACCOUNT[:-1] + "g", ACCOUNT + "\n"):
        with pytest.raises(ValueError, match="account id"):
            EightByEightConfig("acme", ApiKey(KEY), account_id=bad)


# --- 8x8's message log: what happened to a message whose answer was lost ---


async def test_the_log_finds_what_8x8_queued_by_client_message_id(
    double: EightByEightDouble, make_client: ClientFactory
) -> None:
    client = make_client()
    since = datetime.now(UTC)
    queued = await client.send_batch([otp(1, "+6590000001"), otp(2, "+6590000002")])
    double.reject("+6590000009")
    rejected = await client.send(otp(9, "+6590000009"))
    wanted = ["req-1", "req-2", "req-3", "req-9"]
    found = await client.find_logged(wanted, since, datetime.now(UTC), poll=0.01)
    assert isinstance(found, dict) and set(found) == {"req-1", "req-2", "req-9"}
    assert [found[f"req-{n}"].umid for n in (1, 2)] == [r.umid for r in queued if isinstance(r, Queued)]
    assert isinstance(rejected, Rejected) and found["req-9"].status == "rejected"
    assert found["req-1"].status == "queued"
    assert double.exports == [
        {"from": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "to": double.exports[0]["to"], "limit": 0}
    ]
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    nothing = await client.find_logged(["req-1"], long_ago, long_ago + timedelta(days=1))
    assert nothing == {}


async def test_a_log_file_on_another_host_is_not_fetched_with_the_key(
    double: EightByEightDouble, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    await client.send(otp(1))
    monkeypatch.setattr(EightByEightDouble, "base_url", property(lambda self: "http://203.0.113.50:8080"))
    found = await client.find_logged(["req-1"], datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))
    assert isinstance(found, PermanentFailure) and "another host" in found.message


async def test_a_log_export_that_never_finishes_is_a_retryable_failure(
    double: EightByEightDouble, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(double, "_export_result", lambda sub, job: web.json_response({"status": "queued"}))
    found = await make_client().find_logged(["req-1"], datetime.now(UTC), datetime.now(UTC), patience=5.0)
    assert isinstance(found, RetryableFailure) and found.reason == "timeout"


async def test_the_balance_checks_the_key(double: EightByEightDouble, make_client: ClientFactory) -> None:
    balance = await make_client().balance(ACCOUNT)
    assert balance == Balance(149309.7985931, "USD")
    wrong = await make_client(key="k-wrong-key").balance(ACCOUNT)
    assert isinstance(wrong, PermanentFailure) and (wrong.reason, wrong.status) == ("unauthorized", 401)


@pytest.mark.parametrize(
    ("failure", "may_have_queued"),
    [
        (RetryableFailure("server_error", "", status=500), True),
        (RetryableFailure("server_error", "", status=502), True),
        (RetryableFailure("server_error", "", status=503), False),
        (RetryableFailure("rate_limited", "", status=429), False),
        (RetryableFailure("timeout", "ReadTimeout: timed out"), True),
        (RetryableFailure("connection", "RemoteProtocolError: closed"), True),
        (RetryableFailure("timeout", "ConnectTimeout: timed out"), False),
        (RetryableFailure("connection", "ConnectError: refused"), False),
    ],
)
def test_which_failures_may_have_queued_the_message(failure: RetryableFailure, may_have_queued: bool) -> None:
    assert failure.may_have_queued is may_have_queued
