"""The event contract: OTP requests, feedback and decisions, and parsing with errors that name the field.

Parsing never raises on bad input: it returns a `BadEvent` that says which field is wrong and why, so the
caller can write a dead letter (or an `invalid_request` decision when the request id is known).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import orjson

MAX_EVENT_BYTES = 64 * 1024

Flow = Literal["signup", "login", "reset", "other"]
Level = Literal["low", "medium", "high"]
Outcome = Literal["verified", "failed", "completed_other"]
Action = Literal["allow", "challenge", "block"]
Mode = Literal["enforce", "shadow"]

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class UpstreamSignals(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the edge already knows about the client (bot manager, VPN detection, session risk)."""

    bot: bool | None = None
    anonymizer: bool | None = None
    datacenter: bool | None = None
    session_velocity: Level | None = None


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    text: str | None = None
    source: str | None = None


class OtpRequest(msgspec.Struct, frozen=True, tag="otp_request", tag_field="type", omit_defaults=True):
    request_id: str
    ts: float | str
    phone: str
    phone_country: str | None = None
    client_ip: str | None = None
    remote_addr: str | None = None
    forwarded_for: str | None = None
    ip_country: str | None = None
    signals: UpstreamSignals | None = None
    session_id: str | None = None
    account_id: str | None = None
    device_id: str | None = None
    user_agent: str | None = None
    flow: Flow | None = None
    message: Message | None = None

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("`request_id` must not be empty - at `$.request_id`")
        if not self.phone:
            raise ValueError("`phone` must not be empty - at `$.phone`")
        if self.phone_country is not None and not _is_country_code(self.phone_country):
            raise ValueError(
                "`phone_country` must be an ISO 3166 alpha-2 code like 'GB' - at `$.phone_country`"
            )
        if self.ip_country is not None and not _is_country_code(self.ip_country):
            raise ValueError("`ip_country` must be an ISO 3166 alpha-2 code like 'GB' - at `$.ip_country`")
        if self.client_ip is None and self.remote_addr is None:
            raise ValueError("a request needs `client_ip`, or `remote_addr` (with optional `forwarded_for`)")


class OtpFeedback(msgspec.Struct, frozen=True, tag="otp_feedback", tag_field="type"):
    request_id: str
    ts: float | str
    outcome: Outcome

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("`request_id` must not be empty - at `$.request_id`")


Event = OtpRequest | OtpFeedback


class BadEvent(msgspec.Struct, frozen=True):
    """Input that could not be parsed; `request_id` is set when it could still be read."""

    error: str
    request_id: str | None = None
    raw: bytes = b""


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


def _is_country_code(value: str) -> bool:
    return len(value) == 2 and value.isascii() and value.isalpha() and value.isupper()


def parse_timestamp(value: float | str) -> float:
    """Event time as epoch seconds, from epoch seconds or RFC 3339 with an offset."""
    if isinstance(value, bool):
        raise ValueError("`ts` must be epoch seconds or RFC 3339, not a boolean")
    if isinstance(value, int | float):
        if not 0 <= value < 32503680000:
            raise ValueError(f"`ts` epoch seconds out of range: {value}")
        return float(value)
    if not _RFC3339.match(value):
        raise ValueError(f"`ts` is not RFC 3339 with an offset (e.g. 2026-11-23T08:55:00Z): {value[:40]!r}")
    return datetime.fromisoformat(value.replace("z", "Z")).timestamp()


def format_timestamp(epoch: float) -> str:
    """RFC 3339 in UTC with milliseconds: one spelling for every event time we write."""
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


_convert_type: Any = Event
_decoder = msgspec.json.Decoder(_convert_type)


def parse_event(raw: bytes) -> Event | BadEvent:
    """Parse one JSON event (a file line or a Kafka message value).

    The common case is one pass of msgspec's typed decoder; input that fails it is read again with orjson
    only to say what is wrong and to recover the request id.
    """
    if len(raw) > MAX_EVENT_BYTES:
        return BadEvent(
            error=f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} byte limit", raw=raw[:256]
        )
    try:
        event: Event = _decoder.decode(raw)
        parse_timestamp(event.ts)
    except (msgspec.DecodeError, ValueError):
        return _explain(raw)
    return event


def _explain(raw: bytes) -> BadEvent:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return BadEvent(error=f"not JSON: {exc}", raw=raw)
    explained = event_from_object(obj, raw)
    if isinstance(explained, BadEvent):
        return explained
    return BadEvent(error="not a valid event", raw=raw)


def event_from_object(obj: Any, raw: bytes = b"") -> Event | BadEvent:
    if not isinstance(obj, dict):
        return BadEvent(error=f"an event must be a JSON object, got {type(obj).__name__}", raw=raw)
    try:
        event: Event = msgspec.convert(obj, _convert_type)
        parse_timestamp(event.ts)
    except (msgspec.ValidationError, ValueError) as exc:
        request_id = obj.get("request_id")
        is_request = obj.get("type") == "otp_request" and isinstance(request_id, str) and request_id
        return BadEvent(error=_field_error(exc), request_id=request_id if is_request else None, raw=raw)
    return event


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
    action: Literal["challenge", "block"] | None = None
    reasons: tuple[str, ...] | None = None
