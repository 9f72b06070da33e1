"""The response ladder: allow, delay (retry after `retry_after`), challenge, block."""

from typing import Any

import pytest

from detector.events import Decision
from tests.factories import T0, codes, decisions, quiet_policy, request

# An anonymizer flag alone scores 20 (in the delay band); with a bot flag, 60 (a challenge).
LADDER = {"score": {"delay_at": 15, "delay_for": "30s", "challenge_at": 40, "block_at": 70}}
UPSTREAM = {"upstream": {"mode": "enforce"}}


def _vpn(ts: float, **fields: Any) -> dict[str, Any]:
    return request(ts=ts, signals={"anonymizer": True}, **fields)


def _ladder(events: list[dict[str, Any]], **overrides: Any) -> list[Decision]:
    return decisions(events, quiet_policy(rules=UPSTREAM, **{**LADDER, **overrides}))


def test_a_score_in_the_delay_band_is_delayed_and_its_retry_after_the_wait_passes() -> None:
    first, retry = _ladder([_vpn(T0), _vpn(T0 + 30)])
    assert (first.action, first.verdict, first.score) == ("delay", "delay", 20.0)
    assert first.retry_after == pytest.approx(30.0)
    assert first.challenge_id is None
    assert (retry.action, retry.verdict) == ("allow", "allow")
    assert "delay_waited" in codes(retry) and retry.retry_after is None


def test_a_retry_too_soon_is_delayed_for_the_rest_of_the_wait() -> None:
    first, early, late = _ladder([_vpn(T0), _vpn(T0 + 10), _vpn(T0 + 41)])
    assert [d.action for d in (first, early, late)] == ["delay", "delay", "allow"]
    assert early.retry_after == pytest.approx(20.0)  # 30 s from the previous request, 10 s ago


def test_the_wait_is_per_number() -> None:
    first, other = _ladder([_vpn(T0), _vpn(T0 + 40, phone="+447400123499")])
    assert (first.action, other.action) == ("delay", "delay")


def test_below_the_band_allow_above_it_challenge() -> None:
    plain, bot = _ladder([request(ts=T0), request(ts=T0 + 1, phone="+447400123499", signals={"bot": True})])
    assert plain.action == "allow" and plain.retry_after is None
    assert bot.action == "challenge" and bot.challenge_id


def test_without_delay_at_the_band_is_allowed() -> None:
    [decision] = _ladder([_vpn(T0)], score={**LADDER["score"], "delay_at": None})
    assert decision.action == "allow" and decision.retry_after is None


def test_shadow_mode_records_the_delay_but_neither_delays_nor_asks_to_wait() -> None:
    [decision] = _ladder([_vpn(T0)], mode="shadow")
    assert (decision.action, decision.verdict, decision.retry_after) == ("allow", "delay", None)


def test_a_rule_in_shadow_mode_does_not_delay() -> None:
    events = [_vpn(T0)]
    [decision] = decisions(events, quiet_policy(rules={"upstream": {"mode": "shadow"}}, **LADDER))
    assert (decision.action, decision.verdict, decision.retry_after) == ("allow", "delay", None)
