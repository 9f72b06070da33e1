"""Prometheus metrics of a worker, in a registry of their own (so tests can run several workers in one
process); `HealthServer` serves the registry on /metrics."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class MetricSet:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, list(labels), registry=self.registry)

    def histogram(
        self, name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        return Histogram(name, documentation, list(labels), buckets=tuple(buckets), registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
