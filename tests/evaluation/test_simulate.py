"""The traffic simulator: deterministic, valid numbers, labels on every request, feedback that makes sense."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import phonenumbers
import pytest
from click.testing import CliRunner
from phonenumbers import PhoneNumberType

from detector.cli.sim import simulate as simulate_command
from detector.evaluation.sim import DAY, DEFAULT_START, SCENARIOS, price_for, resolve, simulate, write_events
from detector.evaluation.sim.generate import CORE_MARKETS, COUNTRIES, NumberBook, is_valid_mobile, sub_rng
from detector.evaluation.sim.prices import price_table
from detector.events import BadEvent, OtpFeedback, OtpRequest, parse_event, parse_timestamp

MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


@pytest.fixture(scope="module")
def day() -> list[dict[str, Any]]:
    """A whole mixed day (a few seconds to make), shared by the tests that need realistic volumes."""
    return simulate("mix", seed=101)


@pytest.fixture(scope="module")
def short_mix() -> list[dict[str, Any]]:
    return simulate("mix", duration=2 * 3600, seed=5)


def requests_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "otp_request"]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_events(simulate("mix", duration=3 * 3600, seed=42), first)
    write_events(simulate("mix", duration=3 * 3600, seed=42), second)
    write_events(simulate("mix", duration=3 * 3600, seed=43), other)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_a_scenario_does_not_depend_on_the_others_chosen() -> None:
    alone = [e for e in simulate("fixed_ip_burst", duration=6 * 3600, seed=9)]
    mixed = [
        e
        for e in simulate("diurnal,fixed_ip_burst", duration=6 * 3600, seed=9)
        if e.get("scenario") == "fixed_ip_burst"
    ]
    assert [e["phone"] for e in alone if e["type"] == "otp_request"] == [e["phone"] for e in mixed]


def test_every_number_is_valid_for_its_country_and_type(short_mix: list[dict[str, Any]]) -> None:
    regions: Counter[str] = Counter()
    for request in requests_of(short_mix):
        number = phonenumbers.parse(request["phone"], request.get("phone_country"))
        assert phonenumbers.is_valid_number(number), request["phone"]
        assert phonenumbers.number_type(number) in MOBILE_TYPES, request["phone"]
        region = phonenumbers.region_code_for_number(number)
        assert region is not None
        if "phone_country" in request:
            assert region == request["phone_country"]
        regions[region] += 1
    assert len(regions) > 20


def test_numbers_of_each_country_are_valid_there() -> None:
    book = NumberBook(3)
    rng = sub_rng(3, "test")
    for region in COUNTRIES:
        for _ in range(20):
            e164 = book.random_mobile(rng, region)
            number = phonenumbers.parse(e164, None)
            assert phonenumbers.is_valid_number_for_region(number, region), (region, e164)
            assert phonenumbers.number_type(number) in MOBILE_TYPES
        assert len({stem[:5] for stem in book.stems(region)}) >= 1
    assert not is_valid_mobile("+15550000000", "US")  # 555 is not a valid NANP area code


def test_labels_and_scenarios_on_every_request(short_mix: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for request in requests_of(short_mix):
        assert request["label"] in ("legit", "attack")
        assert request["scenario"] in SCENARIOS
        assert SCENARIOS[request["scenario"]].label == request["label"]
        seen.add(request["scenario"])
    assert seen == set(resolve("mix"))


def test_feedback_only_for_requested_ids_and_after_the_request(short_mix: list[dict[str, Any]]) -> None:
    requested: dict[str, float] = {}
    for event in short_mix:
        ts = parse_timestamp(event["ts"])
        if event["type"] == "otp_request":
            assert event["request_id"] not in requested
            requested[event["request_id"]] = ts
        else:
            assert event["type"] == "otp_feedback"
            assert event["request_id"] in requested, (
                "feedback for an id never requested (or before its request)"
            )
            assert ts > requested[event["request_id"]]
            assert event["outcome"] in ("verified", "failed", "completed_other")


def test_events_are_in_event_time_order_and_the_engine_reads_them_all(
    short_mix: list[dict[str, Any]],
) -> None:
    times = [parse_timestamp(e["ts"]) for e in short_mix]
    assert times == sorted(times)
    kinds: Counter[str] = Counter()
    for event in short_mix:
        parsed = parse_event(orjson.dumps(event))
        assert not isinstance(parsed, BadEvent), parsed
        kinds[type(parsed).__name__] += 1
        if isinstance(parsed, OtpRequest):
            assert parsed.client_ip is not None or parsed.remote_addr is not None
    assert kinds[OtpRequest.__name__] and kinds[OtpFeedback.__name__]


def test_legitimate_people_behave_like_people(day: list[dict[str, Any]]) -> None:
    requests = {e["request_id"]: e for e in requests_of(day)}
    resolved: dict[str, float] = {}
    for event in day:
        if event["type"] == "otp_feedback" and event["outcome"] != "failed":
            resolved.setdefault(event["request_id"], parse_timestamp(event["ts"]))
    sessions: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in requests.values():
        if request["label"] == "legit":
            sessions[request["session_id"]].append(request)

    never = sum(1 for s in sessions.values() if not any(r["request_id"] in resolved for r in s))
    assert 0.10 <= never / len(sessions) <= 0.25

    delays = [
        resolved[rid] - parse_timestamp(r["ts"])
        for rid, r in requests.items()
        if r["label"] == "legit" and rid in resolved
    ]
    assert 12 <= statistics.median(delays) <= 30
    assert max(delays) > 300  # a long tail

    gaps = []
    for session in sessions.values():
        times = sorted(parse_timestamp(r["ts"]) for r in session)
        gaps += [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= 30  # the resend timer
    assert sum(1 for s in sessions.values() if len(s) > 1) > 0.03 * len(sessions)


def test_attacks_almost_never_verify(day: list[dict[str, Any]]) -> None:
    attack_ids = {e["request_id"] for e in requests_of(day) if e["label"] == "attack"}
    verified = {
        e["request_id"]
        for e in day
        if e["type"] == "otp_feedback" and e["outcome"] == "verified" and e["request_id"] in attack_ids
    }
    assert len(verified) < 0.01 * len(attack_ids)


def test_the_mix_is_mostly_legitimate_and_demo_sized(day: list[dict[str, Any]]) -> None:
    assert 50_000 <= len(day) <= 100_000
    labels = Counter(e["label"] for e in requests_of(day))
    assert labels["legit"] > 0.8 * (labels["legit"] + labels["attack"])
    per_scenario = Counter(e["scenario"] for e in requests_of(day))
    assert set(per_scenario) == set(resolve("mix"))
    assert per_scenario["diurnal"] == max(per_scenario.values())


def test_a_realistic_mix_of_client_fields(day: list[dict[str, Any]]) -> None:
    requests = requests_of(day)
    fields = Counter(key for r in requests for key in r)
    total = len(requests)
    assert fields["client_ip"] > 0.7 * total
    assert 0 < fields["remote_addr"] < 0.3 * total
    assert 0 < fields["forwarded_for"] < fields["remote_addr"]
    assert 0 < fields["account_id"] < total
    for key in ("ip_country", "session_id", "device_id", "flow", "user_agent", "message"):
        assert fields[key] > 0.5 * total, key
    assert all({"text", "source"} <= set(r["message"]) for r in requests)
    legit_countries = Counter(
        r["ip_country"] for r in requests if r["scenario"] == "diurnal" and "ip_country" in r
    )
    assert {c for c, _ in legit_countries.most_common(8)} <= set(CORE_MARKETS)


def test_travellers_are_abroad_and_burst_numbers_are_sequential(day: list[dict[str, Any]]) -> None:
    travellers = [r for r in requests_of(day) if r["scenario"] == "travellers" and "ip_country" in r]
    for request in travellers:
        region = phonenumbers.region_code_for_number(
            phonenumbers.parse(request["phone"], request.get("phone_country"))
        )
        assert region != request["ip_country"]
    burst = [r["phone"] for r in requests_of(day) if r["scenario"] == "fixed_ip_burst"]
    steps = Counter(int(b[1:]) - int(a[1:]) for a, b in itertools.pairwise(burst))
    assert steps[1] > 0.8 * len(burst)


def test_every_request_has_a_price() -> None:
    table = price_table()
    assert "DEFAULT" in table
    for price in table.values():
        assert price.usd_per_sms > 0
        assert price.basis.startswith("assumption")
    assert price_for("UZ") > price_for("US")
    assert price_for("ZZ") == price_for(None) == table["DEFAULT"].usd_per_sms


def test_scenarios_are_documented_and_resolvable() -> None:
    assert set(SCENARIOS) >= {
        "diurnal",
        "cgnat",
        "travellers",
        "marketing_spike",
        "new_country_launch",
        "fixed_ip_burst",
        "rotating_proxies",
        "low_and_slow",
        "victim_bombing",
        "core_country_block",
        "partial_signals",
        "captcha_farm",
    }
    for name, scenario in SCENARIOS.items():
        assert scenario.description.endswith(".") and scenario.description.count(". ") == 0, name
        assert callable(scenario.generate) and scenario.label in ("legit", "attack")
    assert resolve("all") == list(SCENARIOS)
    assert resolve("mix") == [name for name in SCENARIOS if name in resolve("mix")]
    assert set(SCENARIOS) - set(resolve("mix")) == {
        "office",
        "vpn_users",
        "premium_numbers",
        "invalid_numbers",
    }
    assert resolve("cgnat, fixed_ip_burst") == ["cgnat", "fixed_ip_burst"]
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        resolve("nope")


def test_simulate_command(tmp_path: Path) -> None:
    out = tmp_path / "burst.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        simulate_command,
        ["--scenario", "fixed_ip_burst,diurnal", "--duration", "1h", "--seed", "3", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert lines and {orjson.loads(line).get("scenario") for line in lines} >= {"fixed_ip_burst", "diurnal"}
    listing = runner.invoke(simulate_command, ["--list"])
    assert listing.exit_code == 0 and "low_and_slow" in listing.output
    bad = runner.invoke(simulate_command, ["--scenario", "nope", "--out", str(out)])
    assert bad.exit_code != 0 and "unknown scenario" in bad.output
    assert runner.invoke(simulate_command, ["--duration", "soon", "--out", str(out)]).exit_code != 0


def test_duration_bounds_the_requests() -> None:
    events = simulate("mix", duration=1800, seed=8)
    times = [parse_timestamp(e["ts"]) for e in requests_of(events)]
    assert min(times) >= DEFAULT_START and max(times) < DEFAULT_START + 1800
    assert DAY == 86_400
