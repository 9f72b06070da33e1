"""Rules judged against what this business's verified traffic says is normal, on both stores (`make_engine`
runs each test on memory and on a real redis-server): a client country outside the market asking for a
foreign destination, and a number block against its own normal rate."""

from __future__ import annotations

from typing import Any

from detector.events import Decision
from detector.policy import Policy
from tests.conftest import EngineFactory
from tests.factories import T0, codes, feedback, policy, quiet_policy, request
from tests.test_quarantine import decide

GEOGRAPHY = {
    "ip_country_mismatch": {"mode": "enforce"},
    "non_core_destination": {"mode": "enforce"},
    "third_country_client": {"mode": "enforce"},
    "quarantine": {"mode": "off"},
}
AFTER = T0 + 300 * 60  # past the history below and its pending window


def geography() -> Policy:
    return quiet_policy(rules=GEOGRAPHY)


def british_users(count: int = 250) -> list[dict[str, Any]]:
    """`count` users in Britain verifying codes to British numbers: Britain is home, as destination and as
    where clients are."""
    events: list[dict[str, Any]] = []
    for i in range(count):
        ts = T0 + i * 60
        sent = request(
            ts=ts, phone=f"+4474001{i:05d}", client_ip=f"203.0.{i // 250}.{i % 250}", ip_country="GB"
        )
        events += [sent, feedback(sent["request_id"], ts + 20)]
    return events


def third_country(decision: Decision) -> tuple[object, object, object] | None:
    found = [(r.value, r.threshold, r.points) for r in decision.reasons if r.code == "third_country_client"]
    return found[0] if found else None


