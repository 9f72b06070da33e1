"""The `otp_outcome` events the send worker publishes, built from what 8x8 answered (or its log holds).

Nothing here does I/O. Texts that come from 8x8 are masked (no phone numbers) and bounded before they
reach an outcome or a log line.
"""

from __future__ import annotations

import logging

import orjson

from detector.events import OtpOutcome, OutcomeStatus, encode
from detector.logs import mask_phone
from detector.send.eightbyeight import (
    FeedbackResult,
    Logged,
    PermanentFailure,
    Queued,
    Rejected,
    RetryableFailure,
    SendResult,
)

log = logging.getLogger(__name__)

MAX_MESSAGE = 500  # characters of 8x8's reason kept in an outcome
encode_outcome = encode


def from_result(request_id: str, ts: str, result: SendResult, attempts: int) -> OtpOutcome:
    """The outcome of the last attempt to send one message."""
    if isinstance(result, Queued):
        log.debug("sent %s (umid %s)", request_id, result.umid)
        return OtpOutcome(request_id=request_id, status="sent", ts=ts, umid=result.umid, attempts=attempts)
    if isinstance(result, Rejected):
        log.info("8x8 rejected %s: %s %s", request_id, result.code, mask_phone(result.message))
        return OtpOutcome(
            request_id=request_id,
            status="rejected",
            ts=ts,
            umid=result.umid,
            code=result.code,
            message=clean(result.message),
            attempts=attempts,
        )
    code = str(result.code) if result.code is not None else result.reason
    unauthorized = isinstance(result, PermanentFailure) and result.reason == "unauthorized"
    log.log(
        logging.ERROR if unauthorized else logging.WARNING,
        "sending %s failed after %d attempt(s): %s, HTTP %s, code %s, errorId %s",
        request_id,
        attempts,
        result.reason,
        result.status,
        code,
        result.error_id,
    )
    return OtpOutcome(
        request_id=request_id,
        status="failed",
        ts=ts,
        code=code,
        message=clean(result.message),
        error=result.reason,
        http_status=result.status,
        error_id=result.error_id,
        attempts=attempts,
    )


def from_log(request_id: str, ts: str, logged: Logged, attempts: int | None, after: str) -> OtpOutcome:
    """What 8x8's message log says became of a request whose answer was lost (`after` says how)."""
    note = clean(f"found in 8x8's message log after: {after}")
    log.info("request %s found in 8x8's message log (umid %s): not sent again", request_id, logged.umid)
    if logged.status == "rejected":
        return OtpOutcome(
            request_id=request_id,
            status="rejected",
            ts=ts,
            umid=logged.umid,
            code="REJECTED",
            message=note,
            attempts=attempts,
        )
    return OtpOutcome(
        request_id=request_id, status="sent", ts=ts, umid=logged.umid, message=note, attempts=attempts
    )


def failed(request_id: str, ts: str, error: str, message: str) -> OtpOutcome:
    """A failure of our own classification (invalid_decision, invalid_message, in_doubt)."""
    return OtpOutcome(
        request_id=request_id, status="failed", ts=ts, code=error, message=clean(message), error=error
    )


def status_of(outcome: bytes | None) -> OutcomeStatus:
    """The status of an encoded outcome (as the ledger holds it)."""
    try:
        status = orjson.loads(outcome or b"{}").get("status")
    except (orjson.JSONDecodeError, AttributeError):
        status = None
    return status if status in ("sent", "rejected", "skipped", "failed") else "failed"


def clean(text: str) -> str:
    """8x8's reason as it may appear in an outcome: no phone numbers, bounded."""
    return mask_phone(text)[:MAX_MESSAGE]


def describe(result: SendResult | FeedbackResult | None) -> str:
    """A failure for a log line or an outcome's message: no text of 8x8's."""
    if isinstance(result, RetryableFailure | PermanentFailure):
        return f"{result.reason}, HTTP {result.status}, code {result.code}, errorId {result.error_id}"
    return "the worker stopped before it was posted" if result is None else type(result).__name__
