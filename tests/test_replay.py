import heapq
import random
from pathlib import Path

import orjson
from click.testing import CliRunner

from detector.cli import main
from detector.replay import parse_lines
from tests.factories import T0, feedback, request


def _stream(path: Path, seed: int = 3, size: int = 400) -> Path:
    rng = random.Random(seed)
    lines: list[bytes] = []
    for i in range(size):
        ts = T0 + i * rng.uniform(0.5, 30)
        event = request(
            request_id=f"q{i}",
            ts=ts,
            phone=f"+4474001{rng.randrange(50):05d}",
            client_ip=f"198.51.100.{rng.randrange(8)}",
            session_id=f"s{rng.randrange(40)}",
        )
        lines.append(orjson.dumps(event))
        if rng.random() < 0.6:
            lines.append(orjson.dumps(feedback(f"q{i}", ts + rng.uniform(5, 90))))
    rng.shuffle(lines)  # replay sorts by event time
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _replay(*args: str) -> tuple[int, dict, str]:
    result = CliRunner().invoke(main, ["replay", *args])
    summary = orjson.loads(result.stdout) if result.exit_code == 0 else {}
    return result.exit_code, summary, result.output


def test_same_input_and_policy_give_byte_identical_decisions(tmp_path: Path) -> None:
    events = _stream(tmp_path / "events.jsonl")
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert _replay(str(events), "--decisions", str(first))[0] == 0
    assert _replay(str(events), "--decisions", str(second), "--batch-size", "7")[0] == 0
    assert first.read_bytes() == second.read_bytes()
    decisions = [orjson.loads(line) for line in first.read_bytes().splitlines()]
    assert len(decisions) == 400 and len({d["request_id"] for d in decisions}) == 400
    assert {d["action"] for d in decisions} >= {"allow", "block"}


def test_bad_input_never_stops_a_run(tmp_path: Path) -> None:
    good = orjson.dumps(request(request_id="ok", ts=T0))
    lines = [
        good,
        b"not json at all",
        b'{"type": "otp_request", "request_id": "bad-ts", "ts": "later", "phone": "+447400123456", '
        b'"client_ip": "1.2.3.4"}',
        b'{"type": "otp_request", "ts": 1, "phone": "+447400123456", "client_ip": "1.2.3.4"}',
        b'{"type": "otp_feedback", "request_id": "ok", "ts": 1795420900, "outcome": "perhaps"}',
        orjson.dumps(request(request_id="huge", user_agent="x" * 70_000)),
        b"[1, 2, 3]",
        orjson.dumps(feedback("ok", T0 + 20)),
        orjson.dumps(feedback("never-requested", T0 + 20)),
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    dead = tmp_path / "dead.jsonl"
    code, summary, _ = _replay(
        str(events), "--decisions", str(tmp_path / "d.jsonl"), "--dead-letters", str(dead)
    )
    assert code == 0
    assert summary["requests"] == 3 and summary["invalid_requests"] == 2
    assert summary["bad_input"] == 6
    assert summary["feedback_status"] == {"applied": 1, "unknown": 1}
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [letter["line"] for letter in letters] == [2, 4, 5, 7]
    assert any("request_id" in letter["error"] for letter in letters)
    assert any("outcome" in letter["error"] for letter in letters)
    decisions = {
        d["request_id"]: d for d in map(orjson.loads, (tmp_path / "d.jsonl").read_bytes().splitlines())
    }
    assert decisions["bad-ts"]["reasons"][0]["code"] == "invalid_request"
    assert "ts" in decisions["bad-ts"]["reasons"][0]["value"]
    assert decisions["huge"]["reasons"][0]["code"] == "invalid_request", "oversize, but its id can be read"
    assert "byte limit" in decisions["huge"]["reasons"][0]["value"]


def test_shadow_flag_allows_everything_and_keeps_verdicts(tmp_path: Path) -> None:
    events = _stream(tmp_path / "events.jsonl")
    _, enforced, _ = _replay(str(events))
    _, shadow, _ = _replay(str(events), "--shadow")
    assert shadow["mode"] == "shadow" and shadow["actions"] == {"allow": 400}
    assert shadow["verdicts"] == enforced["verdicts"]


def test_helpful_errors(tmp_path: Path) -> None:
    events = _stream(tmp_path / "events.jsonl", size=5)
    code, _, output = _replay(str(events), "--store", "postgres://x")
    assert code != 0 and "memory://" in output
    bad_policy = tmp_path / "p.yaml"
    bad_policy.write_text("mode: loud\n")
    code, _, output = _replay(str(events), "--policy", str(bad_policy))
    assert code != 0 and "$.mode" in output
    code, _, output = _replay(str(tmp_path / "missing.jsonl"))
    assert code != 0 and "does not exist" in output


def test_sigterm_stops_after_the_current_batch_with_everything_written(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    events = tmp_path / "big.jsonl"
    with events.open("wb") as out:
        for i in range(60_000):
            event = request(
                request_id=f"big{i}", ts=T0 + i, phone=f"+4474{i:08d}", client_ip=f"10.{i % 250}.0.1"
            )
            out.write(orjson.dumps(event) + b"\n")
    decisions = tmp_path / "decisions.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detector",
            "replay",
            str(events),
            "--decisions",
            str(decisions),
            "--batch-size",
            "500",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not decisions.exists() or decisions.stat().st_size == 0):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    summary = orjson.loads(stdout)
    written = decisions.read_bytes().splitlines()
    assert summary["interrupted"] is True
    assert 0 < summary["requests"] < 60_000
    assert len(written) == summary["requests"]
    assert all(orjson.loads(line)["type"] == "otp_decision" for line in written)


def _one_at_a_time(times: list[float], reorder: int) -> list[int]:
    """The reorder buffer's definition: hold `reorder` lines, let the earliest (time, line) go per arrival."""
    held: list[tuple[float, int]] = []
    out = []
    for number, ts in enumerate(times, start=1):
        heapq.heappush(held, (ts, number))
        if len(held) > reorder:
            out.append(heapq.heappop(held)[1])
    return out + [heapq.heappop(held)[1] for _ in range(len(held))]


def test_the_reorder_buffer_lets_the_earliest_line_go_whatever_the_disorder() -> None:
    rng = random.Random(3)
    for reorder in (1, 5, 50):
        times = [
            round(T0 + index + rng.choice([0, 0, 0, -1, -7, -60, 3]) * rng.random(), 1)
            for index in range(600)
        ]
        times += times[:40]  # ties on time: the line number decides
        lines = [(number, orjson.dumps(request(ts=ts))) for number, ts in enumerate(times, start=1)]
        assert [line.number for line in parse_lines(lines, reorder)] == _one_at_a_time(times, reorder)
