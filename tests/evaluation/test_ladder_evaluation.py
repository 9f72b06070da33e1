"""The evaluation follows the response ladder and shows containment: a delayed request is retried by its
client after `retry_after` (a new request, counted by the engine) and counted by its retry's fate; quarantines
and the spend breaker are counted from the decisions' reasons into the report and the demo's lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.evaluation.containment import containment_text
from detector.evaluation.evaluate import evaluate_file, format_table
from detector.evaluation.report import render_html
from detector.events import Decision
from tests.factories import T0, feedback, request

LADDER_POLICY = 'version: "ladder-test"\nscore: {delay_at: 15, delay_for: 30s}\n'
BURST_IP = "198.51.100.66"


def _write(path: Path, events: list[dict[str, Any]]) -> Path:
    ordered = sorted(events, key=lambda e: float(e["ts"]))
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in ordered))
    return path


def _vpn_user(request_id: str, ts: float, phone: str) -> list[dict[str, Any]]:
    """A person behind a flagged VPN (20 points: the delay band) who enters the code 20 s after asking."""
    sent = request(
        request_id=request_id, ts=ts, phone=phone, client_ip="203.0.113.20", ip_country="GB",
        signals={"anonymizer": True}, label="legit", scenario="vpn", session_id=f"s-{request_id}",
    )  # fmt: skip
    return [sent, feedback(request_id, ts + 20)]


def _burst(count: int) -> list[dict[str, Any]]:
    """One client asking for codes to fresh numbers (each in a block of its own) every 5 s: quarantined once
    over the block line."""
    return [
        request(
            request_id=f"burst-{i}",
            ts=T0 + 600 + 5 * i,
            phone=f"+4474{i:04d}0055",
            client_ip=BURST_IP,
            label="attack",
            scenario="burst",
        )
        for i in range(count)
    ]


@pytest.fixture
def ladder_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(LADDER_POLICY)
    return path


def test_a_delayed_person_retries_after_the_wait_and_gets_the_code(
    tmp_path: Path, ladder_policy: Path
) -> None:
    events = _write(tmp_path / "events.jsonl", _vpn_user("vpn-1", T0, "+447400111111"))
    seen: list[Decision] = []
    report = evaluate_file(events, ladder_policy, on_decision=seen.append)
    first, retry = seen
    assert (first.request_id, first.action, first.retry_after) == ("vpn-1", "delay", 30.0)
    assert retry.request_id.startswith("vpn-1~retry") and retry.action == "allow"
    assert "delay_waited" in {reason.code for reason in retry.reasons}
    legit = report.labels["legit"]
    assert (legit.requests, legit.delayed, legit.allowed, legit.delayed_unsent) == (1, 1, 1, 0)
    assert legit.stopped_pct == 0.0
    done = legit.follow_through
    assert done is not None and (done.sms_sent, done.users_served) == (1, 1)
    assert done.delay_median_s == pytest.approx(30.0, abs=0.01)
    # the code was entered: the file's feedback followed the retry, and the backend reported the delayed
    # request completed through it (so it does not count as an unverified code)
    assert report.feedback == 2
    assert report.closed_loop is not None
    assert (report.closed_loop.retries, report.closed_loop.delays_completed) == (1, 1)


def test_without_the_closed_loop_a_delay_is_stopped_not_blocked(tmp_path: Path, ladder_policy: Path) -> None:
    events = _write(tmp_path / "events.jsonl", _vpn_user("vpn-1", T0, "+447400111111"))
    report = evaluate_file(events, ladder_policy, follow=False)
    legit = report.labels["legit"]
    assert (legit.delayed, legit.delayed_unsent, legit.blocked, legit.allowed) == (1, 1, 0, 0)
    assert legit.stopped_pct == 100.0
    assert "delayed first: 1 requests (100.00%)" in format_table(report)
    assert "1 never ended in a send" in format_table(report)


def test_a_bots_retries_count_again(tmp_path: Path, ladder_policy: Path) -> None:
    bots = [
        request(
            request_id=f"bot-{i}",
            ts=T0 + 2 * i,
            phone=f"+4474006{i:05d}",
            client_ip="203.0.113.77",
            signals={"anonymizer": True},
            label="attack",
            scenario="vpn_bot",
        )
        for i in range(30)
    ]
    seen: list[Decision] = []
    report = evaluate_file(_write(tmp_path / "events.jsonl", bots), ladder_policy, on_decision=seen.append)
    retries = [d for d in seen if "~retry" in d.request_id and d.supersedes is None]
    assert retries, "delayed bots ask again"
    attack = report.labels["attack"]
    assert attack.requests == 30 and attack.delayed >= len({d.request_id.split("~")[0] for d in retries})
    # the retries are requests to the engine: its counters climb, and later bots are stopped harder
    assert attack.blocked + attack.challenged > 0
    assert attack.allowed + attack.challenged + attack.blocked + attack.delayed_unsent == 30


def test_quarantines_are_counted_and_shown(tmp_path: Path) -> None:
    known = request(request_id="regular", ts=T0, phone="+447400777777", client_ip="203.0.113.10")
    known.update(label="legit", scenario="regular")
    returning = request(
        request_id="regular-again", ts=T0 + 600 + 5 * 45 + 1, phone="+447400777777", client_ip=BURST_IP,
        label="legit", scenario="regular",
    )  # fmt: skip
    events = _write(tmp_path / "events.jsonl", [known, feedback("regular", T0 + 20), *_burst(60), returning])
    report = evaluate_file(events)
    found = report.containment
    assert found is not None
    ip = found.quarantines["ip"]
    assert ip.opened == 1 and ip.by_level == {"1": 1}
    assert ip.blocked >= 10 and found.quarantine_blocked >= ip.blocked
    assert ip.exempt == 1 and found.quarantine_exempt == 1  # the returning, known-good number
    attack = report.labels["attack"]
    assert found.quarantine_blocked <= attack.blocked
    html = render_html(report)
    assert '<table id="quarantines">' in html
    assert f"<tr><td>ip</td><td>{ip.opened:,}</td><td>level 1: 1</td><td>{ip.blocked:,}</td>" in html
    text = containment_text(found)
    assert f"{found.quarantine_blocked:,} requests blocked by them" in text and "ip 1 (by level 1:1)" in text


def test_a_client_delayed_again_and_again_retries_each_time_under_an_id_of_its_own(tmp_path: Path) -> None:
    """Each retry lands inside a longer retry delay (the rule's own delay on the ladder, every retry counted):
    the client retries under a new id each time, at most MAX_RETRIES times."""
    policy = tmp_path / "policy.yaml"
    policy.write_text('version: "retry-ladder"\nrules:\n  retry_delay: {action: delay, base: 30s, cap: 1h}\n')
    phone = "+447400222222"
    asks = [
        request(request_id="first", ts=T0, phone=phone, label="legit", scenario="impatient"),
        request(request_id="again", ts=T0 + 5, phone=phone, label="legit", scenario="impatient"),
    ]
    seen: list[Decision] = []
    report = evaluate_file(_write(tmp_path / "events.jsonl", asks), policy, on_decision=seen.append)
    first_decisions = [d for d in seen if d.request_id.startswith("again") and d.supersedes is None]
    ids = [d.request_id for d in first_decisions]
    assert ids == ["again", "again~retry1", "again~retry2", "again~retry3"]
    delays = [d.retry_after or 0.0 for d in first_decisions if d.action == "delay"]
    assert len(delays) == 3 and delays == sorted(delays), "each retry counted: the wait grows"
    assert report.labels["legit"].delayed == 1
