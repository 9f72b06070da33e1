"""Prometheus metrics of the send worker, in a registry of their own; every name starts with
``detector_send_``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from detector.kafka.metrics import MetricSet

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAITS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000)


class SendMetrics(MetricSet):
    """The send worker's metrics (see the module)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.outcomes = self.counter("detector_send_outcomes", "Outcomes published, by status", ["status"])
        self.failures = self.counter("detector_send_failures", "Failed outcomes, by error", ["error"])
        self.requests = self.counter(
            "detector_send_8x8_requests",
            "HTTP requests to 8x8, by operation and result",
            ["operation", "result"],
        )
        self.latency = self.histogram(
            "detector_send_8x8_seconds", "Time of one HTTP request to 8x8", _LATENCY, ["operation"]
        )
        self.retries = self.counter(
            "detector_send_retries",
            "8x8 requests tried again, by reason",
            ["operation", "reason", "ambiguous"],
        )
        self.rate_limit_wait = self.histogram(
            "detector_send_rate_limit_wait_seconds",
            "Waits before a send: token bucket, or a 429's Retry-After",
            _WAITS,
            ["source"],
        )
        self.batch_messages = self.histogram(
            "detector_send_batch_messages", "Messages per 8x8 send request", _SIZES
        )
        self.redelivered = self.counter(
            "detector_send_redelivered", "Decisions already in the ledger", ["state"]
        )
        self.in_doubt = self.counter("detector_send_in_doubt", "Claims found without an outcome, not resent")
        self.lookups = self.counter(
            "detector_send_lookups",
            "Requests searched in 8x8's message log after an ambiguous failure or a dead claim, by result",
            ["result"],
        )
        self.abandoned = self.counter(
            "detector_send_abandoned", "Sends given up before any attempt (stopping)"
        )
        self.feedback = self.counter(
            "detector_send_feedback", "Feedback events, by what was done", ["result"]
        )
        self.ledger_errors = self.counter("detector_send_ledger_errors", "Ledger (Redis) calls that failed")
        self.invalid = self.counter(
            "detector_send_invalid_input", "Records that could not be read", ["topic"]
        )
        self.round_seconds = self.histogram(
            "detector_send_round_seconds", "From taking a round to its outcomes acknowledged", _LATENCY
        )
