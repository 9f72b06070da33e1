"""Logging set-up: readable text by default, one JSON object per line on request (--log-format json)."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

_PHONE = re.compile(r"\+?\d{7,15}")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def mask_phone(text: str) -> str:
    """Keep the country-ish head and the last two digits: +4477******23."""
    return _PHONE.sub(lambda m: m.group(0)[:4] + "*" * max(len(m.group(0)) - 6, 0) + m.group(0)[-2:], text)


class MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_phone(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = mask_phone(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
