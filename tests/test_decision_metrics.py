"""Decision counters shared by the worker and serve: what a scrape shows after a batch of decisions."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from detector.events import Decision, Reason
from detector.metrics import MAX_REASONS, DecisionMetrics
from detector.prices import load_prices


def decision(
    action: str, *codes: str, country: str = "GB", mode: str = "enforce", **extra: object
) -> Decision:
    reasons = tuple(Reason(code=code, value=extra.pop(code, None)) for code in codes)  # type: ignore[arg-type]
    return Decision(
        request_id="r",
        ts=None,
        action=action,  # type: ignore[arg-type]
        verdict=action,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        score=0.0,
        reasons=reasons,
        policy_version="t",
        phone_country=country,
        **extra,  # type: ignore[arg-type]
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_reasons_quarantines_degraded_and_cost_stopped() -> None:
    registry = CollectorRegistry()
    prices = load_prices()
    metrics = DecisionMetrics(registry, prices)
    metrics.observe(
        [
            decision(
                "block", "prefix_velocity", "quarantine_started", quarantine_started="prefix level 2 until x"
            ),
            decision("block", "quarantined", country="IQ"),
            decision("challenge", "state_degraded", country="AZ"),
            decision("allow", "state_degraded"),
            decision("allow", "challenge_passed", supersedes="challenge"),
            decision("block", "challenge_failed", supersedes="challenge", country="IQ"),
        ]
    )
    assert sample(registry, "detector_decisions_total", action="block", verdict="block", mode="enforce") == 3
    assert sample(registry, "detector_decision_reasons_total", reason="state_degraded") == 2
    assert sample(registry, "detector_decision_reasons_total", reason="quarantined") == 1
    assert sample(registry, "detector_quarantines_total", kind="prefix") == 1
    assert sample(registry, "detector_degraded_decisions_total") == 2
    # First decisions only: the superseding block is not a second stop of the same SMS.
    expected = prices.price_for("GB") + prices.price_for("IQ") + prices.price_for("AZ")
    assert abs(sample(registry, "detector_cost_stopped_total") - expected) < 1e-9


def test_shadow_mode_stops_nothing() -> None:
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry, load_prices())
    shadow = Decision(request_id="r", ts=None, action="allow", verdict="block", mode="shadow", score=90.0,
                      reasons=(), policy_version="t", phone_country="IQ")  # fmt: skip
    metrics.observe([shadow])
    assert sample(registry, "detector_cost_stopped_total") == 0
    assert sample(registry, "detector_decisions_total", action="allow", verdict="block", mode="shadow") == 1


def test_reason_labels_are_a_bounded_set() -> None:
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry, load_prices())
    metrics.observe([decision("allow", f"rule_{n}") for n in range(MAX_REASONS + 50)])
    families = {s.labels["reason"] for f in registry.collect() for s in f.samples if "reason" in s.labels}
    assert len(families) == MAX_REASONS + 1
    assert sample(registry, "detector_decision_reasons_total", reason="other") == 50
