"""One test per rule, each with the rule alone (quiet_policy) so that it is the rule that decides."""

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.engine import Engine
from detector.events import Decision, parse_event
from detector.hashing import KeyedHasher
from detector.scoring import counter_plan
from detector.state.base import Answer, Update
from detector.state.memory import MemoryStore
from tests.factories import T0, codes, decisions, feedback, policy, quiet_policy, request


def _only(events: list[dict[str, Any]], batch_size: int = 100, **overrides: Any) -> list[Decision]:
    return decisions(events, quiet_policy(**overrides), batch_size=batch_size)


def test_a_plain_request_is_allowed() -> None:
    [decision] = decisions([request(ip_country="GB")])
    assert (decision.action, decision.verdict, decision.reasons) == ("allow", "allow", ())
    assert decision.client_ip == "203.0.113.5" and decision.phone == "+447400123456"


def test_invalid_number_is_blocked() -> None:
    [decision] = _only([request(phone="+447700900123")])
    assert decision.action == "block" and "invalid_number" in codes(decision)


def test_deny_lists() -> None:
    events = [
        request(phone="+33612345678"),
        request(client_ip="198.51.100.1"),
        request(phone="+499001234567"),
    ]
    blocked = _only(events, lists={"deny_phone_countries": ["FR"], "deny_ips": ["198.51.100.0/24"]})
    assert [sorted(codes(d)) for d in blocked] == [
        ["denied_phone_country"],
        ["denied_ip"],
        ["denied_number_type"],
    ]
    assert all(d.action == "block" for d in blocked)


def test_allow_list_bypasses_everything() -> None:
    events = [request(phone="+499001234567", client_ip="192.0.2.1", signals={"bot": True})]
    [decision] = _only(events, lists={"allow_ips": ["192.0.2.0/24"]})
    assert decision.action == "allow" and codes(decision) == {"allow_listed"}


def test_msisdn_rate_limit_allows_exactly_the_limit_in_the_window() -> None:
    events = [request(ts=T0 + 60 * i) for i in range(14)]
    results = _only(events, rules={"msisdn_rate_limit": {"limit": 10, "window": "30m"}})
    assert [d.action for d in results] == ["allow"] * 10 + ["block"] * 4
    assert "msisdn_rate_limit" in codes(results[10])


def test_msisdn_rate_limit_frees_slots_after_the_window() -> None:
    events = [request(ts=T0 + i) for i in range(3)] + [request(ts=T0 + 3 * 3600)]
    results = _only(events, rules={"msisdn_rate_limit": {"limit": 2, "window": "30m"}})
    assert [d.action for d in results] == ["allow", "allow", "block", "allow"]


@pytest.mark.parametrize("action", ["delay", "block"])
def test_exponential_delay_for_unverified_retries(action: str) -> None:
    rules = {
        "retry_delay": {"mode": "enforce", "action": action, "base": "30s", "cap": "10m", "window": "24h"}
    }
    # unverified requests so far: 1 → 30 s, 2 → 60 s, 3 → 120 s
    events = [request(ts=T0), request(ts=T0 + 20), request(ts=T0 + 55), request(ts=T0 + 200)]
    results = _only(events, rules=rules)
    assert [d.action for d in results] == ["allow", action, action, "allow"]
    assert results[1].retry_after == pytest.approx(10.0)
    assert results[2].retry_after == pytest.approx(25.0)  # 2 unverified → 60 s from the previous request


def test_a_retry_delay_is_not_passed_by_the_score_rung_s_shorter_wait() -> None:
    """The score's delay rung lets a number through after `delay_for` (30 s); the retry delay's own wait
    (60 s after two unverified codes) still holds a retry 40 s later."""
    rules = {
        "retry_delay": {"mode": "enforce", "action": "delay", "base": "30s", "cap": "10m", "window": "24h"},
        "velocity": {"number": {"dimension": "msisdn", "window": "24h", "threshold": 1, "points": 5}},
    }
    events = [request(ts=T0), request(ts=T0 + 31), request(ts=T0 + 71)]
    results = _only(events, rules=rules, score={"delay_at": 1, "delay_for": "30s"})
    assert [d.action for d in results] == ["delay", "allow", "delay"]
    codes = {r.code for r in results[2].reasons}
    assert {"delay_waited", "retry_too_soon"} <= codes  # the score's rung waited out, the retry's not
    assert results[2].retry_after == pytest.approx(20.0)


def test_a_verified_code_resets_the_delay() -> None:
    rules = {"retry_delay": {"mode": "enforce", "base": "30s", "cap": "10m", "window": "24h"}}
    first = request(ts=T0)
    results = _only([first, feedback(first["request_id"], T0 + 10), request(ts=T0 + 15)], rules=rules)
    assert [d.action for d in results] == ["allow", "allow"]


