"""Challenges followed to their end: the simulated client's answers, the closed loop's timing, and what the
evaluation makes of it (SMS sent, cost leaked, users served, delay added)."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import msgspec
import orjson
import phonenumbers
import pytest

from detector.evaluation.challenges import (
    FOLLOW_SPAN_S,
    LEGIT_DELAY_S,
    ClientModel,
    ClosedLoop,
)
from detector.evaluation.evaluate import Evaluator, RequestMeta, evaluate_file, read_meta
from detector.evaluation.result import Evaluation
from detector.evaluation.sim import price_for, simulate, write_events
from detector.events import (
    Action,
    Decision,
    OtpChallenge,
    OtpFeedback,
    OtpRequest,
    format_timestamp,
    parse_event,
)
from detector.policy import load_policy
from detector.replay import Line, batches, read_lines
from detector.wiring import build_engine

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z
LEGIT = RequestMeta("legit", "people")
BOT = RequestMeta("attack", "burst")
FARM = RequestMeta("attack", "farm", pass_rate=0.9, delay_s=8.0)


# --- the simulated client ---------------------------------------------------------------------------


def answers(model: ClientModel, meta: RequestMeta, n: int = 4000) -> list[tuple[str, float] | None]:
    out: list[tuple[str, float] | None] = []
    for i in range(n):
        answer = model.answer(f"req-{i}", meta)
        out.append(None if answer is None else (answer.result, answer.delay))
    return out


def test_people_pass_at_the_configured_rate_after_a_human_delay() -> None:
    for rate in (0.9, 0.5):
        given = answers(ClientModel(legit_pass_rate=rate), LEGIT)
        passed = [a for a in given if a is not None and a[0] == "passed"]
        assert abs(len(passed) / len(given) - rate) < 0.03
        delays = [delay for _, delay in passed]
        assert 0.8 * LEGIT_DELAY_S < statistics.median(delays) < 1.2 * LEGIT_DELAY_S
        assert max(delays) > 4 * LEGIT_DELAY_S  # a long tail
        not_passed = [a for a in given if a is None or a[0] != "passed"]
        failed = sum(1 for a in not_passed if a is not None)
        assert 0 < failed < len(not_passed)  # some answer wrong, the others abandon (and it expires)
    slow = [a for a in answers(ClientModel(legit_delay_s=60.0), LEGIT) if a is not None]
    assert 48.0 < statistics.median(delay for _, delay in slow) < 72.0


def test_bots_never_pass_and_a_farm_passes_quickly() -> None:
    bots = answers(ClientModel(), BOT)
    assert not any(a is not None and a[0] == "passed" for a in bots)
    assert any(a is not None for a in bots) and any(a is None for a in bots)
    farm = answers(ClientModel(), FARM)
    passed = [delay for a in farm if a is not None and a[0] == "passed" for delay in [a[1]]]
    assert abs(len(passed) / len(farm) - 0.9) < 0.03
    assert 6.0 < statistics.median(passed) < 10.0


def test_answers_are_deterministic_and_need_a_label() -> None:
    assert answers(ClientModel(), LEGIT, 200) == answers(ClientModel(), LEGIT, 200)
    assert answers(ClientModel(seed=1), LEGIT, 200) != answers(ClientModel(seed=2), LEGIT, 200)
    assert ClientModel().answer("real-traffic", RequestMeta(None, None)) is None
    assert ClientModel().answer("real-traffic", None) is None
    with pytest.raises(ValueError):
        ClientModel(legit_pass_rate=1.5)
    with pytest.raises(ValueError):
        ClientModel(legit_delay_s=0.0)


def test_read_meta_takes_the_challenge_behaviour_and_ignores_hostile_values(tmp_path: Path) -> None:
    base = {"type": "otp_request", "ts": "2026-11-02T00:00:00Z", "phone": "+12015550123", "label": "attack"}
    rows = {
        "ok": {"challenge_pass_rate": 0.9, "challenge_delay_s": 8, "session_id": "s-1"},
        "string": {"challenge_pass_rate": "1", "challenge_delay_s": "8"},
        "too_big": {"challenge_pass_rate": 1.5, "challenge_delay_s": 1e9},
        "boolean": {"challenge_pass_rate": True, "challenge_delay_s": -1, "session_id": 7},
    }
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"\n".join(orjson.dumps({**base, "request_id": rid, **fields}) for rid, fields in rows.items())
    )
    meta = read_meta(read_lines(path))
    assert (meta["ok"].pass_rate, meta["ok"].delay_s, meta["ok"].session) == (0.9, 8.0, "s-1")
    for rid in ("string", "too_big", "boolean"):
        assert (meta[rid].pass_rate, meta[rid].delay_s, meta[rid].session) == (None, None, None), rid


# --- the closed loop's timing -------------------------------------------------------------------------


def request_line(number: int, rid: str, ts: float) -> Line:
    event = OtpRequest(request_id=rid, ts=format_timestamp(ts), phone="+12015550123", client_ip="198.18.0.9")
    return Line(number, event, ts)


def decided(rid: str, action: Action, challenge_id: str | None = None, **extra: object) -> Decision:
    fields = {
        "request_id": rid,
        "ts": None,
        "action": action,
        "verdict": action,
        "mode": "enforce",
        "score": 50.0,
        "reasons": (),
        "policy_version": "test-1",
        "challenge_id": challenge_id,
        **extra,
    }
    return msgspec.convert(fields, Decision)


def test_an_answer_joins_the_stream_at_its_own_time() -> None:
    model = ClientModel(legit_pass_rate=1.0)
    loop = ClosedLoop({"l1": LEGIT, "b1": BOT}, model)
    source = [request_line(i + 1, f"r{i}", T0 + 5.0 * i) for i in range(40)]
    first = request_line(100, "l1", T0 - 1.0)
    loop.on_decision(first, decided("l1", "challenge", "ch-1"))
    loop.on_decision(first, decided("l1", "challenge", "ch-1"))  # a redelivery: answered once
    expected = model.answer("l1", LEGIT)
    assert expected is not None and expected.result == "passed"
    stream = list(loop.lines(source))
    [index] = [i for i, line in enumerate(stream) if isinstance(line.event, OtpChallenge)]
    answer = stream[index]
    assert isinstance(answer.event, OtpChallenge)
    assert (answer.event.request_id, answer.event.challenge_id, answer.event.result) == (
        "l1",
        "ch-1",
        "passed",
    )
    assert answer.ts == pytest.approx(first.ts + expected.delay, abs=1e-3)
    assert parse_event(msgspec.json.encode(answer.event)) == answer.event  # a valid event on the wire
    assert stream[index - 1].ts <= answer.ts < stream[index + 1].ts  # in event-time order
    assert len(stream) == len(source) + 1 and loop.scheduled == 1 and not loop.pending


def test_what_is_not_answered() -> None:
    loop = ClosedLoop({"l1": LEGIT, "b1": BOT}, ClientModel(legit_pass_rate=1.0))
    line = request_line(1, "l1", T0)
    loop.on_decision(line, decided("l1", "allow"))
    loop.on_decision(line, decided("l1", "challenge"))  # no challenge id: nothing to answer with
    loop.on_decision(line, decided("l1", "challenge", "ch-1", mode="shadow"))  # nothing enforced
    loop.on_decision(line, decided("l1", "allow", supersedes="challenge"))
    loop.on_decision(request_line(2, "x", T0), decided("x", "challenge", "ch-2"))  # not labelled
    assert loop.scheduled == 0
    never = next(f"b{i}" for i in range(100) if ClientModel().answer(f"b{i}", BOT) is None)
    bots = ClosedLoop({never: BOT})
    bots.on_decision(request_line(3, never, T0), decided(never, "challenge", "ch-3"))
    assert bots.scheduled == 0 and not bots.pending  # abandoned: it expires, nothing is sent


def test_answers_after_the_end_of_the_file_are_drained() -> None:
    loop = ClosedLoop({"l1": LEGIT}, ClientModel(legit_pass_rate=1.0))
    source = [request_line(1, "l1", T0)]
    stream = loop.lines(source)
    assert next(stream) is source[0]
    loop.on_decision(source[0], decided("l1", "challenge", "ch-1"))
    assert list(stream) == [] and loop.pending
    [answer] = list(loop.drain())
    assert isinstance(answer.event, OtpChallenge) and answer.ts > T0 and not loop.pending


def feedback_line(number: int, rid: str, ts: float) -> Line:
    return Line(number, OtpFeedback(request_id=rid, ts=format_timestamp(ts), outcome="verified"), ts)


def test_feedback_waits_for_the_end_of_its_challenge() -> None:
    """Nobody enters a code before it is sent, nor one never sent."""
    model = ClientModel(legit_pass_rate=1.0)
    never = next(f"b{i}" for i in range(100) if model.answer(f"b{i}", BOT) is None)
    loop = ClosedLoop({"p": LEGIT, "a": LEGIT, never: BOT}, model)
    source = [
        request_line(1, "p", T0),
        request_line(2, "a", T0 + 1),
        request_line(3, never, T0 + 2),
        feedback_line(4, "a", T0 + 5),
        feedback_line(5, "p", T0 + 20),
        feedback_line(6, never, T0 + 25),
        request_line(7, "z", T0 + 100),  # unlabelled: real traffic, left alone
    ]
    stream = loop.lines(source)
    first = [next(stream) for _ in range(4)]  # feedback on undecided requests is held back
    assert [line.number for line in first] == [1, 2, 3, 7]
    loop.on_decision(first[0], decided("p", "challenge", "ch-p"))
    loop.on_decision(first[1], decided("a", "allow"))
    loop.on_decision(first[2], decided(never, "challenge", "ch-n"))
    loop.on_decision(first[3], decided("z", "challenge", "ch-z"))
    assert list(stream) == []
    drained = loop.drain()
    feedback_a = next(drained)
    assert feedback_a is source[3]  # not challenged: as written, a batch late
    answer = next(drained)
    assert isinstance(answer.event, OtpChallenge) and answer.event.request_id == "p"
    loop.on_decision(answer, decided("p", "allow", supersedes="challenge"))
    [feedback_p] = list(drained)
    delay = answer.ts - T0
    assert isinstance(feedback_p.event, OtpFeedback) and feedback_p.event.request_id == "p"
    assert feedback_p.ts == pytest.approx(T0 + 20 + delay, abs=1e-3)  # the code came that much later
    assert parse_event(msgspec.json.encode(feedback_p.event)) == feedback_p.event
    assert (loop.feedback_delayed, loop.dropped, loop.scheduled) == (1, 1, 1)  # the bot's: dropped


def test_batches_span_at_most_the_follow_span() -> None:
    lines = [request_line(i, f"r{i}", T0 + 7.0 * i) for i in range(50)]
    chunks = list(batches(lines, 1000, FOLLOW_SPAN_S))
    assert [line for chunk in chunks for line in chunk] == lines
    assert all(chunk[-1].ts - chunk[0].ts <= FOLLOW_SPAN_S for chunk in chunks)
    assert [len(chunk) for chunk in batches(lines, 8, None)] == [8] * 6 + [2]
    assert [len(chunk) for chunk in batches(lines, 3, FOLLOW_SPAN_S)][:2] == [3, 3]


# --- the evaluation's numbers, on hand-made decisions -------------------------------------------------

# (request_id, label, session, country, first action, then: (seconds later, superseding action) or None)
ROWS: list[tuple[str, str, str, str, Action, tuple[float, Action] | None]] = [
    ("l1", "legit", "s1", "US", "allow", None),
    ("l2", "legit", "s2", "GB", "challenge", (20.0, "allow")),  # passed: got the code 20 s later
    ("l3", "legit", "s3", "GB", "challenge", (35.0, "block")),  # failed
    ("l4", "legit", "s4", "US", "challenge", None),  # never answered
    ("l5", "legit", "s5", "US", "block", None),
    ("l6", "legit", "s5", "US", "allow", None),  # the same person's next request: served
    ("a1", "attack", "x1", "IQ", "allow", None),
    ("a2", "attack", "x2", "IQ", "challenge", (8.0, "allow")),  # a farm's pass: leaked
    ("a3", "attack", "x3", "IQ", "challenge", (4.0, "block")),
    ("a4", "attack", "x4", "IQ", "block", None),
]


def evaluate_rows(mode: str = "enforce") -> Evaluation:
    meta = {
        rid: RequestMeta(label, "people" if label == "legit" else "farm", session)
        for rid, label, session, *_ in ROWS
    }
    evaluator = Evaluator(meta)
    later: list[tuple[float, Decision]] = []
    for index, (rid, _label, _session, country, action, then) in enumerate(ROWS):
        ts = T0 + 100.0 * index
        first = decided(rid, action, "ch-" + rid if action == "challenge" else None, phone_country=country)
        if mode == "shadow":
            first = msgspec.structs.replace(first, action="allow", mode="shadow")
        evaluator.add(first, ts)
        if then is not None:
            delay, outcome = then
            later.append((ts + delay, decided(rid, outcome, phone_country=country, supersedes="challenge")))
    for ts, decision in sorted(later, key=lambda item: item[0]):
        evaluator.add(decision, ts)
    evaluator.add(decided("ghost", "allow", supersedes="challenge"), T0 + 5000)  # no such challenge
    evaluator.add(later[0][1], T0 + 6000)  # a second end for l2: ignored
    return evaluator.report()


def test_follow_through_for_people() -> None:
    legit = evaluate_rows().labels["legit"]
    assert (legit.requests, legit.allowed, legit.challenged, legit.blocked) == (6, 2, 3, 1)
    assert legit.stopped_pct == pytest.approx(100 * 4 / 6, abs=1e-3)  # "stopped" as before
    done = legit.follow_through
    assert done is not None
    assert (done.challenged, done.challenges_sent, done.challenges_blocked, done.challenges_unanswered) == (
        3,
        1,
        1,
        1,
    )
    assert (done.sms_sent, done.users, done.users_served) == (3, 5, 3)  # l1, l2, l6; s1, s2, s5
    assert done.sms_sent_pct == 50.0 and done.users_served_pct == 60.0
    assert done.challenge_delay_median_s == 20.0 and done.challenge_delay_p90_s == 20.0
    assert done.delay_median_s == 0.0 and done.delay_mean_s == pytest.approx(20.0 / 3, abs=1e-3)
    assert done.cost_sent == pytest.approx(3 * price_for("US") + price_for("GB") - price_for("US"))


def test_follow_through_for_an_attack() -> None:
    report = evaluate_rows()
    farm = report.scenarios["farm"]
    assert farm.stopped_pct == 75.0 and farm.cost_let_through == pytest.approx(price_for("IQ"))
    done = farm.follow_through
    assert done is not None
    assert (done.sms_sent, done.challenges_sent, done.challenges_blocked) == (2, 1, 1)  # a1 at once, a2
    assert done.cost_sent == pytest.approx(2 * price_for("IQ"))  # the cost leaked
    assert done.cost_sent_pct == 50.0
    assert done.challenge_delay_median_s == 8.0
    overall = report.overall.follow_through
    assert overall is not None and overall.sms_sent == 5 and overall.challenges_unanswered == 1


def test_no_follow_through_in_shadow_mode() -> None:
    report = evaluate_rows("shadow")
    assert report.overall.follow_through is None
    assert all(row.follow_through is None for row in report.scenarios.values())
    assert report.labels["legit"].challenged == 3  # by verdict, as before


def test_the_json_round_trips_with_the_follow_through() -> None:
    report = evaluate_rows()
    assert msgspec.json.decode(report.to_json(), type=Evaluation) == report


# --- end to end, through the real engine --------------------------------------------------------------

# A number outside the core countries asked from an address in another country: the default policy
# challenges it (ip_country_mismatch + non_core_destination).
CHALLENGED = {
    "phone": "+9647856880718",
    "client_ip": "198.18.5.10",
    "ip_country": "US",
    "flow": "signup",
    "signals": {"anonymizer": True},  # 20 points, and 20 for US → IQ: a challenge with no history at all
}


def write_challenged(path: Path, rows: list[tuple[str, str, dict[str, object]]]) -> None:
    lines = [
        orjson.dumps(
            {
                "type": "otp_request",
                "request_id": rid,
                "ts": format_timestamp(T0 + 60.0 * index),
                **CHALLENGED,
                "session_id": "session-" + rid,
                "label": label,
                "scenario": label + "-people",
                **extra,
            }
        )
        for index, (rid, label, extra) in enumerate(rows)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_the_default_policy_challenges_the_probe_request() -> None:
    """The end-to-end tests below rest on this request being challenged."""

    async def first() -> Decision:
        async with build_engine(load_policy(None), "memory://") as engine:
            probe = msgspec.convert({"request_id": "p", "ts": T0, **CHALLENGED}, OtpRequest)
            [decision] = await engine.process([probe])
            assert isinstance(decision, Decision)
            return decision

    assert asyncio.run(first()).action == "challenge"


def test_a_passed_challenge_ends_in_a_sent_code_and_a_bot_in_nothing(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_challenged(
        events,
        [
            ("person", "legit", {"challenge_pass_rate": 1.0, "challenge_delay_s": 20.0}),
            ("bot", "attack", {}),
            ("farm", "attack", {"challenge_pass_rate": 1.0, "challenge_delay_s": 8.0}),
        ],
    )
    seen: list[Decision] = []
    report = evaluate_file(events, on_decision=seen.append)
    meta = read_meta(read_lines(events))
    person = ClientModel().answer("person", meta["person"])
    assert person is not None and person.result == "passed"
    [superseding] = [d for d in seen if d.request_id == "person" and d.supersedes is not None]
    assert superseding.supersedes == "challenge" and superseding.action == "allow"
    legit = report.labels["legit"].follow_through
    assert legit is not None and (legit.sms_sent, legit.users_served) == (1, 1)
    assert legit.challenge_delay_median_s == pytest.approx(person.delay, abs=1e-3)
    bot = report.scenarios["attack-people"].follow_through
    assert bot is not None and bot.sms_sent == 1 and bot.challenges_sent == 1  # the farm's, not the bot's
    assert not [d for d in seen if d.request_id == "bot" and d.action == "allow"]
    assert bot.cost_sent == pytest.approx(price_for("IQ"))
    assert report.closed_loop is not None and report.closed_loop.answers >= 2
    assert report.requests == 3 and report.events == 3 + report.closed_loop.answers  # ends are no requests
    assert report.closed_loop.not_acted_on == {}


def test_a_failed_challenge_sends_nothing(tmp_path: Path) -> None:
    model = ClientModel()
    failing = next(
        f"bot-{i}"
        for i in range(1000)
        if (a := model.answer(f"bot-{i}", RequestMeta("attack", "x"))) is not None and a.result == "failed"
    )
    events = tmp_path / "events.jsonl"
    write_challenged(events, [(failing, "attack", {})])
    seen: list[Decision] = []
    report = evaluate_file(events, on_decision=seen.append)
    [superseding] = [d for d in seen if d.supersedes is not None]
    assert superseding.action == "block"
    done = report.overall.follow_through
    assert done is not None and done.sms_sent == 0 and done.challenges_blocked == 1


# --- the generated farm, and determinism ---------------------------------------------------------------


def test_captcha_farm_numbers_addresses_and_answers() -> None:
    requests = [e for e in simulate("captcha_farm", seed=13) if e["type"] == "otp_request"]
    assert 120 < len(requests) < 300
    prefixes = set()
    for request in requests:
        number = phonenumbers.parse(request["phone"], None)
        assert phonenumbers.is_valid_number_for_region(number, "IQ"), request["phone"]
        assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE
        prefixes.add(request["phone"][:-3])
        assert request["ip_country"] == "US" and request["client_ip"].startswith("198.1")
        assert (request["challenge_pass_rate"], request["challenge_delay_s"]) == (0.9, 8.0)
        assert request["label"] == "attack" and request["scenario"] == "captcha_farm"
    assert len(prefixes) <= 4
    assert price_for("IQ") >= 0.2  # an expensive destination


def test_the_farm_draws_challenges_until_its_destination_collapses(tmp_path: Path) -> None:
    """Before any challenge is followed (so before passes are counted), the farm's pace draws challenges, not
    blocks; what blocks it is its destination's collapsing conversion (and, followed, its passes)."""
    events = tmp_path / "farm.jsonl"
    write_events(simulate("diurnal,captcha_farm", duration=12 * 3600, seed=13), events)
    blind = load_policy(None)
    blind = msgspec.structs.replace(
        blind, rules=msgspec.structs.replace(
            blind.rules, segments=msgspec.structs.replace(blind.rules.segments, foreign_boost=1.0)
        ),
    )  # fmt: skip
    farm = evaluate_file(events, blind, follow=False).scenarios["captcha_farm"]
    assert farm.challenged_pct >= 95.0 and farm.blocked_pct <= 5.0, farm
    seen = evaluate_file(events, follow=False).scenarios["captcha_farm"]
    assert seen.blocked_pct > 50.0, seen


