"""Prometheus metrics of `detector serve`, in a registry of its own, served on its `/metrics`.

Names shared with the Kafka worker mean the same thing, so one dashboard reads both: what decisions say
(`detector.metrics`: decisions, reasons, degraded decisions, quarantines, cost stopped),
``detector_feedback_total{status}``,
``detector_store_errors_total{operation}``, ``detector_batch_size{topic="http"}``. The service's own:

* ``detector_http_requests_total{route, method, status}`` and ``detector_http_request_seconds{route}``
  (route = the path template, so request ids do not become labels);
* ``detector_challenge_results_total{status}``: what became of challenge results (``decided`` or the
  engine's status), and ``detector_siteverify_total{result}`` (passed, failed, error).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from detector.engine import Result
from detector.events import Decision, Event, OtpChallenge, OtpFeedback
from detector.metrics import DecisionMetrics

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
UNROUTED = "unrouted"  # answered before routing: 401 (no token), 404 (no such path), 413
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "detector_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "detector_http_request_seconds",
            "From the request's first byte to the end of its answer",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decided = DecisionMetrics(r)
        self.feedback = Counter(
            "detector_feedback", "Feedback results from the store", ["status"], registry=r
        )
        self.challenges = Counter(
            "detector_challenge_results", "Challenge results, by what became of them", ["status"], registry=r
        )
        self.siteverify = Counter(
            "detector_siteverify", "CAPTCHA tokens verified with the provider", ["result"], registry=r
        )
        self.store_errors = Counter(
            "detector_store_errors", "Batches the store did not answer", ["operation"], registry=r
        )
        self.batch_size = Histogram(
            "detector_batch_size", "Events per engine call", ["topic"], buckets=_SIZE_BUCKETS, registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def batch(self, events: Sequence[Event], outcomes: Sequence[Result | BaseException]) -> None:
        """Count one engine call's answers."""
        self.batch_size.labels("http").observe(len(events))
        decisions: list[Decision] = []
        unavailable: set[str] = set()
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, Decision):
                decisions.append(outcome)
                if any(reason.code == "state_unavailable" for reason in outcome.reasons):
                    unavailable.add("decide")
                if isinstance(event, OtpChallenge):
                    self.challenges.labels("decided").inc()
            elif isinstance(outcome, str):
                if isinstance(event, OtpFeedback):
                    self.feedback.labels(outcome).inc()
                    if outcome == "unavailable":
                        unavailable.add("feedback")
                elif isinstance(event, OtpChallenge):
                    self.challenges.labels(outcome).inc()
                    if outcome == "unavailable":
                        unavailable.add("challenge")
        self.decided.observe(decisions)
        for operation in unavailable:
            self.store_errors.labels(operation).inc()


class HttpMetrics:
    """ASGI wrapper: every answer counted by route template and status, and timed, 404s and 413s included."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Children by label values: prometheus_client's `labels()` takes a lock and builds a tuple each call.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[str, Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("path_template") or UNROUTED
            # Labels from a set clients cannot grow: route templates, known methods, statuses.
            method = scope["method"] if scope["method"] in _METHODS else "other"
            key = (route, method, status)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.metrics.requests.labels(route, method, str(status))
            counter.inc()
            timer = self._timers.get(route)
            if timer is None:
                timer = self._timers[route] = self.metrics.latency.labels(route)
            timer.observe(time.perf_counter() - started)
