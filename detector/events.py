"""The event contract: OTP requests, feedback and decisions, and parsing with errors that name the field.

Parsing never raises on bad input: it returns a `BadEvent` that says which field is wrong and why, so the
caller can write a dead letter (or an `invalid_request` decision when the request id is known).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson

from detector.logs import mask_phone

MAX_EVENT_BYTES = 64 * 1024

# The longest string a client may send in each field, in characters. `request_id` becomes 8x8's
# `clientMessageId` and `message.source` its `source` (at most 16), so a longer one would fail a whole batch
# there; the others bound what a request can make the engine hash, memoise or walk.
FIELD_LIMITS = {
    "request_id": 128,
    "phone": 64,
    "client_ip": 100,
    "remote_addr": 100,
    "forwarded_for": 4096,
    "session_id": 256,
    "account_id": 256,
    "device_id": 256,
    "user_agent": 2048,
    "message.text": 1600,
    "message.source": 16,
}


def _at_most(field: str) -> msgspec.Meta:
    return msgspec.Meta(max_length=FIELD_LIMITS[field])


RequestId = Annotated[str, _at_most("request_id")]
Phone = Annotated[str, _at_most("phone")]
Address = Annotated[str, _at_most("client_ip")]
ForwardedFor = Annotated[str, _at_most("forwarded_for")]
Identifier = Annotated[str, _at_most("session_id")]
UserAgent = Annotated[str, _at_most("user_agent")]
SmsText = Annotated[str, _at_most("message.text")]
SmsSource = Annotated[str, _at_most("message.source")]
CaptchaToken = Annotated[str, msgspec.Meta(max_length=4096)]  # Turnstile's tokens are up to 2048 characters

Flow = Literal["signup", "login", "reset", "other"]
Level = Literal["low", "medium", "high"]
Outcome = Literal["verified", "failed", "completed_other"]
# The response ladder, by severity: delay asks the client to retry after `retry_after` (nothing is sent now).
Action = Literal["allow", "delay", "challenge", "block"]
ChallengeResult = Literal["passed", "failed"]
Mode = Literal["enforce", "shadow"]

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class UpstreamSignals(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the edge already knows about the client (bot manager, VPN detection, session risk)."""

    bot: bool | None = None
    anonymizer: bool | None = None
    datacenter: bool | None = None
    session_velocity: Level | None = None


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    text: SmsText | None = None
    source: SmsSource | None = None


class OtpRequest(msgspec.Struct, frozen=True, tag="otp_request", tag_field="type", omit_defaults=True):
    request_id: RequestId
    ts: float | str
    phone: Phone
    phone_country: str | None = None
    client_ip: Address | None = None
    remote_addr: Address | None = None
    forwarded_for: ForwardedFor | None = None
    ip_country: str | None = None
    signals: UpstreamSignals | None = None
    session_id: Identifier | None = None
    account_id: Identifier | None = None
    device_id: Identifier | None = None
    user_agent: UserAgent | None = None
    flow: Flow | None = None
    message: Message | None = None

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("`request_id` must not be empty - at `$.request_id`")
        if not self.phone:
            raise ValueError("`phone` must not be empty - at `$.phone`")
        _check_country(self.phone_country, "phone_country")
        _check_country(self.ip_country, "ip_country")
        if self.client_ip is None and self.remote_addr is None:
            raise ValueError("a request needs `client_ip`, or `remote_addr` (with optional `forwarded_for`)")


class OtpFeedback(msgspec.Struct, frozen=True, tag="otp_feedback", tag_field="type"):
    request_id: RequestId
    ts: float | str
    outcome: Outcome

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("`request_id` must not be empty - at `$.request_id`")