def test_velocity_scales_with_count_over_threshold_and_is_capped() -> None:
    rules = {"velocity": {"ip": {"dimension": "ip", "window": "10m", "threshold": 5, "points": 20}}}
    events = [request(ts=T0 + i, phone=f"+4474001234{i:02d}") for i in range(40)]
    results = _only(events, rules=rules, score={"challenge_at": 40, "block_at": 59, "velocity_cap": 3})
    scores = [d.score for d in results]
    assert scores[3] == 0 and scores[4] == 20 and scores[9] == 40 and scores[30] == 60
    assert [d.action for d in results][8:10] == ["allow", "challenge"]
    assert results[-1].action == "block"


def test_verified_requests_do_not_count_as_unverified() -> None:
    rules = {
        "velocity": {
            "ip": {"dimension": "ip", "window": "1h", "threshold": 3, "points": 50, "count": "unverified"}
        }
    }
    events: list[dict[str, Any]] = []
    for i in range(6):
        sent = request(ts=T0 + 60 * i, phone=f"+4474001234{i:02d}")
        events += [sent, feedback(sent["request_id"], T0 + 60 * i + 20)]
    assert all(d.action == "allow" for d in _only(events, rules=rules))
    failing = [request(ts=T0 + 60 * i, phone=f"+4474001234{i:02d}") for i in range(6)]
    assert [d.action for d in _only(failing, rules=rules)] == [
        "allow",
        "allow",
        "challenge",
        "challenge",
        "block",
        "block",
    ]


def test_completed_other_is_not_unverified_but_failed_is() -> None:
    rules = {
        "velocity": {
            "ip": {"dimension": "ip", "window": "1h", "threshold": 2, "points": 50, "count": "unverified"}
        }
    }
    a, b = request(ts=T0, phone="+447400123401"), request(ts=T0 + 1, phone="+447400123402")
    other = [
        a,
        feedback(a["request_id"], T0 + 2, "completed_other"),
        b,
        feedback(b["request_id"], T0 + 3, "completed_other"),
        request(ts=T0 + 5),
    ]
    assert _only(other, rules=rules)[-1].action == "allow"
    failed = [
        a | {"request_id": "fa"},
        feedback("fa", T0 + 2, "failed"),
        b | {"request_id": "fb"},
        feedback("fb", T0 + 3, "failed"),
        request(ts=T0 + 5),
    ]
    assert _only(failed, rules=rules)[-1].action != "allow"


def _country_day(verified_per_hour: int, unverified_now: int) -> list[dict[str, Any]]:
    """A day of verified French traffic, then `unverified_now` unverified requests in one hour."""
    events: list[dict[str, Any]] = []
    for hour in range(12):
        for i in range(verified_per_hour):
            ts = T0 + hour * 3600 + i * (3600 / verified_per_hour)
            sent = request(ts=ts, phone=f"+3361234{hour:02d}{i:02d}", client_ip=f"198.51.{hour}.{i}")
            events += [sent, feedback(sent["request_id"], ts + 15)]
    start = T0 + 12 * 3600
    events += [
        request(ts=start + i, phone=f"+3369876{i:04d}", client_ip=f"192.0.2.{i % 250}")
        for i in range(unverified_now)
    ]
    return events


def test_adaptive_unverified_threshold_triggers_on_a_quiet_day() -> None:
    rules = {
        "unverified": {
            "fr": {
                "dimension": "phone_country",
                "recent": "1h",
                "history": "24h",
                "floor": 10,
                "peak_factor": 1.5,
                "verified_factor": 0.5,
                "points": 50,
            }
        }
    }
    results = _only(_country_day(verified_per_hour=4, unverified_now=40), rules=rules)
    assert results[-1].action != "allow" and "fr_unverified" in codes(results[-1])


def test_adaptive_unverified_threshold_rises_on_a_busy_legitimate_day() -> None:
    rules = {
        "unverified": {
            "fr": {
                "dimension": "phone_country",
                "recent": "1h",
                "history": "24h",
                "floor": 10,
                "peak_factor": 1.5,
                "verified_factor": 0.5,
                "points": 50,
            }
        }
    }
    results = _only(_country_day(verified_per_hour=60, unverified_now=40), rules=rules)
    assert results[-1].action == "allow"


def test_conversion_collapse_per_prefix() -> None:
    rules = {
        "conversion": {
            "prefix": {
                "dimension": "prefix",
                "recent": "1h",
                "baseline": "24h",
                "min_requests": 10,
                "collapse_ratio": 0.5,
                "min_rate": 0.1,
                "points": 50,
            }
        }
    }
    events: list[dict[str, Any]] = []
    for i in range(40):  # a healthy morning on one block: 90% verify
        ts = T0 + i * 600
        sent = request(ts=ts, phone=f"+447400123{i % 10}{i // 10:02d}", client_ip=f"198.51.100.{i}")
        events.append(sent)
        if i % 10:
            events.append(feedback(sent["request_id"], ts + 20))
    start = T0 + 12 * 3600
    events += [
        request(ts=start + i * 30, phone=f"+4474001235{i:02d}", client_ip=f"192.0.2.{i}") for i in range(20)
    ]
    results = _only(events, rules=rules)
    assert results[39].action == "allow"
    assert "prefix_conversion_collapse" in codes(results[-1]) and results[-1].action == "block"


