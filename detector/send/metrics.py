"""Prometheus metrics of the send worker, in a registry of their own; every name starts with
``detector_send_``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAITS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000)


class SendMetrics:
    """The send worker's metrics (see the module)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.outcomes = Counter(
            "detector_send_outcomes", "Outcomes published, by status", ["status"], registry=r
        )
        self.failures = Counter("detector_send_failures", "Failed outcomes, by error", ["error"], registry=r)
        self.requests = Counter(
            "detector_send_8x8_requests",
            "HTTP requests to 8x8, by operation and result",
            ["operation", "result"],
            registry=r,
        )
        self.latency = Histogram(
            "detector_send_8x8_seconds",
            "Time of one HTTP request to 8x8",
            ["operation"],
            buckets=_LATENCY,
            registry=r,
        )
        self.retries = Counter(
            "detector_send_retries",
            "8x8 requests tried again, by reason",
            ["operation", "reason", "ambiguous"],
            registry=r,
        )
        self.rate_limit_wait = Histogram(
            "detector_send_rate_limit_wait_seconds",
            "Waits before a send: token bucket, or a 429's Retry-After",
            ["source"],
            buckets=_WAITS,
            registry=r,
        )
        self.batch_messages = Histogram(
            "detector_send_batch_messages", "Messages per 8x8 send request", buckets=_SIZES, registry=r
        )
        self.redelivered = Counter(
            "detector_send_redelivered", "Decisions already in the ledger", ["state"], registry=r
        )
        self.in_doubt = Counter(
            "detector_send_in_doubt", "Claims found without an outcome, not resent", registry=r
        )
        self.lookups = Counter(
            "detector_send_lookups",
            "Requests searched in 8x8's message log after an ambiguous failure or a dead claim, by result",
            ["result"],
            registry=r,
        )
        self.abandoned = Counter(
            "detector_send_abandoned", "Sends given up before any attempt (stopping)", registry=r
        )
        self.feedback = Counter(
            "detector_send_feedback", "Feedback events, by what was done", ["result"], registry=r
        )
        self.ledger_errors = Counter(
            "detector_send_ledger_errors", "Ledger (Redis) calls that failed", registry=r
        )
        self.invalid = Counter(
            "detector_send_invalid_input", "Records that could not be read", ["topic"], registry=r
        )
        self.round_seconds = Histogram(
            "detector_send_round_seconds",
            "From taking a round to its outcomes acknowledged",
            buckets=_LATENCY,
            registry=r,
        )
