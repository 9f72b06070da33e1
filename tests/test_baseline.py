"""What is normal, learned from verified traffic: home countries, segments, known-good numbers."""

from __future__ import annotations

from typing import Any

from tests.factories import T0, codes, decisions, feedback, policy, request

RULES_QUIET = {
    "retry_delay": {"mode": "off"},
    "velocity": {},
    "unverified": {},
    "conversion": {},
    "passes": {},
}


def verified_history(count: int, phone_prefix: str = "+4474001", start: float = T0) -> list[dict[str, Any]]:
    """`count` real users to one country, each verifying their code."""
    events: list[dict[str, Any]] = []
    for i in range(count):
        sent = request(
            ts=start + i * 60, phone=f"{phone_prefix}{i:05d}", client_ip=f"203.0.{i // 250}.{i % 250}"
        )
        events += [sent, feedback(sent["request_id"], start + i * 60 + 20)]
    return events


def test_no_history_no_foreign_country() -> None:
    """A new deployment does not challenge its own users: nothing is foreign before there is history."""
    [decision] = decisions([request(phone="+2250101234567")], policy(rules=RULES_QUIET))
    assert not {"non_home_destination", "non_core_destination"} & codes(decision)


def test_home_countries_are_learned_from_verified_otps() -> None:
    history = verified_history(250)
    later = T0 + 250 * 60 + 100
    ivorian = request(ts=later, phone="+2250101234567")
    british = request(ts=later + 1, phone="+447400999999")
    results = decisions([*history, ivorian, british], policy(rules=RULES_QUIET))
    foreign, home = results[-2], results[-1]
    [reason] = [r for r in foreign.reasons if r.code == "non_home_destination"]
    assert (reason.value, reason.threshold) == (0.0, 0.02)
    assert "non_home_destination" not in codes(home)


def test_a_configured_list_names_home_countries_outright() -> None:
    [decision] = decisions(
        [request(phone="+2250101234567")], policy(phone={"core_countries": ["GB"]}, rules=RULES_QUIET)
    )
    assert "non_core_destination" in codes(decision)


def _vpn_users(
    count: int, start: float, verify: bool, country_phone: str, ip_country: str
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(count):
        sent = request(
            ts=start + i * 30,
            phone=f"{country_phone}{i:05d}",
            client_ip=f"198.51.{i // 250}.{i % 250}",
            ip_country=ip_country,
            signals={"anonymizer": True},
        )
        events.append(sent)
        if verify:
            events.append(feedback(sent["request_id"], start + i * 30 + 20))
    return events


def test_a_vpn_population_that_verifies_is_not_challenged_but_a_farm_behind_the_flag_is() -> None:
    pol = policy(rules=RULES_QUIET)
    history = verified_history(300)
    start = T0 + 300 * 60
    honest_vpn = _vpn_users(40, start, verify=True, country_phone="+4474002", ip_country="NL")
    farm = _vpn_users(40, start, verify=False, country_phone="+2250102", ip_country="NL")
    later = start + 40 * 30 + 1200  # past the pending window: the segments' rates are settled
    traveller = request(ts=later, phone="+447400399999", client_ip="198.51.9.9", ip_country="NL",
                        signals={"anonymizer": True})  # fmt: skip
    pumped = request(ts=later + 1, phone="+225010299999", client_ip="198.51.9.8", ip_country="NL",
                     signals={"anonymizer": True})  # fmt: skip
    results = decisions([*history, *honest_vpn, *farm, traveller, pumped], pol)
    user, bot = results[-2], results[-1]
    assert {"segment_verifies", "route_verifies"} <= codes(user)
    assert user.action == "allow", user
    assert "segment_conversion_collapse" in codes(bot)
    assert bot.action in ("challenge", "block") and bot.score > 40


def test_a_known_good_number_travelling_behind_a_vpn_is_not_challenged() -> None:
    pol = policy(rules=RULES_QUIET)
    home = request(ts=T0, phone="+447400123456")
    abroad = request(ts=T0 + 3 * 86400, phone="+447400123456", client_ip="198.51.100.20", ip_country="TH",
                     signals={"anonymizer": True})  # fmt: skip
    stranger = dict(abroad, request_id="stranger", phone="+447400654321")
    results = decisions([home, feedback(home["request_id"], T0 + 15), abroad, stranger], pol)
    assert "known_good_number" in codes(results[1]) and results[1].action == "allow", results[1]
    assert results[2].action == "challenge", results[2]  # the same trip without a verified history
