"""What decisions say, as Prometheus counters: one set for every process that decides (the Kafka worker and
`detector serve`), so one dashboard and one set of alerts read both.

* ``detector_decisions_total{action, verdict, mode}``: decisions made;
* ``detector_decision_reasons_total{reason}``: each reason code a decision carries (rule names of the policy
  and the engine's own codes; never client text, and at most ``MAX_REASONS`` distinct codes, then ``other``);
* ``detector_degraded_decisions_total``: decisions made on the process's own counters while the shared store
  was away (reason ``state_degraded``);
* ``detector_quarantines_total{kind}``: quarantines begun (reason ``quarantine_started``), by kind (prefix,
  subnet, ip);
* ``detector_cost_stopped_total``: the estimated price (USD, the policy's price file) of the SMS a first
  decision did not send: requests blocked, challenged or delayed. A challenge passed later sends after all;
  ``detector_decisions_total{...}`` with the superseding decisions tells how often.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

from detector.events import Decision
from detector.prices import PriceTable, load_prices
from detector.scoring import quarantine_kinds

MAX_REASONS = 200
STOPPING = frozenset({"block", "challenge", "delay"})


class DecisionMetrics:
    def __init__(self, registry: CollectorRegistry, prices: PriceTable | None = None) -> None:
        self.prices = prices or load_prices()  # the owner sets the policy's table once it has the policy
        self.decisions = Counter(
            "detector_decisions", "Decisions made", ["action", "verdict", "mode"], registry=registry
        )
        self.reasons = Counter(
            "detector_decision_reasons", "Reasons on decisions, by code", ["reason"], registry=registry
        )
        self.degraded = Counter(
            "detector_degraded_decisions",
            "Decisions on the process's own counters while the shared store was away",
            registry=registry,
        )
        self.quarantines = Counter(
            "detector_quarantines", "Quarantines begun, by kind", ["kind"], registry=registry
        )
        self.cost_stopped = Counter(
            "detector_cost_stopped",
            "Estimated USD of the SMS first decisions did not send (blocked, challenged or delayed)",
            registry=registry,
        )
        self._codes: set[str] = set()
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}

    def observe(self, decisions: Iterable[Decision]) -> None:
        """Count one batch's decisions (one `inc` per label set, not per decision)."""
        actions: dict[tuple[str, str, str], int] = {}  # plain dicts: a Counter costs ~0.5 µs to make
        reasons: dict[str, int] = {}
        kinds: dict[str, int] = {}
        degraded = 0
        cost = 0.0
        for decision in decisions:
            outcome: tuple[str, str, str] = (decision.action, decision.verdict, decision.mode)
            actions[outcome] = actions.get(outcome, 0) + 1
            for reason in decision.reasons:
                code = reason.code
                reasons[code] = reasons.get(code, 0) + 1
                if code == "quarantine_started":
                    for kind in quarantine_kinds(reason.value):
                        kinds[kind] = kinds.get(kind, 0) + 1
                elif code == "state_degraded":
                    degraded += 1
            if decision.action in STOPPING and decision.supersedes is None:
                cost += self.prices.price_for(decision.phone_country)
        for labels, count in actions.items():
            self._labelled(self.decisions, labels).inc(count)
        for code, count in reasons.items():
            self._labelled(self.reasons, (self._label(code),)).inc(count)
        for kind, count in kinds.items():
            self._labelled(self.quarantines, (self._label(kind),)).inc(count)
        if degraded:
            self.degraded.inc(degraded)
        if cost:
            self.cost_stopped.inc(cost)

    def _labelled(self, counter: Counter, labels: tuple[str, ...]) -> Counter:
        """`counter.labels(*labels)`, kept: prometheus_client takes ~1 µs a call to find it again. Bounded
        like the label values (a decision's action, verdict and mode; `_label`)."""
        child = self._children.get((counter, labels))
        if child is None:
            child = self._children[(counter, labels)] = counter.labels(*labels)
        return child

    def _label(self, code: str) -> str:
        """A code as a label value, from a bounded set: a policy with a runaway rule list cannot blow up the
        series count."""
        if code in self._codes:
            return code
        if len(self._codes) >= MAX_REASONS:
            return "other"
        self._codes.add(code)
        return code
