"""The evaluation's numbers, on hand-made events and decisions whose right answers are known."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec
import orjson
import pytest
from click.testing import CliRunner

from detector.cli.sim import demo as demo_command
from detector.cli.sim import evaluate as evaluate_command
from detector.evaluation.evaluate import (
    BUSINESS_TARGETS,
    Evaluator,
    Tally,
    evaluate_file,
    format_scorecard,
    format_table,
    outcome_of,
    read_meta,
)
from detector.evaluation.report import render_html
from detector.evaluation.result import Detection, Evaluation, Outcomes, Target
from detector.evaluation.sim import price_for, simulate, write_events
from detector.events import Action, Decision, Mode, Reason, format_timestamp
from detector.replay import read_lines

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z

# (request_id, label, scenario, phone, country, action, reasons), one every 10 s in this order.
ROWS: list[tuple[str, str, str, str, str, Action, tuple[str, ...]]] = [
    ("a1", "attack", "burst", "+998912345001", "UZ", "allow", ("non_core_destination",)),
    ("l1", "legit", "people", "+12015550123", "US", "allow", ()),
    ("a2", "attack", "burst", "+998912345002", "UZ", "allow", ("non_core_destination",)),
    (
        "a3",
        "attack",
        "burst",
        "+998912345003",
        "UZ",
        "challenge",
        ("ip_10m_velocity", "non_core_destination"),
    ),
    ("l2", "legit", "people", "+447400123456", "GB", "challenge", ("ip_24h_velocity",)),
    ("a4", "attack", "burst", "+998912345004", "UZ", "block", ("ip_10m_velocity", "prefix_1h_velocity")),
    ("a5", "attack", "burst", "+998912345005", "UZ", "allow", ("non_core_destination",)),
    ("a6", "attack", "burst", "+998912345006", "UZ", "block", ("prefix_1h_velocity",)),
    ("l3", "legit", "people", "+447400123457", "GB", "block", ("retry_too_soon",)),
    ("l4", "legit", "people", "+12015550124", "US", "allow", ()),
    ("s1", "attack", "slow", "+2348021234567", "NG", "allow", ()),
    ("s2", "attack", "slow", "+2348021234568", "NG", "challenge", ("ip_distinct_phone_countries",)),
]


def write_events_file(path: Path) -> None:
    lines = []
    for index, (rid, label, scenario, phone, _country, _action, _reasons) in enumerate(ROWS):
        lines.append(
            orjson.dumps(
                {
                    "type": "otp_request",
                    "request_id": rid,
                    "ts": format_timestamp(T0 + 10 * index),
                    "phone": phone,
                    "client_ip": "198.51.100.7",
                    "label": label,
                    "scenario": scenario,
                }
            )
        )
        if label == "legit":
            lines.append(
                orjson.dumps(
                    {
                        "type": "otp_feedback",
                        "request_id": rid,
                        "ts": format_timestamp(T0 + 10 * index + 5),
                        "outcome": "verified",
                    }
                )
            )
    lines.append(b"not json at all")
    path.write_bytes(b"\n".join(lines) + b"\n")


def decision(
    rid: str,
    phone: str,
    country: str,
    action: Action,
    reasons: tuple[str, ...],
    *,
    mode: Mode = "enforce",
    score: float = 0.0,
) -> Decision:
    return Decision(
        request_id=rid,
        ts=None,
        action="allow" if mode == "shadow" else action,
        verdict=action,
        mode=mode,
        score=score,
        reasons=tuple(Reason(code=code) for code in reasons),
        policy_version="test-1",
        client_ip="198.51.100.7",
        phone=phone,
        phone_country=country,
    )


def evaluate_rows(tmp_path: Path, mode: Mode = "enforce") -> Evaluation:
    events = tmp_path / "events.jsonl"
    write_events_file(events)
    evaluator = Evaluator(read_meta(read_lines(events)))
    scores = {"allow": 10.0, "challenge": 45.0, "block": 95.0}
    for index, (rid, _label, _scenario, phone, country, action, reasons) in enumerate(ROWS):
        evaluator.add(
            decision(rid, phone, country, action, reasons, mode=mode, score=scores[action]), T0 + 10 * index
        )
    return evaluator.report(source=str(events))


def test_counts_per_label_and_scenario(tmp_path: Path) -> None:
    report = evaluate_rows(tmp_path)
    assert report.labelled is True
    attack, legit = report.labels["attack"], report.labels["legit"]
    assert (attack.requests, attack.blocked, attack.challenged, attack.allowed) == (8, 2, 2, 4)
    assert attack.stopped_pct == 50.0
    assert (legit.requests, legit.blocked, legit.challenged, legit.allowed) == (4, 1, 1, 2)
    assert legit.blocked_pct == 25.0 and legit.challenged_pct == 25.0
    burst = report.scenarios["burst"]
    assert (burst.label, burst.requests, burst.blocked, burst.challenged, burst.allowed) == (
        "attack",
        6,
        2,
        1,
        3,
    )
    assert list(report.scenarios) == ["people", "burst", "slow"]  # legitimate first
    assert report.overall.requests == 12


def test_cost_let_through_against_the_total(tmp_path: Path) -> None:
    report = evaluate_rows(tmp_path)
    uz, ng = price_for("UZ"), price_for("NG")
    attack = report.labels["attack"]
    assert attack.cost_total == pytest.approx(6 * uz + 2 * ng)
    assert attack.cost_let_through == pytest.approx(3 * uz + ng)  # a1, a2, a5, s1
    assert attack.cost_stopped == pytest.approx(3 * uz + ng)
    assert attack.cost_stopped_pct == pytest.approx(100 * (3 * uz + ng) / (6 * uz + 2 * ng), abs=1e-3)
    burst = report.scenarios["burst"]
    assert burst.cost_blocked == pytest.approx(2 * uz) and burst.cost_challenged == pytest.approx(uz)


def test_time_to_detect(tmp_path: Path) -> None:
    report = evaluate_rows(tmp_path)
    burst = report.scenarios["burst"].time_to_detect
    # a1 allow, a2 allow, a3 challenge, then a4 is the first block (at index 5: 50 s after a1 at index 0)
    assert burst == Detection(
        blocked_ever=True,
        requests_before_first_block=3,
        allowed_before_first_block=2,
        seconds_to_first_block=50.0,
        stopped_ever=True,
        allowed_before_first_stop=2,  # a1, a2; a3 is challenged
    )
    slow = report.scenarios["slow"].time_to_detect
    assert slow.blocked_ever is False and slow.allowed_before_first_block == 1
    assert slow.seconds_to_first_block is None
    assert slow.stopped_ever is True and slow.allowed_before_first_stop == 1


def test_a_scenario_never_stopped_let_every_request_through_before_its_first_stop() -> None:
    tally = Tally()
    for index in range(3):
        tally.add("allow", 0.1, T0 + index, ())
    detect = tally.summary().time_to_detect
    assert detect.stopped_ever is False and detect.allowed_before_first_stop == 3


def test_the_business_scorecard(tmp_path: Path) -> None:
    card = evaluate_rows(tmp_path).scorecard
    assert card is not None
    uz, ng = price_for("UZ"), price_for("NG")
    assert card.attack_stopped_pct == 50.0  # a3, a4, a6, s2 of 8
    assert card.attack_blocked_pct == 25.0  # a4, a6
    assert card.attack_cost_stopped_pct == pytest.approx(100 * (3 * uz + ng) / (6 * uz + 2 * ng), abs=1e-3)
    assert (card.legit_blocked_pct, card.legit_challenged_pct) == (25.0, 25.0)
    # burst and slow both stop half their requests: the tie goes to the first name
    assert (card.worst_attack_scenario, card.worst_attack_stopped_pct) == ("burst", 50.0)
    assert (card.allowed_before_first_stop_scenario, card.allowed_before_first_stop) == ("burst", 2)
    assert card.targets["attack_blocked_pct"] == Target(value=25.0, target=">= 95", met=False)
    assert card.targets["allowed_before_first_stop"] == Target(value=2, target="<= 10", met=True)
    assert set(card.targets) == set(BUSINESS_TARGETS)
    assert "attack requests blocked" in format_scorecard(card)


def test_targets_are_judged(tmp_path: Path) -> None:
    targets = evaluate_rows(tmp_path).targets
    assert targets is not None
    assert targets["attack_stopped_pct"] == Target(value=50.0, target=">= 95", met=False)
    assert targets["legit_blocked_pct"].met is False
    assert set(targets) == {
        "attack_stopped_pct",
        "attack_cost_stopped_pct",
        "legit_blocked_pct",
        "legit_challenged_pct",
    }


def test_shadow_decisions_count_by_verdict(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "s").mkdir()
    enforce = evaluate_rows(tmp_path / "e")
    shadow = evaluate_rows(tmp_path / "s", mode="shadow")
    assert shadow.mode == "shadow" and shadow.basis == "verdict"

    def first_decisions(groups: Mapping[str, Outcomes]) -> dict[str, Outcomes]:
        return {name: msgspec.structs.replace(row, follow_through=None) for name, row in groups.items()}

    assert first_decisions(shadow.labels) == first_decisions(enforce.labels)
    assert first_decisions(shadow.scenarios) == first_decisions(enforce.scenarios)
    assert all(row.follow_through is None for row in shadow.scenarios.values())  # nothing enforced
    assert all(row.follow_through is not None for row in enforce.scenarios.values())
    shadow_decision = decision("x", "+12015550123", "US", "block", (), mode="shadow")
    assert shadow_decision.action == "allow" and outcome_of(shadow_decision) == "block"


def test_breakdowns_reasons_scores_and_timeline(tmp_path: Path) -> None:
    report = evaluate_rows(tmp_path)
    blocked_prefixes = {e.key: e.requests for e in report.blocked["prefix"]}
    assert blocked_prefixes == {"+998912345xxx": 2, "+447400123xxx": 1}
    [ip] = report.blocked["ip"]
    assert (ip.key, ip.requests) == ("198.51.100.7", 3)
    assert ip.cost == pytest.approx(2 * price_for("UZ") + price_for("GB"), abs=1e-4)
    assert report.labels["attack"].stopping_reasons == {
        "ip_10m_velocity": 2,
        "prefix_1h_velocity": 2,
        "non_core_destination": 1,
        "ip_distinct_phone_countries": 1,
    }
    scores = report.scores.by_label
    assert scores["attack"][1] == 4 and scores["attack"][4] == 2 and scores["attack"][9] == 2
    assert sum(scores["legit"]) == 4
    timeline = report.timeline
    assert timeline.buckets == 1
    assert timeline.series["burst"] == {"allow": [3], "delay": [0], "challenge": [1], "block": [2]}
    reasons = {e.key: e.requests for e in report.verdicts.would_block_by_reason}
    assert reasons == {"ip_10m_velocity": 1, "prefix_1h_velocity": 2, "retry_too_soon": 1}


def test_the_evaluation_round_trips_through_json(tmp_path: Path) -> None:
    """`--json` writes what the report can be drawn from again."""
    report = evaluate_rows(tmp_path)
    assert msgspec.json.decode(report.to_json(), type=Evaluation) == report


def test_unlabelled_files_get_the_shadow_view(tmp_path: Path) -> None:
    evaluator = Evaluator({})
    for index, (rid, _label, _scenario, phone, country, action, reasons) in enumerate(ROWS):
        evaluator.add(decision(rid, phone, country, action, reasons, mode="shadow"), T0 + index)
    report = evaluator.report()
    assert report.labelled is False and report.targets is None and report.labels == {}
    verdicts = report.verdicts
    assert verdicts.blocked == 3 and verdicts.challenged == 3
    assert verdicts.cost_blocked == pytest.approx(2 * price_for("UZ") + price_for("GB"), abs=1e-4)
    assert {e.key for e in verdicts.would_block_by_country} == {"UZ", "GB"}
    assert "would block 3 and challenge 3 of 12 requests" in format_table(report)
    page = render_html(report)
    assert page.count('class="chart"') == 8 and "would be blocked" in page


def test_read_meta_takes_labels_from_raw_lines(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_events_file(events)
    meta = read_meta(read_lines(events))
    assert len(meta) == len(ROWS)
    assert (meta["a1"].label, meta["a1"].scenario) == ("attack", "burst")


def test_evaluate_file_through_the_real_engine(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_events_file(events)
    report = evaluate_file(events)
    assert report.requests == len(ROWS) and report.bad_input == 1 and report.feedback == 4
    assert report.mode == "enforce" and report.policy_version
    for row in report.scenarios.values():
        assert row.allowed + row.challenged + row.blocked == row.requests
    assert report.scenarios["burst"].requests == 6
    shadow = evaluate_file(events, shadow=True)
    assert shadow.mode == "shadow" and shadow.overall.requests == len(ROWS)


def test_evaluate_command_writes_json_and_html(tmp_path: Path) -> None:
    events = tmp_path / "day.jsonl"
    write_events(simulate("mix", duration=2 * 3600, seed=77), events)
    out_json, out_html = tmp_path / "eval.json", tmp_path / "report" / "eval.html"
    options = ["--json", str(out_json), "--html", str(out_html), "--legit-pass-rate", "0.5"]
    result = CliRunner().invoke(evaluate_command, [str(events), *options, "--legit-delay", "30s"])
    assert result.exit_code == 0, result.output
    assert "fixed_ip_burst" in result.output and "targets:" in result.output
    assert "got code" in result.output and "captcha_farm" in result.output
    report = orjson.loads(out_json.read_bytes())
    assert report["labelled"] and set(report["scenarios"]) >= {"diurnal", "victim_bombing"}
    loop = report["closed_loop"]
    assert (loop["legit_pass_rate"], loop["legit_delay_s"]) == (0.5, 30.0)
    assert report["labels"]["legit"]["follow_through"]["users"] > 0
    page = out_html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "users who<br>got a code" in page and "sent after a passed challenge" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch

    plain = CliRunner().invoke(evaluate_command, [str(events), "--no-follow", "--json", str(out_json)])
    assert plain.exit_code == 0, plain.output
    assert orjson.loads(out_json.read_bytes())["closed_loop"] is None
    bad = CliRunner().invoke(evaluate_command, [str(events), "--legit-pass-rate", "2"])
    assert bad.exit_code != 0 and "legit-pass-rate" in bad.output


def test_demo_command_prints_what_actually_happened(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        demo_command, ["--out-dir", str(tmp_path), "--duration", "2h", "--legit-delay", "20s"]
    )
    assert result.exit_code == 0, result.output
    for heading in ("stopped", "SMS sent", "got code", "+delay", "cost leaked", "captcha_farm"):
        assert heading in result.output
    assert "attack SMS sent" in result.output and "people got their code" in result.output
    both = orjson.loads((tmp_path / "demo-evaluation.json").read_bytes())
    assert both["enforce"]["closed_loop"]["legit_delay_s"] == 20.0
    assert both["shadow"]["closed_loop"] is None
    found = both["enforce"]["containment"]
    assert found["quarantines_opened"] > 0 and found["quarantine_blocked"] > 0  # the mix's bursts
    assert (
        f"quarantines: {found['quarantines_opened']} opened" in result.output
        and f"{found['quarantine_blocked']:,} requests blocked by them" in result.output
    )
    assert f"spend breaker: {len(found['breaker_trips'])} country-hours tripped" in result.output
