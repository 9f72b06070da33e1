"""Client for 8x8's SMS API: send one SMS, send a batch, report an OTP's outcome (feedback).

Each call returns what happened as a value, never raising for something 8x8 or the network did:

- per message: :class:`Queued` (8x8 took it; keep the ``umid`` for feedback) or :class:`Rejected`
  (8x8 answered 200 with ``status.code`` ``REJECTED`` and says why);
- when the request itself failed: :class:`RetryableFailure` (429 with its Retry-After, 5xx, timeout,
  connection error) or :class:`PermanentFailure` (400, 401 and other 4xx, with 8x8's
  ``code``/``message``/``errorId``; or a 200 that is not what the contract describes).

Retries (exponential backoff with full jitter, never sooner than Retry-After) and the rate limit
apply inside each call, so a RetryableFailure that comes back is what was left when the retry policy
ran out. Pass ``retry=NO_RETRIES`` for a single attempt.

What the contract is comes from 8x8's OpenAPI document ``sms-api.openapi.json`` (see
``detector.testing.eightbyeight_double``, which checks every request this client makes against it).

Mistakes in how the client is used (a malformed sub-account id, duplicate ``client_message_id`` in one
batch) raise ``ValueError``. The API key appears in no log line, result, error or repr.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeGuard
from urllib.parse import quote, urlencode

import httpx

from detector.send.ratelimit import TokenBucket
from detector.send.retry import Retrier, Retry, RetryPolicy
from detector.send.secrets import ApiKey, load_api_key

log = logging.getLogger(__name__)

REGIONS: Mapping[str, str] = {
    "ap": "https://sms.8x8.com",  # Asia-Pacific, 8x8's default
    "us": "https://sms.us.8x8.com",
    "uk": "https://sms.8x8.uk",
    "id": "https://sms.8x8.id",
}
# From the contract (tests pin each to sms-api.openapi.json): the subAccountId path parameter, the batch
# endpoint's maxItems, and SmsRequest's destination pattern and maxLengths. The pattern is matched in ASCII
# and whole (Python's `$` would let a trailing newline through; `\d` would take other scripts' digits).
SUB_ACCOUNT_ID = re.compile(r"[A-Za-z0-9\-._&]{3,50}")
ACCOUNT_ID = re.compile(r"[0-9A-Fa-f]{8}[-]?(?:[0-9A-Fa-f]{4}[-]?){3}[0-9A-Fa-f]{12}")
MAX_BATCH = 10_000
DESTINATION_PATTERN = r"^\+{0,1}[1-9]{1}[0-9]{6,14}$"
DESTINATION = re.compile(r"\+?[1-9][0-9]{6,14}", re.ASCII)
MAX_CLIENT_MESSAGE_ID = 350
MAX_SOURCE = 16

Outcome = Literal["success", "failure"]


# --- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EightByEightConfig:
    sub_account_id: str
    api_key: ApiKey
    base_url: str = REGIONS["ap"]
    timeout: float = 5.0  # seconds, for each of connect, write, read and pool wait
    max_connections: int = 20
    account_id: str | None = None  # the account (not sub-account) id: only for checking the key at start

    def __post_init__(self) -> None:
        if not SUB_ACCOUNT_ID.fullmatch(self.sub_account_id):
            raise ValueError(
                f"8x8 sub-account id {self.sub_account_id[:60]!r} must be 3 to 50 of A-Z a-z 0-9 - . _ &"
            )
        if self.account_id is not None and not ACCOUNT_ID.fullmatch(self.account_id):
            raise ValueError(f"8x8 account id {self.account_id[:60]!r} must be a GUID, as 8x8 shows it")
        if not isinstance(self.api_key, ApiKey):
            raise TypeError("api_key must be an ApiKey (see detector.send.secrets.load_api_key)")
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError(
                f"base_url must be an http(s) URL such as {REGIONS['ap']}, got {self.base_url!r}"
            )
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.timeout <= 0 or self.max_connections < 1:
            raise ValueError("timeout must be > 0 seconds and max_connections >= 1")

    @classmethod
    def for_region(
        cls, region: str, sub_account_id: str, api_key: ApiKey, **options: Any
    ) -> EightByEightConfig:
        if region not in REGIONS:
            raise ValueError(f"unknown 8x8 region {region!r}; one of {', '.join(REGIONS)}")
        return cls(sub_account_id=sub_account_id, api_key=api_key, base_url=REGIONS[region], **options)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EightByEightConfig:
        """From EIGHTBYEIGHT_SUBACCOUNT_ID, EIGHTBYEIGHT_API_KEY(_FILE), and optionally
        EIGHTBYEIGHT_REGION (ap|us|uk|id) or EIGHTBYEIGHT_BASE_URL, EIGHTBYEIGHT_TIMEOUT and
        EIGHTBYEIGHT_ACCOUNT_ID."""
        env = os.environ if env is None else env
        sub_account = env.get("EIGHTBYEIGHT_SUBACCOUNT_ID")
        if not sub_account:
            raise ValueError("set EIGHTBYEIGHT_SUBACCOUNT_ID to the 8x8 sub-account that sends the OTPs")
        region = env.get("EIGHTBYEIGHT_REGION", "ap")
        if region not in REGIONS:
            raise ValueError(f"EIGHTBYEIGHT_REGION={region!r} is not one of {', '.join(REGIONS)}")
        return cls(
            sub_account_id=sub_account,
            api_key=load_api_key(env),
            base_url=env.get("EIGHTBYEIGHT_BASE_URL") or REGIONS[region],
            timeout=_seconds(env.get("EIGHTBYEIGHT_TIMEOUT", "5"), "EIGHTBYEIGHT_TIMEOUT"),
            account_id=env.get("EIGHTBYEIGHT_ACCOUNT_ID") or None,
        )


def _seconds(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds") from None


# --- what goes out ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One SMS. `client_message_id` is our own reference (the OTP request id): 8x8 echoes it back.

    Nothing is checked here: 8x8's contract decides (the double enforces it in tests), and a number it
    refuses comes back as ``PermanentFailure("bad_request")`` or ``Rejected``. The number and the text
    (which holds the code) are left out of repr.
    """

    destination: str = field(repr=False)
    text: str = field(repr=False)
    client_message_id: str
    client_ip: str | None = None
    source: str | None = None
    track_outcome: bool = True  # ask 8x8 to measure conversion; pair with feedback()

    def problem(self) -> str | None:
        """Why 8x8's contract refuses this message (it would fail a whole batch with a 400), or None.

        Says which field and the rule, never the number or the text themselves."""
        if not isinstance(self.destination, str) or not DESTINATION.fullmatch(self.destination):
            return f"the destination is not an international number 8x8 accepts ({DESTINATION_PATTERN})"
        if not isinstance(self.text, str) or not self.text:
            return "the message text is empty"
        if not _encodable(self.text) or (self.source is not None and not _encodable(self.source)):
            return "the message text or source holds characters that are not Unicode (lone surrogates)"
        if not self.client_message_id or len(self.client_message_id) > MAX_CLIENT_MESSAGE_ID:
            return f"the request_id must be 1 to {MAX_CLIENT_MESSAGE_ID} characters (8x8's clientMessageId)"
        if not _encodable(self.client_message_id):
            return "the request_id holds characters that are not Unicode (lone surrogates)"
        if self.source is not None and len(self.source) > MAX_SOURCE:
            return f"the source (sender id) is longer than {MAX_SOURCE} characters"
        if self.client_ip is not None and not _encodable(self.client_ip):
            return "the client IP holds characters that are not Unicode"
        return None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "destination": self.destination,
            "text": self.text,
            "clientMessageId": self.client_message_id,
            "track": "Outcome" if self.track_outcome else "None",
        }
        if self.client_ip:
            body["clientIp"] = self.client_ip
        if self.source:
            body["source"] = self.source
        return body


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- what comes back --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Queued:
    umid: str
    client_message_id: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    umid: str
    client_message_id: str | None
    code: str  # 8x8's status.code
    message: str  # 8x8's status.description, e.g. "Invalid MSISDN format (not E.164 international number)"