class OtpChallenge(msgspec.Struct, frozen=True, tag="otp_challenge", tag_field="type", omit_defaults=True):
    """What became of a challenge: the backend's verdict (`result`), or the CAPTCHA response `token` for
    the detector to verify with the provider (an adapter turns a token into a result for the engine)."""

    request_id: RequestId
    challenge_id: Identifier
    ts: float | str
    result: ChallengeResult | None = None
    token: CaptchaToken | None = None
    remote_ip: Address | None = None  # the solver's address, for the provider's siteverify
    # What the request was for, repeated (on Kafka, the send worker needs them to send a passed challenge's
    # code; the detector keeps no number or message). Checked against the request's fingerprint.
    phone: Phone | None = None
    phone_country: str | None = None
    client_ip: Address | None = None
    remote_addr: Address | None = None
    forwarded_for: ForwardedFor | None = None
    message: Message | None = None

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("`request_id` must not be empty - at `$.request_id`")
        if not self.challenge_id:
            raise ValueError("`challenge_id` must not be empty - at `$.challenge_id`")
        if (self.result is None) == (self.token is None):
            raise ValueError("a challenge result needs exactly one of `result` (passed/failed) or `token`")
        # What it repeats of the request is checked as the request's was (the engine rebuilds the request).
        if self.phone is not None and not self.phone:
            raise ValueError("`phone` must not be empty - at `$.phone`")
        _check_country(self.phone_country, "phone_country")
        if self.phone is not None and self.client_ip is None and self.remote_addr is None:
            raise ValueError("with `phone`, a challenge result repeats `client_ip` or `remote_addr` too")


Event = OtpRequest | OtpFeedback | OtpChallenge


class BadEvent(msgspec.Struct, frozen=True):
    """Input that could not be parsed; `request_id` is set when it could still be read from a request.

    `raw` is the input as received, kept in memory only to describe it (`describe_bad_input`), never
    written out. `fields` are the top-level field names, when the input was a JSON object.
    """

    error: str
    request_id: str | None = None
    raw: bytes = b""
    fields: tuple[str, ...] = ()
    read_request_id: str | None = None  # whatever the type; `request_id` is only set for a request


