"""Quarantines and the spend circuit breaker as the decisions tell them: how many quarantines began, of which
kind and at which level of their TTL ladder, how many requests they blocked and let past (known-good
numbers), and the breaker's trips per destination country and hour with what they blocked.

Read from reasons only (`quarantine_started`, `quarantined`, `quarantine_exempt`, `spend_circuit_breaker`),
so it works on any decisions: an evaluation's, the demo's, a replay of real traffic.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from detector.evaluation.result import BreakerTrip, Containment, QuarantineKind
from detector.evaluation.sim.prices import price_for
from detector.events import Decision
from detector.scoring import quarantine_kinds

QUARANTINE_KINDS = ("prefix", "subnet", "ip")


def _outcome(decision: Decision) -> str:
    return decision.verdict if decision.mode == "shadow" else decision.action


@dataclass
class ContainmentCounter:
    opened: Counter[str] = field(default_factory=Counter)
    levels: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    blocked: Counter[str] = field(default_factory=Counter)
    exempt: Counter[str] = field(default_factory=Counter)
    quarantine_blocked: int = 0
    quarantine_exempt: int = 0
    trips: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # -> [requests, cost], in order

    def add(self, decision: Decision, ts: float) -> None:
        blocked = _outcome(decision) == "block"
        quarantined = exempt = False
        for reason in decision.reasons:
            code = reason.code
            if code == "quarantine_started":
                for kind in quarantine_kinds(reason.value):
                    self.opened[kind] += 1
                    level = str(reason.value).split(" level ", 1)[-1].split(" ", 1)[0]
                    self.levels[kind][level if level.isdigit() else "?"] += 1
            elif code == "quarantined" and blocked:
                quarantined = True
                for kind in quarantine_kinds(reason.value):
                    self.blocked[kind] += 1
            elif code == "quarantine_exempt":
                exempt = True
                for kind in quarantine_kinds(reason.value):
                    self.exempt[kind] += 1
            elif code == "spend_circuit_breaker" and blocked:
                hour = time.strftime("%Y-%m-%dT%H", time.gmtime(ts))
                trip = self.trips.setdefault((decision.phone_country or "?", hour), [0, 0.0])
                trip[0] += 1
                trip[1] += price_for(decision.phone_country)
        self.quarantine_blocked += quarantined
        self.quarantine_exempt += exempt

    def result(self) -> Containment:
        kinds = [k for k in QUARANTINE_KINDS if k in {*self.opened, *self.blocked, *self.exempt}]
        kinds += sorted({*self.opened, *self.blocked, *self.exempt} - set(kinds))
        trips = [
            BreakerTrip(country, hour, int(count), round(cost, 4))
            for (country, hour), (count, cost) in sorted(
                self.trips.items(), key=lambda kv: (kv[0][1], kv[0][0])
            )
        ]
        return Containment(
            quarantines={
                kind: QuarantineKind(
                    opened=self.opened[kind],
                    by_level=dict(sorted(self.levels[kind].items())),
                    blocked=self.blocked[kind],
                    exempt=self.exempt[kind],
                )
                for kind in kinds
            },
            quarantines_opened=sum(self.opened.values()),
            quarantine_blocked=self.quarantine_blocked,
            quarantine_exempt=self.quarantine_exempt,
            breaker_trips=trips,
            breaker_blocked=sum(int(trip.blocked) for trip in trips),
            breaker_cost=round(sum(trip.cost for trip in trips), 4),
        )


def containment_text(found: Containment) -> str:
    """Two lines for a terminal: quarantines, and the spend breaker."""
    kinds = ", ".join(
        f"{kind} {entry.opened} (by level {_levels(entry.by_level)})"
        for kind, entry in found.quarantines.items()
        if entry.opened
    )
    countries = ", ".join(sorted({trip.country for trip in found.breaker_trips})) or "none"
    return (
        f"quarantines: {found.quarantines_opened} opened ({kinds or 'none'}), "
        f"{found.quarantine_blocked:,} requests blocked by them, "
        f"{found.quarantine_exempt:,} known-good let past\n"
        f"spend breaker: {len(found.breaker_trips)} country-hours tripped ({countries}), "
        f"{found.breaker_blocked:,} requests blocked (${found.breaker_cost:,.2f})"
    )


def _levels(by_level: dict[str, int]) -> str:
    return " ".join(f"{level}:{count}" for level, count in by_level.items())
