"""Prometheus metrics of the worker, in a registry of its own (so tests can run several in one process).

Every name starts with ``detector_``:

* ``events_in_total{topic, type}``: messages read, by input topic kind (requests, feedback, feedback_retry)
  and what they turned out to be (otp_request, otp_feedback, bad);
* what decisions say (``decisions_total{action, verdict, mode}``, ``decision_reasons_total{reason}``,
  ``degraded_decisions_total``, ``quarantines_total{kind}``, ``cost_stopped_total``): `detector.metrics`,
  shared with `detector serve`;
* ``feedback_total{status}``: feedback results from the store (applied, duplicate, failed, unknown,
  unavailable — each attempt counts);
* ``challenge_results_total{status}``: challenge results that ended in no decision (unknown, mismatch,
  duplicate, unverified, unavailable); ``worker_siteverify_total{result}``: tokens checked with the provider;
* ``feedback_retries_total{reason}`` / ``feedback_dropped_total{reason}``: feedback sent to the retry topic,
  and given up on after the last retry;
* ``dead_letters_total{topic}``: bad input written to the dead-letter topic;
* ``store_errors_total{operation}``: batches where the store did not answer (``decide``: requests decided
  with the policy's fail mode; ``feedback``: feedback that must be retried);
* ``batch_size{topic}``, ``batch_seconds{topic}``: histograms of batch size and of the time from taking a
  batch to every output being acknowledged by Kafka;
* ``decision_delay_seconds``: from the request's Kafka timestamp to its decision being acknowledged.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from detector.kafka.metrics import MetricSet
from detector.metrics import DecisionMetrics

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics(MetricSet):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.events_in = self.counter(
            "detector_events_in", "Messages read, by input topic and event type", ["topic", "type"]
        )
        self.decided = DecisionMetrics(self.registry)
        self.feedback = self.counter("detector_feedback", "Feedback results from the store", ["status"])
        self.challenges = self.counter(
            "detector_challenge_results",
            "Challenge results without a new decision, by status (unknown, mismatch, duplicate, ...)",
            ["status"],
        )
        self.siteverify = self.counter(
            "detector_worker_siteverify", "CAPTCHA tokens verified with the provider", ["result"]
        )
        self.feedback_retries = self.counter(
            "detector_feedback_retries", "Feedback sent to the retry topic", ["reason"]
        )
        self.feedback_dropped = self.counter(
            "detector_feedback_dropped", "Feedback given up after its last retry", ["reason"]
        )
        self.dead_letters = self.counter(
            "detector_dead_letters", "Bad input written to the dead-letter topic", ["topic"]
        )
        self.store_errors = self.counter(
            "detector_store_errors", "Batches the store did not answer", ["operation"]
        )
        self.batch_size = self.histogram("detector_batch_size", "Events per batch", _SIZE_BUCKETS, ["topic"])
        self.batch_seconds = self.histogram(
            "detector_batch_seconds",
            "From taking a batch to all its output acknowledged by Kafka",
            _LATENCY_BUCKETS,
            ["topic"],
        )
        self.decision_delay = self.histogram(
            "detector_decision_delay_seconds",
            "From the request's Kafka timestamp to its decision acknowledged",
            _LATENCY_BUCKETS,
        )