@dataclass(frozen=True, slots=True)
class RetryableFailure:
    reason: Literal["rate_limited", "server_error", "timeout", "connection"]
    message: str
    status: int | None = None
    retry_after: float | None = None  # seconds, from the Retry-After header
    code: int | None = None  # 8x8's error body, when there was one
    error_id: str | None = None

    @property
    def may_have_queued(self) -> bool:
        """Could 8x8 have queued the message anyway? Not after a 429 or 503 (it says it did not) nor when
        no connection was made; yes after a 500/502/504, a read timeout or a dropped connection."""
        if self.reason == "rate_limited" or self.status == 503:
            return False
        return not (self.reason in ("timeout", "connection") and self.message.startswith(_NOT_CONNECTED))


_NOT_CONNECTED = ("ConnectError", "ConnectTimeout", "PoolTimeout")  # httpx: the request never left


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    reason: Literal["bad_request", "unauthorized", "client_error", "bad_response", "not_in_batch_response"]
    message: str
    status: int | None = None
    code: int | None = None
    error_id: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackAccepted:
    umid: str


@dataclass(frozen=True, slots=True)
class Logged:
    """A message 8x8's message log holds (a row of a log export), found by its clientMessageId."""

    umid: str
    client_message_id: str
    status: str  # the log's status_value, lower case


