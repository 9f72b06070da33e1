"""Logging set-up: readable text by default, one JSON object per line on request (--log-format json).

Every line, at every level and from every library, goes through `mask`: phone numbers are masked, and the
values of personal fields (OTP text, numbers, client addresses, identifiers) are replaced wherever a line
quotes an event or a decision, as JSON (aiokafka's producer logs every message it sends at DEBUG) or as a
Python repr. Messages, extra fields and exceptions alike.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

_PHONE = re.compile(r"\+?\d(?:[ \u00a0]?\d){6,14}")  # digits, maybe spaced as people write numbers
_PERSONAL_FIELDS = (
    "text|phone|client_ip|remote_addr|forwarded_for|ip|user_agent|session_id|account_id|device_id|destination"
)
# `"text": "..."`, `'text': '...'` (JSON or a dict's repr), `text='...'` (a struct's repr), and
# `\"text\": \"...\"` (JSON quoted in JSON or in an exception message). Each quoting has its own
# unambiguous body, so a hostile value cannot make the expression backtrack.
_PERSONAL_VALUE = re.compile(
    rf"""(?P<key>(?:\\?["'])?\b(?:{_PERSONAL_FIELDS})(?:\\?["'])?\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|\\"(?:[^"\\\n]|\\[^"\n])*\\")"""
)
_PERSONAL_KEYS = frozenset(_PERSONAL_FIELDS.split("|"))
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
REDACTED = "***"

# Libraries that log every start-up and connection step at INFO (~45 lines for a worker start): below DEBUG
# only their warnings show. Faust's recovery stays at INFO: its "Worker ready" says when a worker starts
# (or, after a rebalance, resumes) processing, a few lines per rebalance.
NOISY_LIBRARIES = ("faust", "mode", "aiokafka", "kafka")
KEPT_AT_INFO = ("faust.tables.recovery",)


def mask_phone(text: str) -> str:
    """Keep the country-ish head and the last two digits: +4477******23."""
    return _PHONE.sub(_mask_number, text)


def _mask_number(match: re.Match[str]) -> str:
    number = match.group(0)
    return number[:4] + "*" * max(len(number) - 6, 0) + number[-2:]


def mask(text: str) -> str:
    """`text` with the values of personal fields replaced and every other phone number masked."""
    return mask_phone(_PERSONAL_VALUE.sub(_redact_value, text))


def _redact_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[:2] if value.startswith("\\") else value[0]
    return f"{match.group('key')}{quote}{REDACTED}{quote}"


def _masked(value: Any, key: str | None = None) -> Any:
    """A JSON-ready copy of an extra field with personal values replaced, at any depth."""
    if key in _PERSONAL_KEYS and value is not None:
        return REDACTED
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, int) and not isinstance(value, bool) and _PHONE.fullmatch(str(value)):
        return mask_phone(str(value))
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(item) for item in value]
    return mask(repr(value) if isinstance(value, bytes) else str(value))


class MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))  # the exception and stack too


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        entry.update({k: _masked(v, k) for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = mask(self.formatStack(record.stack_info))
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    debugging = root.getEffectiveLevel() <= logging.DEBUG
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if debugging else logging.WARNING)
    for name in KEPT_AT_INFO:
        logging.getLogger(name).setLevel(root.level)
