"""`detector.kafka.exit`: a worker whose stop is stuck leaves without committing, in a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from detector.kafka.exit import EX_SOFTWARE

STUCK = textwrap.dedent(
    """
    import threading
    from detector.kafka.exit import leave_if_stuck

    # A client thread that never finishes stopping (not a daemon: the interpreter would wait for it).
    threading.Thread(target=threading.Event().wait, daemon=False).start()
    leave_if_stuck(0.5, "the test worker")
    """
)


def test_a_stop_that_outlives_its_deadline_leaves_without_commit() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_SOFTWARE, done.stderr
    assert "the test worker did not stop within 0.5 s" in done.stderr
    assert time.monotonic() - started < 30


def test_a_stop_within_its_deadline_ends_as_it_would() -> None:
    script = STUCK.replace("daemon=False", "daemon=True").replace(
        'leave_if_stuck(0.5, "the test worker")', 'leave_if_stuck(30, "the test worker")'
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "did not stop" not in done.stderr