class Reason(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    value: float | int | str | None = None
    threshold: float | int | None = None
    points: float | None = None
    mode: Mode | None = None


class Decision(msgspec.Struct, frozen=True, tag="otp_decision", tag_field="type", omit_defaults=True):
    request_id: str
    ts: str | None
    action: Action
    verdict: Action
    mode: Mode
    score: float
    reasons: tuple[Reason, ...]
    policy_version: str
    client_ip: str | None = None
    phone: str | None = None
    phone_country: str | None = None
    message: Message | None = None
    flow: Flow | None = None
    retry_after: float | None = None
    # A challenge decision: the id the backend reports back with the result, and until when it may.
    challenge_id: str | None = None
    challenge_expires: str | None = None
    # A decision that replaces an earlier one for the same request_id (a challenge that was passed, failed
    # or expired): the earlier action.
    supersedes: Action | None = None


def _check_country(value: str | None, field: str) -> None:
    if value is not None and not _is_country_code(value):
        raise ValueError(f"`{field}` must be an ISO 3166 alpha-2 code like 'GB' - at `$.{field}`")


def _is_country_code(value: str) -> bool:
    return len(value) == 2 and value.isascii() and value.isalpha() and value.isupper()


def parse_timestamp(value: float | str) -> float:
    """Event time as epoch seconds, from epoch seconds or RFC 3339 with an offset."""
    if isinstance(value, str):
        if not _RFC3339.match(value):
            example = "2026-11-23T08:55:00Z"
            raise ValueError(f"`ts` is not RFC 3339 with an offset (e.g. {example}): {value[:40]!r}")
        return datetime.fromisoformat(value.replace("z", "Z")).timestamp()
    if isinstance(value, bool):
        raise ValueError("`ts` must be epoch seconds or RFC 3339, not a boolean")
    if not 0 <= value < _LAST_EPOCH:
        raise ValueError(f"`ts` epoch seconds out of range: {value}")
    return float(value)


_LAST_EPOCH = 32503680000  # 3000-01-01


def format_timestamp(epoch: float) -> str:
    """RFC 3339 in UTC with milliseconds: one spelling for every event time we write."""
    second = int(epoch)
    # The microsecond datetime.fromtimestamp rounds to (half to even), without building a datetime.
    microsecond = round((epoch - second) * 1e6)
    if microsecond >= 1_000_000 or epoch < 0:  # rounded up to the next second, or before 1970
        moment = datetime.fromtimestamp(epoch, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # Events arrive in time order: the spelling of their second is usually the previous event's.
    whole = _SECONDS.get(second)
    if whole is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        whole = _SECONDS[second] = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6]
    return whole + _MILLISECONDS[microsecond // 1000]


_SECONDS: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS"
_MILLISECONDS = tuple(f".{millisecond:03d}Z" for millisecond in range(1000))


_convert_type: Any = Event
_decoder = msgspec.json.Decoder(_convert_type)


def parse_event(raw: bytes) -> Event | BadEvent:
    """Parse one JSON event (a file line or a Kafka message value). Never raises, whatever the bytes.

    The common case is one pass of msgspec's typed decoder; input that fails it is read again with orjson
    only to say what is wrong and to recover the request id. Input too big or too deeply nested to parse
    safely still yields the request id when `peek_request_id` can read it from its head.
    """
    try:
        return _parse(raw)
    except Exception as exc:  # whatever else a hostile input finds in a parser: a dead letter, not a crash
        return _unreadable(f"unreadable event ({type(exc).__name__})", raw)


def _parse(raw: bytes) -> Event | BadEvent:
    if len(raw) > MAX_EVENT_BYTES:
        return _unreadable(f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} byte limit", raw)
    try:
        event: Event = _decoder.decode(raw)
        parse_timestamp(event.ts)
    except (msgspec.DecodeError, ValueError):
        return _explain(raw)
    except RecursionError:
        return _unreadable(_TOO_DEEP, raw)
    return event


_TOO_DEEP = "JSON nested too deeply to read"


def _explain(raw: bytes) -> BadEvent:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _unreadable(f"not JSON: {exc}", raw)
    except RecursionError:
        return _unreadable(_TOO_DEEP, raw)
    explained = event_from_object(obj, raw)
    if isinstance(explained, BadEvent):
        return explained
    return BadEvent(error="not a valid event", raw=raw, fields=_field_names(obj))


def _unreadable(error: str, raw: bytes) -> BadEvent:
    return BadEvent(error=error, request_id=peek_request_id(raw), raw=raw)


def event_from_object(obj: Any, raw: bytes = b"") -> Event | BadEvent:
    if not isinstance(obj, dict):
        return BadEvent(error=f"an event must be a JSON object, got {type(obj).__name__}", raw=raw)
    try:
        event: Event = msgspec.convert(obj, _convert_type)
        parse_timestamp(event.ts)
    except (msgspec.ValidationError, ValueError, RecursionError) as exc:
        request_id = obj.get("request_id")
        readable = request_id if _readable_id(request_id) else None
        error = _TOO_DEEP if isinstance(exc, RecursionError) else _field_error(exc)
        return BadEvent(
            error=error,
            request_id=readable if obj.get("type") == "otp_request" else None,
            raw=raw,
            fields=_field_names(obj),
            read_request_id=readable,
        )
    return event


def describe_bad_input(bad: BadEvent, raw: bytes, digest: Callable[[bytes], str]) -> dict[str, Any]:
    """What a dead letter says about input that is not an event, without the input: it may hold numbers,
    OTP texts and addresses. The size and a keyed digest identify the original (found in Kafka by its
    partition and offset, or in a file by its line); the error and the top-level field names say what is
    wrong with it. Numbers quoted in the error are masked."""
    letter: dict[str, Any] = {"error": mask_phone(bad.error), "size": len(raw), "digest": digest(raw)}
    if bad.fields:
        letter["fields"] = list(bad.fields)
    if bad.read_request_id is not None:
        letter["request_id"] = bad.read_request_id
    return letter


def _readable_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= FIELD_LIMITS["request_id"]


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}", re.ASCII)
_MAX_FIELD_NAMES = 32


def _field_names(obj: object) -> tuple[str, ...]:
    """Top-level names, only those that look like field names: a key can carry data too ({"+4474...": 1})."""
    if not isinstance(obj, dict):
        return ()
    names = [
        k for k in obj if isinstance(k, str) and _FIELD_NAME.fullmatch(k) and sum(map(str.isdigit, k)) < 4
    ]
    return tuple(names[:_MAX_FIELD_NAMES])


# One JSON token at a time, skipping whitespace: a string, a run of openers, other punctuation, or a
# scalar. Possessive quantifiers: a string cut by the bound fails in one pass, without backtracking.
_TOKEN = re.compile(
    rb'\s*+(?:("[^"\\\x00-\x1f]*+(?:\\.[^"\\\x00-\x1f]*+)*+")|([\[{][\s\[{]*+)|([}\]:,])'
    rb"|(-?[0-9][0-9.eE+-]*+|true|false|null))"
)
PEEK_BYTES = 4096
_PEEK_TOKENS = 256


def peek_request_id(raw: bytes) -> str | None:
    """The `request_id` of an `otp_request` read from the head of input too big or deep to parse whole.

    A small JSON lexer over the first `PEEK_BYTES`: only top-level string members count, it stops at the
    first token it cannot read (a string cut by the bound, or garbage), and the answer is given only when
    `type` is "otp_request" and one `request_id` of at most the field's limit was read. Its cost is bounded
    by `PEEK_BYTES` and `_PEEK_TOKENS` (a few hundred microseconds at worst), whatever the input.
    """
    head = raw[:PEEK_BYTES]
    if not head.lstrip().startswith(b"{"):
        return None
    members: dict[bytes, list[bytes]] = {}
    depth, position, key, expect_value = 0, 0, None, False
    for _ in range(_PEEK_TOKENS):
        match = _TOKEN.match(head, position)
        if match is None:
            break
        position = match.end()
        string, openers, punctuation = match.group(1), match.group(2), match.group(3)
        if openers is not None:
            depth += openers.count(b"[") + openers.count(b"{")
        elif punctuation in (b"}", b"]"):
            depth -= 1
            if depth <= 0:
                break
        elif punctuation == b":":
            expect_value = key is not None
            continue
        elif depth == 1 and string is not None and expect_value and key is not None:
            members.setdefault(key, []).append(string)
        elif depth == 1 and string is not None and not expect_value:
            key = string
            continue
        key, expect_value = None, False
    types, ids = members.get(b'"type"', []), members.get(b'"request_id"', [])
    if len(types) != 1 or len(ids) != 1 or types[0] != b'"otp_request"':
        return None
    try:
        request_id = orjson.loads(ids[0])
    except orjson.JSONDecodeError:
        return None
    return request_id if _readable_id(request_id) else None


def _field_error(exc: Exception) -> str:
    text = str(exc)
    if "Invalid value" in text and "$.type" in text:
        return "`type` must be 'otp_request' or 'otp_feedback' - at `$.type`"
    if "Object missing required field `type`" in text:
        return "missing required field `type` ('otp_request' or 'otp_feedback')"
    return text


_encoder = msgspec.json.Encoder()


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)


OutcomeStatus = Literal["sent", "rejected", "skipped", "failed"]


class OtpOutcome(msgspec.Struct, frozen=True, tag="otp_outcome", tag_field="type", omit_defaults=True):
    """What became of one request's SMS, published by the send worker keyed by request_id; see
    schemas/otp_outcome.schema.json."""

    request_id: str
    status: OutcomeStatus
    ts: str
    umid: str | None = None
    code: str | None = None
    message: str | None = None
    error: str | None = None  # for failed: our classification (timeout, invalid_message, in_doubt, ...)
    http_status: int | None = None
    error_id: str | None = None  # 8x8's errorId, for a support ticket
    attempts: int | None = None
    action: Literal["delay", "challenge", "block"] | None = None
    reasons: tuple[str, ...] | None = None
