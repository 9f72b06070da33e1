"""Leaving a worker so that Kafka delivers the work in hand again: no offset commit, no cleanup."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

EX_SOFTWARE = 70  # sysexits.h: the work could not be finished
EX_CONFIG = 78  # sysexits.h: a setting is wrong; the log says which


def exit_without_commit(
    message: str, status: int = EX_SOFTWARE, exc: BaseException | None = None
) -> NoReturn:
    """Log `message` (critical), flush every handler and stderr, and end the process at once: no finally
    block, atexit hook or consumer close runs, so nothing is committed."""
    logging.getLogger("detector").critical(message, exc_info=exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(status)