def test_the_same_seed_gives_a_byte_identical_evaluation(tmp_path: Path) -> None:
    events = tmp_path / "mix.jsonl"
    write_events(simulate("mix", duration=3 * 3600, seed=21), events)
    first = evaluate_file(events).to_json()
    second = evaluate_file(events).to_json()
    assert first == second
    assert evaluate_file(events, client=ClientModel(seed=99)).to_json() != first  # answers drawn afresh


def test_replay_counts_challenge_results_apart_from_requests() -> None:
    from detector.replay import replay

    async def run() -> dict[str, object]:
        async with build_engine(load_policy(None), "memory://") as engine:
            seen: list[Decision] = []
            request = msgspec.convert({"request_id": "r1", "ts": T0, **CHALLENGED}, OtpRequest)
            [first] = await engine.process([request])
            assert isinstance(first, Decision) and first.challenge_id
            lines = [
                Line(1, OtpChallenge("r1", first.challenge_id, T0 + 9, result="passed"), T0 + 9),
                Line(2, OtpChallenge("r1", first.challenge_id, T0 + 12, result="passed"), T0 + 12),
                Line(3, OtpChallenge("nobody", "ch-x", T0 + 13, result="failed"), T0 + 13),
            ]
            summary = await replay(engine, lines, on_decision=lambda _line, d: seen.append(d))
            assert [d.supersedes for d in seen] == ["challenge"]
            return summary.as_dict("p", "enforce")

    summary = asyncio.run(run())
    assert summary["requests"] == 0 and summary["feedback"] == 0
    assert summary["challenges"] == 3 and summary["superseding"] == 1
    statuses = summary["challenge_status"]
    assert isinstance(statuses, dict) and statuses["duplicate"] == 1 and sum(statuses.values()) == 2