def test_country_mismatch_non_core_and_number_type_add_points() -> None:
    configured = policy(phone={"core_countries": ["GB"]})
    [decision] = decisions([request(phone="+2250101234567", ip_country="GB")], configured)
    assert {"ip_country_mismatch", "non_core_destination"} <= codes(decision)
    [voip] = decisions([request(phone="+445612345678", ip_country="GB")])
    assert "risky_number_type" in codes(voip)


def test_distinct_phone_countries_per_ip() -> None:
    phones = ["+447400123456", "+33612345678", "+4915123456789", "+34612345678"]
    events = [request(ts=T0 + i, phone=p) for i, p in enumerate(phones)]
    results = _only(
        events, rules={"distinct_countries_per_ip": {"mode": "enforce", "threshold": 3, "points": 45}}
    )
    assert [d.action for d in results] == ["allow", "allow", "challenge", "challenge"]


def test_upstream_signals_add_up() -> None:
    [decision] = _only(
        [request(signals={"bot": True, "datacenter": True})], rules={"upstream": {"mode": "enforce"}}
    )
    assert codes(decision) == {"upstream_bot", "datacenter_ip"} and decision.action == "challenge"


def test_shadow_mode_allows_and_records_the_verdict() -> None:
    events = [request(ts=T0 + 60 * i) for i in range(12)]
    enforced = decisions(events, quiet_policy())
    shadowed = decisions(events, quiet_policy(mode="shadow"))
    assert [d.verdict for d in shadowed] == [d.action for d in enforced]
    assert {d.action for d in shadowed} == {"allow"} and {d.mode for d in shadowed} == {"shadow"}
    assert "block" in {d.verdict for d in shadowed}


def test_a_rule_in_shadow_mode_is_reported_but_not_enforced() -> None:
    rules = {"upstream": {"mode": "shadow", "bot": 90}}
    [decision] = _only([request(signals={"bot": True})], rules=rules)
    assert (decision.verdict, decision.action) == ("block", "allow")
    assert [r.mode for r in decision.reasons] == ["shadow"]


def test_forwarded_for_with_trusted_proxies_sets_the_client_ip() -> None:
    event = request(client_ip=None, remote_addr="10.0.0.1", forwarded_for="6.6.6.6, 198.51.100.7")
    del event["client_ip"]
    [decision] = decisions([event], policy(trusted_proxies=["10.0.0.0/8"]))
    assert decision.client_ip == "198.51.100.7"


def test_redelivered_request_gets_the_same_decision_and_is_not_counted_twice() -> None:
    rules = {"msisdn_rate_limit": {"limit": 2, "window": "30m"}}
    first, second = request(ts=T0), request(ts=T0 + 1)
    results = _only([first, first, second, second, request(ts=T0 + 2)], rules=rules, batch_size=1)
    assert results[0] == results[1] and results[2] == results[3]
    assert results[1].phone == "+447400123456" and results[1].client_ip == "203.0.113.5"
    assert [d.action for d in results] == ["allow", "allow", "allow", "allow", "block"]


def test_datacenter_and_anonymizer_lists_from_files(tmp_path: Path) -> None:
    datacenters = tmp_path / "datacenters.txt"
    datacenters.write_text("# cloud ranges\n198.51.100.0/24\n2001:db8:dc::/48  # provider b\n")
    anonymizers = tmp_path / "vpn.txt"
    anonymizers.write_text("203.0.113.7\n")
    lists = {"datacenter_ip_files": [str(datacenters)], "anonymizer_ip_files": [str(anonymizers)]}
    events = [
        request(client_ip="198.51.100.9"),
        request(client_ip="2001:db8:dc::5"),
        request(client_ip="203.0.113.7"),
        request(client_ip="192.0.2.1"),
    ]
    found = [codes(d) for d in _only(events, lists=lists, rules={"upstream": {"mode": "enforce"}})]
    assert found == [{"datacenter_ip"}, {"datacenter_ip"}, {"anonymizer_ip"}, set()]


def test_a_bad_list_file_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "dc.txt"
    bad.write_text("198.51.100.0/24\nnot-an-ip\n")
    with pytest.raises(ValueError, match=r"dc.txt:2"):
        _only([request()], lists={"datacenter_ip_files": [str(bad)]})


def test_a_store_that_hangs_is_cut_short_and_on_error_applies() -> None:
    """The engine's own deadline (2 x state.timeout_ms) ends a store call that never returns."""

    class HangingStore(MemoryStore):
        bounds_its_calls = False

        async def apply(self, batch: Sequence[Update], on_answers: object = None) -> list[Answer]:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    hanging = policy(state={"timeout_ms": 50, "on_error": "challenge"})
    engine = Engine(hanging, HangingStore(counter_plan(hanging)), KeyedHasher(b"a-hanging-store-key-7d1e"))
    started = time.monotonic()
    results = asyncio.run(engine.process([parse_event(orjson.dumps(request()))]))
    assert time.monotonic() - started < 5
    decision = results[0]
    assert isinstance(decision, Decision)
    assert "state_unavailable" in codes(decision) and decision.action == "challenge"