@dataclass(frozen=True, slots=True)
class Balance:
    amount: float | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class PriceList:
    """The outbound SMS prices of a sub-account: per destination country, the dearest of its operators."""

    currency: str
    countries: dict[str, float]


Failure = RetryableFailure | PermanentFailure
SendResult = Queued | Rejected | Failure
FeedbackResult = FeedbackAccepted | Failure


@dataclass(frozen=True, slots=True)
class _Reply:
    payload: Any  # the 2xx body, parsed; None when empty or not JSON


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None if absent or garbled.

    `now` is the wall clock (epoch seconds), needed for the HTTP-date form.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if 0 <= seconds < float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _retry_hint(outcome: _Reply | Failure) -> Retry | None:
    return Retry(outcome.retry_after) if isinstance(outcome, RetryableFailure) else None


# --- the client -------------------------------------------------------------------------------------


class EightByEightClient:
    """Use as ``async with EightByEightClient(config) as client: await client.send(message)``."""

    def __init__(
        self,
        config: EightByEightConfig,
        *,
        retry: RetryPolicy | None = None,
        limiter: TokenBucket | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._limiter = limiter
        self._wall_clock = wall_clock
        self._retrier = Retrier(retry, clock=clock, sleep=sleep, rng=rng, on_retry=self._log_retry)
        self._clock = clock
        self._sleep = sleep
        self._prefix = f"/api/v1/subaccounts/{config.sub_account_id}"
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            headers={"Authorization": f"Bearer {config.api_key.reveal()}", "Accept": "application/json"},
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(
                max_connections=config.max_connections, max_keepalive_connections=config.max_connections
            ),
        )

    def __repr__(self) -> str:
        config = self.config
        return f"EightByEightClient(base_url={config.base_url!r}, sub_account_id={config.sub_account_id!r})"

    async def __aenter__(self) -> EightByEightClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, message: SmsMessage) -> SendResult:
        """POST .../messages: one SMS."""
        reply = await self._call(f"{self._prefix}/messages", message.to_json())
        if not isinstance(reply, _Reply):
            return reply
        return _message_outcome(reply.payload)

    async def send_batch(
        self, messages: Sequence[SmsMessage], *, client_batch_id: str | None = None
    ) -> list[SendResult]:
        """POST .../messages/batch: up to 10,000 SMS in one request; one result per message, in order.

        When the request as a whole fails, every message gets that same failure.
        """
        if not messages:
            return []
        if len(messages) > MAX_BATCH:
            raise ValueError(f"8x8 takes at most {MAX_BATCH} messages per batch, got {len(messages)}")
        ids = [m.client_message_id for m in messages]
        if len(set(ids)) != len(ids):
            raise ValueError(
                "each message in a batch needs its own client_message_id (results are matched on it)"
            )
        body: dict[str, Any] = {
            "messages": [m.to_json() for m in messages],
            "includeMessagesInResponse": True,
        }
        if client_batch_id is not None:
            body["clientBatchId"] = client_batch_id
        reply = await self._call(f"{self._prefix}/messages/batch", body)
        if not isinstance(reply, _Reply):
            return [reply] * len(messages)
        listed = reply.payload.get("messages") if isinstance(reply.payload, dict) else None
        if not isinstance(listed, list):
            failure = PermanentFailure(
                "bad_response", "8x8 answered the batch without its messages", status=200
            )
            return [failure] * len(messages)
        by_id: dict[str | None, SendResult] = {}
        for item in listed:
            outcome = _message_outcome(item)
            if isinstance(outcome, Queued | Rejected):
                by_id[outcome.client_message_id] = outcome
        missing = PermanentFailure(
            "not_in_batch_response", "8x8 accepted the batch but did not list this message", status=200
        )
        return [by_id.get(i, missing) for i in ids]

    async def find_logged(
        self,
        client_message_ids: Collection[str],
        since: datetime,
        until: datetime,
        *,
        poll: float = 1.0,
        patience: float = 60.0,
    ) -> dict[str, Logged] | Failure:
        """Which of `client_message_ids` 8x8 holds, sent between `since` and `until`: its message log.

        Starts a log export job for the window (POST .../messages/exports), polls it (GET
        .../messages/exports/{jobId}) every `poll` seconds for up to `patience`, reads the CSV files it
        links to and keeps the rows whose clientmessageid was asked for. The files are fetched with the
        API key only from 8x8's own host (the base URL's); a link elsewhere is a failure, not followed.
        """
        wanted = set(client_message_ids)
        body = {"from": _log_time(since), "to": _log_time(until + timedelta(seconds=1)), "limit": 0}
        reply = await self._call(f"{self._prefix}/messages/exports", body)
        if not isinstance(reply, _Reply):
            return reply
        job = reply.payload.get("jobId") if isinstance(reply.payload, dict) else None
        if not isinstance(job, str) or not job:
            return PermanentFailure("bad_response", "8x8 started a log export without a jobId", status=202)
        deadline = self._clock() + patience
        while True:
            reply = await self._get(f"{self._prefix}/messages/exports/{quote(job, safe='')}")
            if not isinstance(reply, _Reply):
                return reply
            status = reply.payload.get("status") if isinstance(reply.payload, dict) else None
            if status == "empty":
                return {}
            if status == "succeeded":
                links = reply.payload.get("data")
                break
            if status not in ("queued", "running"):
                return PermanentFailure("bad_response", f"8x8's log export job ended {status!r}", status=200)
            if self._clock() >= deadline:
                return RetryableFailure("timeout", f"8x8's log export was not done within {patience:.0f}s")
            await self._sleep(poll)
        if not isinstance(links, list) or not all(isinstance(link, str) for link in links):
            return PermanentFailure("bad_response", "8x8's finished log export lists no files", status=200)
        found: dict[str, Logged] = {}
        for link in links:
            url = self._http.base_url.join(link)
            if (url.scheme, url.host, url.port) != (
                self._http.base_url.scheme,
                self._http.base_url.host,
                self._http.base_url.port,
            ):
                return PermanentFailure(
                    "bad_response", f"8x8's log export file is on another host ({url.host}): not fetched"
                )
            response = await self._request("GET", str(url))
            if not isinstance(response, httpx.Response):
                return response
            if not 200 <= response.status_code < 300:
                failure = self._classify(response)
                assert not isinstance(failure, _Reply)
                return failure
            try:
                for row in csv.DictReader(io.StringIO(response.text)):
                    client_message_id = row.get("clientmessageid") or ""
                    umid = row.get("umid")
                    if client_message_id in wanted and isinstance(umid, str) and umid:
                        status_value = (row.get("status_value") or "").lower()
                        found[client_message_id] = Logged(umid, client_message_id, status_value)
            except csv.Error as exc:
                return PermanentFailure("bad_response", f"8x8's log export file is not CSV: {exc}"[:200])
        return found

    async def balance(self, account_id: str) -> Balance | Failure:
        """GET /api/v1/accounts/{accountId}/balance: the cheapest authenticated call, to check the key."""
        reply = await self._get(f"/api/v1/accounts/{quote(account_id, safe='')}/balance")
        if not isinstance(reply, _Reply):
            return reply
        payload = reply.payload if isinstance(reply.payload, dict) else {}
        amount, currency = payload.get("balance"), payload.get("currency")
        return Balance(
            float(amount) if isinstance(amount, int | float) and not isinstance(amount, bool) else None,
            currency if isinstance(currency, str) else None,
        )

    async def prices(self, account_id: str) -> PriceList | Failure:
        """GET /api/v1/accounts/{accountId}/prices (outbound, this sub-account): what one SMS costs."""
        query = urlencode({"direction": "outbound", "subAccountId": self.config.sub_account_id})
        reply = await self._get(f"/api/v1/accounts/{quote(account_id, safe='')}/prices?{query}")
        if not isinstance(reply, _Reply):
            return reply
        return _price_list(reply.payload, self.config.sub_account_id)

    async def feedback(self, umid: str, outcome: Outcome, *, at: datetime | None = None) -> FeedbackResult:
        """POST .../messages/{umid}/feedback: was the OTP sent as `umid` used (success) or not (failure)."""
        if outcome not in ("success", "failure"):
            raise ValueError(f"outcome must be 'success' or 'failure', not {outcome!r}")
        body: dict[str, Any] = {"outcome": outcome}
        if at is not None:
            if at.tzinfo is None:
                raise ValueError("feedback time must be timezone-aware")
            body["timestamp"] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        reply = await self._call(f"{self._prefix}/messages/{quote(umid, safe='')}/feedback", body)
        return FeedbackAccepted(umid) if isinstance(reply, _Reply) else reply

    # --- one request, with retries and the rate limit ---

    async def _call(self, path: str, body: dict[str, Any]) -> _Reply | Failure:
        async def attempt() -> _Reply | Failure:
            if self._limiter is not None:
                await self._limiter.acquire()
            return await self._post(path, body)

        return await self._retrier.run(attempt, _retry_hint)

    async def _post(self, path: str, body: dict[str, Any]) -> _Reply | Failure:
        response = await self._request("POST", path, body)
        return response if not isinstance(response, httpx.Response) else self._classify(response)

    async def _get(self, path: str) -> _Reply | Failure:
        async def attempt() -> _Reply | Failure:
            response = await self._request("GET", path)
            return response if not isinstance(response, httpx.Response) else self._classify(response)

        return await self._retrier.run(attempt, _retry_hint)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response | RetryableFailure:
        try:
            return await self._http.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            return RetryableFailure("timeout", self._describe(exc))
        except httpx.TransportError as exc:  # refused, reset, closed without an answer
            return RetryableFailure("connection", self._describe(exc))

    def _classify(self, response: httpx.Response) -> _Reply | Failure:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return _Reply(response.json() if response.content else None)
            except ValueError:
                return _Reply(None)
        code, message, error_id = self._error_body(response)
        message = message or f"HTTP {status} {response.reason_phrase}".rstrip()
        if status == 429 or status == 408 or status >= 500:
            return RetryableFailure(
                "rate_limited" if status == 429 else "server_error",
                message,
                status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After"), self._wall_clock()),
                code=code,
                error_id=error_id,
            )
        reason: Literal["bad_request", "unauthorized", "client_error"] = (
            "bad_request" if status == 400 else "unauthorized" if status == 401 else "client_error"
        )
        return PermanentFailure(reason, message, status=status, code=code, error_id=error_id)

    def _error_body(self, response: httpx.Response) -> tuple[int | None, str, str | None]:
        """8x8's ``{code, message, errorId, timestamp}``, as far as it is there."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return None, self._scrub(response.text[:200]), None
        code, message, error_id = body.get("code"), body.get("message"), body.get("errorId")
        return (
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            self._scrub(message) if isinstance(message, str) else "",
            error_id if isinstance(error_id, str) else None,
        )

    def _describe(self, exc: Exception) -> str:
        text = str(exc)
        return self._scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    def _scrub(self, text: str) -> str:
        """Whatever the far end or httpx put in a message, the key does not leave this object."""
        return text.replace(self.config.api_key.reveal(), "****")

    def _log_retry(self, attempt: int, wait: float, outcome: object) -> None:
        if isinstance(outcome, RetryableFailure):
            log.warning(
                "8x8 attempt %d failed (%s, HTTP %s, errorId %s): retrying in %.2fs",
                attempt,
                outcome.reason,
                outcome.status,
                outcome.error_id,
                wait,
            )


_ALPHA2 = re.compile(r"[A-Za-z]{2}", re.ASCII)


def _is_price(amount: object) -> TypeGuard[int | float]:
    """A number a price can be: not a bool, finite (Python's JSON reader takes NaN), not negative."""
    return isinstance(amount, int | float) and not isinstance(amount, bool) and 0 <= amount < math.inf


def _price_list(payload: Any, sub_account_id: str) -> PriceList | PermanentFailure:
    """8x8's price list, read as its schema says (`outbound`: a list of `{countries}`) or as its example
    shows (`outbound`: one `{countries}`); every amount must be a number in one currency."""
    accounts = payload.get("subAccounts") if isinstance(payload, dict) else None
    if not isinstance(accounts, list):
        return PermanentFailure("bad_response", "8x8's price list has no subAccounts list")
    ours = [a for a in accounts if isinstance(a, dict) and a.get("subAccountId") == sub_account_id]
    chosen = ours or (accounts if len(accounts) == 1 else [])
    if not chosen:
        return PermanentFailure("bad_response", f"8x8's price list has no sub-account {sub_account_id}")
    outbound = chosen[0].get("outbound") if isinstance(chosen[0], dict) else None
    groups = outbound if isinstance(outbound, list) else [outbound]
    countries: dict[str, float] = {}
    currencies: set[str] = set()
    for group in groups:
        rows = group.get("countries") if isinstance(group, dict) else None
        for country in rows if isinstance(rows, list) else []:
            code = country.get("alpha2Code") if isinstance(country, dict) else None
            operators = country.get("operators") if isinstance(country, dict) else None
            if not isinstance(code, str) or not _ALPHA2.fullmatch(code) or not isinstance(operators, list):
                continue
            for operator in operators:
                price = operator.get("price") if isinstance(operator, dict) else None
                amount = price.get("amount") if isinstance(price, dict) else None
                currency = price.get("currency") if isinstance(price, dict) else None
                if _is_price(amount) and isinstance(currency, str):
                    currencies.add(currency.upper())
                    countries[code.upper()] = max(countries.get(code.upper(), 0.0), float(amount))
    if not countries:
        return PermanentFailure("bad_response", "8x8's price list has no outbound prices")
    if len(currencies) > 1:
        return PermanentFailure("bad_response", f"8x8's price list mixes currencies: {sorted(currencies)}")
    return PriceList(currencies.pop(), countries)


def _log_time(moment: datetime) -> str:
    """A log export bound: UTC, whole seconds, ``yyyy-MM-ddTHH:mm:ssZ``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message_outcome(item: Any) -> SendResult:
    """An SmsResponse (single send, or one entry of a batch's messages) as Queued or Rejected."""
    status = item.get("status") if isinstance(item, dict) else None
    umid = item.get("umid") if isinstance(item, dict) else None
    if not isinstance(status, dict) or not isinstance(umid, str):
        return PermanentFailure("bad_response", "8x8 answered 200 without a umid and status", status=200)
    client_message_id = item.get("clientMessageId")
    client_message_id = client_message_id if isinstance(client_message_id, str) else None
    code = status.get("code")
    if code == "QUEUED":
        return Queued(umid, client_message_id)
    if code == "REJECTED":
        return Rejected(umid, client_message_id, code, str(status.get("description", "")))
    return PermanentFailure("bad_response", f"8x8 answered with unknown status code {code!r}", status=200)
