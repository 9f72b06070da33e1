"""A request id is idempotency, not a pass: reusing a known id for another number gets no stored allow."""

from __future__ import annotations

from tests.factories import T0, codes, decisions, feedback, policy, request


def test_a_reused_request_id_for_another_number_is_blocked_and_counted() -> None:
    first = request(ts=T0, phone="+447400123456")
    premium = dict(first, ts=T0 + 5, phone="+447400123457", message={"text": "code 1", "source": "Acme"})
    results = decisions([first, premium], policy(rules={"retry_delay": {"mode": "off"}}))
    assert results[0].action == "allow"
    assert results[1].action == "block"
    assert "request_id_reused" in codes(results[1])
    assert results[1].phone == "+447400123457"  # the decision says what was asked for, not what was stored


def test_a_redelivery_with_the_same_content_gets_the_same_decision_uncounted() -> None:
    first = request(ts=T0, phone="+447400123456")
    again = dict(first)
    results = decisions([first, again, dict(first)])
    assert [d.action for d in results] == ["allow", "allow", "allow"]
    assert not any("request_id_reused" in codes(d) for d in results)


def test_reuse_counts_toward_the_clients_velocity() -> None:
    """Replaying one known id with other numbers is abuse: each attempt counts on its IP."""
    pol = policy(rules={"retry_delay": {"mode": "off"}})
    first = request(ts=T0, client_ip="198.51.100.7")
    reuses = [dict(first, ts=T0 + i, phone=f"+4474001{i:05d}") for i in range(1, 40)]
    fresh_after = request(ts=T0 + 50, client_ip="198.51.100.7", phone="+447400999999")
    results = decisions([first, *reuses, fresh_after], pol)
    assert all(d.action == "block" for d in results[1:-1])
    assert "ip_10m_velocity" in codes(results[-1])


def test_feedback_for_a_reused_id_credits_the_original_request_only() -> None:
    first = request(ts=T0, phone="+447400123456")
    reuse = dict(first, ts=T0 + 1, phone="+447400123457")
    results = decisions([first, reuse, feedback(first["request_id"], T0 + 20), dict(first, ts=T0 + 30)])
    assert "request_id_reused" in codes(results[1])
    assert results[2].action == "allow"  # the original's redelivery still gets its own stored answer
    assert "request_id_reused" not in codes(results[2])


def test_a_challenge_result_with_a_malformed_country_is_a_bad_event_not_an_engine_failure() -> None:
    """The result repeats the request; each repeated field is checked as the request's was."""
    import orjson

    from detector.events import BadEvent, parse_event

    raw = {"type": "otp_challenge", "request_id": "r", "challenge_id": "x", "ts": T0, "result": "passed",
           "phone": "+447400123456", "client_ip": "203.0.113.5", "phone_country": "gb"}  # fmt: skip
    parsed = parse_event(orjson.dumps(raw))
    assert isinstance(parsed, BadEvent) and "phone_country" in parsed.error
