"""Leaving a worker so that Kafka delivers the work in hand again: no offset commit, no cleanup."""

from __future__ import annotations

import logging
import os
import sys
import threading
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


def leave_if_stuck(seconds: float, what: str) -> threading.Timer:
    """Arm a deadline for a stop that has begun: should the process still be here after `seconds`, it leaves
    without committing (`exit_without_commit`). A Kafka client thread that never finishes stopping would
    otherwise keep it alive for good: Faust waits for its consumer thread without a limit. Cancel the timer
    to disarm it."""
    message = f"{what} did not stop within {seconds:g} s: leaving without it (Kafka delivers its work again)"
    timer = threading.Timer(seconds, exit_without_commit, args=(message,))
    timer.daemon = True  # it must not keep the process alive either
    timer.start()
    return timer
