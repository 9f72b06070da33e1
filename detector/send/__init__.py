"""Sending the OTP SMS through 8x8: the API client, its key, rate limit and retries.

The send worker needs only what is exported here; see :mod:`detector.send.eightbyeight`.
"""

from detector.send.eightbyeight import (
    MAX_BATCH,
    REGIONS,
    EightByEightClient,
    EightByEightConfig,
    FeedbackAccepted,
    FeedbackResult,
    PermanentFailure,
    Queued,
    Rejected,
    RetryableFailure,
    SendResult,
    SmsMessage,
    parse_retry_after,
)
from detector.send.ratelimit import TokenBucket
from detector.send.retry import NO_RETRIES, Retrier, Retry, RetryPolicy
from detector.send.secrets import API_KEY_ENV, API_KEY_FILE_ENV, ApiKey, Secret, SecretError, load_api_key

__all__ = [
    "API_KEY_ENV",
    "API_KEY_FILE_ENV",
    "MAX_BATCH",
    "NO_RETRIES",
    "REGIONS",
    "ApiKey",
    "EightByEightClient",
    "EightByEightConfig",
    "FeedbackAccepted",
    "FeedbackResult",
    "PermanentFailure",
    "Queued",
    "Rejected",
    "Retrier",
    "Retry",
    "RetryPolicy",
    "RetryableFailure",
    "Secret",
    "SecretError",
    "SendResult",
    "SmsMessage",
    "TokenBucket",
    "load_api_key",
    "parse_retry_after",
]