async def test_a_foreign_destination_from_a_client_country_outside_the_market_adds_points(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(geography())
    await decide(engine, *british_users())
    offshore, from_home, local = await decide(
        engine,
        request(ts=AFTER, phone="+2250101234567", client_ip="198.51.100.1", ip_country="US"),
        request(ts=AFTER + 1, phone="+2250101234568", client_ip="198.51.100.2", ip_country="GB"),
        request(ts=AFTER + 2, phone="+2250101234569", client_ip="198.51.100.3", ip_country="CI"),
    )
    assert third_country(offshore) == (0.0, 0.02, 20.0), offshore
    assert {"ip_country_mismatch", "non_home_destination"} <= codes(offshore)
    assert offshore.score == 60.0, offshore
    # A client at home asking for a foreign number is a mismatch, not a third country.
    assert third_country(from_home) is None and from_home.score == 40.0, from_home
    # A foreign number asked for from its own country: no mismatch, no third country.
    assert third_country(local) is None and local.action == "allow", local


async def test_no_history_no_third_country(make_engine: EngineFactory) -> None:
    engine = make_engine(geography())
    [decision] = await decide(
        engine, request(ts=T0, phone="+2250101234567", client_ip="198.51.100.1", ip_country="US")
    )
    assert third_country(decision) is None and decision.action == "allow", decision


async def test_a_route_that_verifies_and_a_known_good_number_add_nothing(make_engine: EngineFactory) -> None:
    engine = make_engine(geography())
    await decide(engine, *british_users())
    # Ivorian users abroad in the US, verifying: their route verifies like the business.
    diaspora: list[dict[str, Any]] = []
    for i in range(30):
        ts = AFTER + i * 30
        sent = request(ts=ts, phone=f"+22501020{i:05d}", client_ip=f"198.51.101.{i}", ip_country="US")
        diaspora += [sent, feedback(sent["request_id"], ts + 20)]
    await decide(engine, *diaspora)
    later = AFTER + 30 * 30 + 1200  # the diaspora's codes are settled
    [user] = await decide(
        engine, request(ts=later, phone="+2250102099999", client_ip="198.51.101.99", ip_country="US")
    )
    assert "route_verifies" in codes(user) and third_country(user) is None, user
    # A number verified before is known-good wherever it asks from.
    [returning] = await decide(
        engine, request(ts=later + 1, phone="+2250102000001", client_ip="198.51.102.1", ip_country="FR")
    )
    assert "known_good_number" in codes(returning) and third_country(returning) is None, returning


async def test_the_rule_can_be_turned_off(make_engine: EngineFactory) -> None:
    engine = make_engine(quiet_policy(rules={**GEOGRAPHY, "third_country_client": {"mode": "off"}}))
    await decide(engine, *british_users())
    [decision] = await decide(
        engine, request(ts=AFTER, phone="+2250101234567", client_ip="198.51.100.1", ip_country="US")
    )
    assert third_country(decision) is None and decision.score == 40.0, decision


def block_requests(
    start: float, count: int, stem: str, verify: bool, gap: float = 60.0
) -> list[dict[str, Any]]:
    """`count` codes to one block of 1000 numbers, one per `gap` seconds, from a different address each."""
    events: list[dict[str, Any]] = []
    for i in range(count):
        ts = start + gap * i
        sent = request(ts=ts, phone=f"{stem}{i:03d}", client_ip=f"203.0.113.{i + 1}")
        events.append(sent)
        if verify:
            events.append(feedback(sent["request_id"], ts + 20))
    return events


def prefix_unverified(decision: Decision) -> tuple[object, object] | None:
    found = [(r.value, r.threshold) for r in decision.reasons if r.code == "prefix_unverified"]
    return found[0] if found else None


async def test_a_number_block_past_its_own_normal_is_challenged(make_engine: EngineFactory) -> None:
    """Real users' numbers are spread over a country: a block that gets more than a few unverified codes
    in ten minutes is being pumped, even from clean home addresses."""
    engine = make_engine(policy(rules={"retry_delay": {"mode": "off"}, "quarantine": {"mode": "off"}}))
    pumped = await decide(engine, *block_requests(T0, 6, "+447400550", verify=False))
    assert [prefix_unverified(d) for d in pumped[:4]] == [None] * 4
    assert prefix_unverified(pumped[4]) == (5, 4), pumped[4]
    assert pumped[4].action == "challenge" and pumped[5].action == "challenge", pumped[4:]
    verified = await decide(engine, *block_requests(T0, 8, "+447400660", verify=True))
    assert all(prefix_unverified(d) is None and d.action == "allow" for d in verified), verified


async def test_a_block_whose_users_verify_learns_a_higher_threshold(make_engine: EngineFactory) -> None:
    engine = make_engine(policy(rules={"retry_delay": {"mode": "off"}, "quarantine": {"mode": "off"}}))
    busy = []
    for i in range(120):  # a busy block (say the business's own range): 120 verified codes in two hours
        ts = T0 + 60 * i
        sent = request(ts=ts, phone=f"+447400770{i % 1000:03d}", client_ip=f"203.0.{i // 200}.{i % 200 + 1}")
        busy += [sent, feedback(sent["request_id"], ts + 20)]
    await decide(engine, *busy)
    later = T0 + 3 * 3600
    later = T0 + 3 * 3600
    burst = await decide(engine, *block_requests(later, 20, "+447400770", verify=False, gap=15))
    fired = [prefix_unverified(d) for d in burst]
    # 1.5 x the busiest 2h bucket's 120 verified codes, per 10 minutes
    assert fired[:15] == [None] * 15 and fired[15] == (16, 15.0), fired


def reason(decision: Decision, code: str) -> tuple[object, object, object] | None:
    found = [(r.value, r.threshold, r.points) for r in decision.reasons if r.code == code]
    return found[0] if found else None


async def test_before_any_verified_history_the_request_mix_says_what_is_home(
    make_engine: EngineFactory,
) -> None:
    """A new deployment's own users are most of what it is asked for: in warmup a destination with under
    `home.min_share` of the requests is foreign; below 1 / min_share requests in all, nothing is."""
    engine = make_engine(geography())
    users = [
        request(ts=T0 + 30 * i, phone=f"+4474001{i:05d}", client_ip=f"203.0.0.{i + 1}", ip_country="GB")
        for i in range(99)
    ]
    [early] = await decide(
        engine, request(ts=T0 - 1, phone="+2250101234567", client_ip="198.51.100.1", ip_country="US")
    )
    assert reason(early, "non_home_destination") is None, early  # one request in all: it is the mix
    await decide(engine, *users)
    later = T0 + 3600
    offshore, home = await decide(
        engine,
        request(ts=later, phone="+2250101234568", client_ip="198.51.100.2", ip_country="US"),
        request(ts=later + 1, phone="+447400299999", client_ip="203.0.1.1", ip_country="GB"),
    )
    assert reason(offshore, "non_home_destination") == (round(2 / 101, 4), 0.02, 20.0), offshore
    assert reason(offshore, "third_country_client") == (round(2 / 101, 4), 0.02, 20.0), offshore
    assert offshore.score == 60.0, offshore
    assert reason(home, "non_home_destination") is None and home.action == "allow", home


async def test_a_destination_never_verified_adds_points_until_its_first_users_verify(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(quiet_policy(rules={**GEOGRAPHY, "never_verified_destination": {"mode": "enforce"}}))
    await decide(engine, *british_users())
    asked = [
        request(ts=AFTER + i, phone=f"+225010123456{i}", client_ip=f"198.51.100.{i + 1}", ip_country="CI")
        for i in range(3)
    ]
    first, second, third = await decide(engine, *asked)
    assert (
        reason(first, "never_verified_destination") is None
        and reason(second, "never_verified_destination") is None
    )
    assert reason(third, "never_verified_destination") == (3, 3, 20.0), third
    assert third.action == "challenge", third  # non-home 20 + never verified 20
    await decide(engine, feedback(asked[0]["request_id"], AFTER + 20))
    [launched] = await decide(
        engine, request(ts=AFTER + 60, phone="+2250101234568", client_ip="198.51.100.9", ip_country="CI")
    )
    assert reason(launched, "never_verified_destination") is None and launched.action == "allow", launched


def ivorian_codes(start: float, count: int, verify: bool) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(count):
        ts = start + 30 * i
        sent = request(ts=ts, phone=f"+22501030{i:05d}", client_ip=f"198.51.103.{i + 1}", ip_country="CI")
        events.append(sent)
        if verify:
            events.append(feedback(sent["request_id"], ts + 20))
    return events


async def test_a_collapsed_destination_is_not_also_counted_as_never_verified(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(quiet_policy(rules={**GEOGRAPHY, "never_verified_destination": {"mode": "enforce"}}))
    await decide(engine, *british_users())
    await decide(engine, *ivorian_codes(AFTER, 30, verify=False))
    later = AFTER + 30 * 30 + 1200  # the codes are settled: the destination's rate is known, and 0
    [pumped] = await decide(
        engine, request(ts=later, phone="+2250103099999", client_ip="198.51.104.1", ip_country="US")
    )
    assert "destination_conversion_collapse" in codes(pumped), pumped
    assert reason(pumped, "non_home_destination") == (0.0, 0.02, 60.0), pumped
    assert reason(pumped, "never_verified_destination") is None, pumped
    assert reason(pumped, "third_country_client") == (0.0, 0.02, 20.0), pumped


async def test_a_third_country_adds_nothing_where_the_destination_verifies(
    make_engine: EngineFactory,
) -> None:
    """Travellers on a foreign number that the business's users verify, asking from a third country."""
    pol = quiet_policy(home={"min_share": 0.2}, rules=GEOGRAPHY)  # Côte d'Ivoire stays foreign
    engine = make_engine(pol)
    await decide(engine, *british_users())
    await decide(engine, *ivorian_codes(AFTER, 30, verify=True))
    later = AFTER + 30 * 30 + 1200
    [traveller] = await decide(
        engine, request(ts=later, phone="+2250103099999", client_ip="198.51.104.1", ip_country="US")
    )
    assert "destination_verifies" in codes(traveller) and "non_home_destination" in codes(traveller)
    assert third_country(traveller) is None and traveller.score == 40.0, traveller
