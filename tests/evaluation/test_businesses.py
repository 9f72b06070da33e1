"""The business profiles of `detector simulate --business`: their own home countries, volumes and daily
curves, every scenario of the issue in each, valid numbers, and the same file for the same seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import phonenumbers
import pytest
from click.testing import CliRunner

from detector.cli.sim import simulate as simulate_command
from detector.evaluation.sim import BUSINESSES, DEFAULT_START, SCENARIOS, simulate, write_events
from detector.evaluation.sim.generate import NUMBER_TYPES, is_valid_mobile
from detector.events import parse_timestamp
from detector.signals.phone import canonical_digits

# The scenarios issue 12 names, and the simulator's name for each.
ISSUE_SCENARIOS = {
    "baseline": "diurnal",
    "CGNAT": "cgnat",
    "office": "office",
    "travellers": "travellers",
    "anonymizer-flagged VPN users who verify normally": "vpn_users",
    "a marketing spike": "marketing_spike",
    "a launch in a new country": "new_country_launch",
    "fixed-IP burst": "fixed_ip_burst",
    "rotating proxies on a few blocks": "rotating_proxies",
    "low-and-slow": "low_and_slow",
    "bombing of one number": "victim_bombing",
    "a block inside a home country": "core_country_block",
    "partial upstream signals": "partial_signals",
    "premium numbers": "premium_numbers",
    "invalid numbers": "invalid_numbers",
    "captcha_farm": "captcha_farm",
}
LEGIT_ISSUE_SCENARIOS = {"diurnal", "cgnat", "office", "travellers", "vpn_users", "marketing_spike"}


@pytest.fixture(scope="module")
def days() -> dict[str, list[dict[str, Any]]]:
    """A whole day of each profile (a few seconds each)."""
    return {name: simulate(business=name, seed=31) for name in BUSINESSES}


def requests_of(events: list[dict[str, Any]], scenario: str | None = None) -> list[dict[str, Any]]:
    return [
        e for e in events if e["type"] == "otp_request" and (scenario is None or e["scenario"] == scenario)
    ]


def parsed(request: dict[str, Any]) -> phonenumbers.PhoneNumber:
    digits = canonical_digits(request["phone"])
    assert digits is not None, request["phone"]
    return phonenumbers.parse(digits, request.get("phone_country"))


def test_at_least_three_profiles_with_different_homes_curves_and_volumes() -> None:
    assert len(BUSINESSES) >= 3
    markets = [profile.market for profile in BUSINESSES.values()]
    assert len({market.homes for market in markets}) == len(markets)
    assert len({market.curve for market in markets}) >= 2
    volumes = [sum(entry.daily for entry in market.audience) for market in markets]
    assert len(set(volumes)) == len(volumes)
    for name, profile in BUSINESSES.items():
        assert profile.description.endswith("."), name


@pytest.mark.parametrize("name", list(BUSINESSES))
def test_every_scenario_of_the_issue_is_in_every_profile(
    name: str, days: dict[str, list[dict[str, Any]]]
) -> None:
    seen = Counter(request["scenario"] for request in requests_of(days[name]))
    for issue_name, scenario in ISSUE_SCENARIOS.items():
        assert seen[scenario] > 0, f"{name}: no {issue_name} ({scenario})"
    assert set(seen) == set(SCENARIOS)
    for request in requests_of(days[name]):
        assert SCENARIOS[request["scenario"]].label == request["label"]
    assert all(SCENARIOS[s].label == "legit" for s in LEGIT_ISSUE_SCENARIOS)


@pytest.mark.parametrize("name", list(BUSINESSES))
def test_people_are_mostly_from_the_home_countries_with_valid_numbers_there(
    name: str, days: dict[str, list[dict[str, Any]]]
) -> None:
    market = BUSINESSES[name].market
    baseline = requests_of(days[name], "diurnal")
    regions = Counter(phonenumbers.region_code_for_number(parsed(r)) for r in baseline)
    home = sum(regions[code] for code in market.homes)
    assert home >= 0.85 * len(baseline), regions
    assert all(regions[code] > 0 for code in market.homes), regions
    for request in requests_of(days[name]):
        if request["scenario"] == "invalid_numbers":
            continue
        number = parsed(request)
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        region = phonenumbers.region_code_for_number(number)
        kind = "premium_rate" if request["scenario"] == "premium_numbers" else "mobile"
        assert is_valid_mobile(e164, region, NUMBER_TYPES[kind]), (request["scenario"], e164)


@pytest.mark.parametrize("name", list(BUSINESSES))
def test_the_attacks_aim_at_the_profile(name: str, days: dict[str, list[dict[str, Any]]]) -> None:
    market = BUSINESSES[name].market
    events = days[name]
    block = {
        phonenumbers.region_code_for_number(parsed(r)) for r in requests_of(events, "core_country_block")
    }
    assert block == {market.home_block} and market.home_block in market.homes
    bombed = {(n.country_code, n.national_number) for n in map(parsed, requests_of(events, "victim_bombing"))}
    [(code, _)] = bombed
    assert phonenumbers.region_code_for_country_code(code) == market.victim
    farm = requests_of(events, "captcha_farm")
    assert {r["ip_country"] for r in farm} == {market.farm_exits}
    slow = {phonenumbers.region_code_for_number(parsed(r)) for r in requests_of(events, "low_and_slow")}
    assert len(slow) >= 12 and not slow & set(market.homes)
    for request in requests_of(events, "invalid_numbers"):
        number = phonenumbers.parse(request["phone"], None)
        assert not phonenumbers.is_valid_number(number)
        assert phonenumbers.region_code_for_country_code(number.country_code) in market.homes
    assert len(requests_of(events, "premium_numbers")) > 100
    pumped = {
        scenario: {phonenumbers.region_code_for_number(parsed(r)) for r in requests_of(events, scenario)}
        for scenario in ("fixed_ip_burst", "rotating_proxies", "partial_signals")
    }
    assert pumped == {
        "fixed_ip_burst": set(market.pumped.burst),
        "rotating_proxies": {market.pumped.rotating},
        "partial_signals": {market.pumped.partial},
    }


def test_the_profiles_pump_different_countries() -> None:
    pumped = [profile.market.pumped for profile in BUSINESSES.values()]
    assert len({(p.rotating, p.partial) for p in pumped}) == len(pumped)


def _busiest_local_hour(requests: list[dict[str, Any]], utc_offset: float) -> int:
    hours = Counter(int((parse_timestamp(r["ts"]) / 3600 + utc_offset) % 24) for r in requests)
    return hours.most_common(1)[0][0]


def test_each_profile_has_its_own_day(days: dict[str, list[dict[str, Any]]]) -> None:
    gulf = [r for r in requests_of(days["gulf"], "diurnal") if r["phone"].startswith(("+966", "+971"))]
    assert _busiest_local_hour(gulf, 3.0) >= 19  # late evening in Riyadh
    # North America: the east coast's evening peak, and the west coast's three hours later
    north_america = requests_of(days["north_america"], "diurnal")
    by_hour = Counter(int((parse_timestamp(r["ts"]) - DEFAULT_START) // 3600) % 24 for r in north_america)
    east, west = by_hour[(19 + 5) % 24], by_hour[(19 + 8) % 24]  # 19:00 local, in UTC hours
    quiet = by_hour[4 + 5]  # 04:00 on the east coast, 01:00 on the west
    assert east > 2 * quiet and west > 2 * quiet
    volumes = {name: len(requests_of(events)) for name, events in days.items()}
    assert volumes["south_east_asia"] == max(volumes.values())


def test_gulf_numbers_are_sometimes_spelled_in_arabic_indic_digits(
    days: dict[str, list[dict[str, Any]]],
) -> None:
    arabic = [r for r in requests_of(days["gulf"], "diurnal") if "٩" in r["phone"] or "٥" in r["phone"]]
    assert len(arabic) > 100
    assert not any("٩" in r["phone"] for r in requests_of(days["north_america"]))


def test_carrier_nat_and_offices_put_many_people_behind_one_address(
    days: dict[str, list[dict[str, Any]]],
) -> None:
    for name, events in days.items():
        cgnat = Counter(r["client_ip"] for r in requests_of(events, "cgnat"))
        assert len(cgnat) == len(BUSINESSES[name].market.cgnat)
        assert min(cgnat.values()) >= 100, (name, cgnat)
        offices = Counter(r["remote_addr"] for r in requests_of(events, "office"))
        assert len(offices) >= 10 and max(offices.values()) >= 20, name
        vpn = requests_of(events, "vpn_users")
        assert vpn and all(r["signals"]["anonymizer"] for r in vpn)
        assert {r.get("ip_country") for r in vpn} <= {"NL", "US", None}  # an edge may not say
    asia, gulf = (len(requests_of(days[n], "cgnat")) for n in ("south_east_asia", "gulf"))
    assert asia > 2 * gulf


def test_the_same_seed_gives_the_same_file_and_another_seed_another(tmp_path: Path) -> None:
    files = [tmp_path / f"{i}.jsonl" for i in range(3)]
    for path, seed in zip(files, (5, 5, 6), strict=True):
        write_events(simulate(business="gulf", seed=seed, duration=3 * 3600), path)
    assert files[0].read_bytes() == files[1].read_bytes()
    assert files[0].read_bytes() != files[2].read_bytes()


def test_simulate_command_with_a_business(tmp_path: Path) -> None:
    out = tmp_path / "gulf.jsonl"
    runner = CliRunner()
    args = ["--business", "gulf", "--duration", "2h", "--seed", "3", "--out", str(out)]
    result = runner.invoke(simulate_command, args)
    assert result.exit_code == 0, result.output
    scenarios = {orjson.loads(line).get("scenario") for line in out.read_bytes().splitlines()}
    assert scenarios >= set(SCENARIOS)
    bad = runner.invoke(simulate_command, ["--business", "atlantis", "--out", str(out)])
    assert bad.exit_code != 0 and "unknown business 'atlantis'" in bad.output
    listing = runner.invoke(simulate_command, ["--list"])
    assert all(name in listing.output for name in BUSINESSES)
