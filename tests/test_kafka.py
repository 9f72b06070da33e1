"""The Kafka plumbing both workers share: broker lists and the metrics/health endpoint (a real HTTP
server on loopback)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from detector.kafka.brokers import bootstrap_servers, broker_urls
from detector.kafka.health import HealthServer
from detector.testing.services import free_port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_broker_lists_in_either_form() -> None:
    assert bootstrap_servers("a:9092; kafka://b:9093,") == ["a:9092", "b:9093"]
    assert broker_urls("a:9092,kafka://b:9093") == ["kafka://a:9092", "kafka://b:9093"]
    with pytest.raises(ValueError, match="no Kafka brokers"):
        bootstrap_servers(" , ")


def test_metrics_health_and_readiness_each_on_their_path() -> None:
    registry = CollectorRegistry()
    Counter("detector_things", "Things", registry=registry).inc(3)
    checks = {"store reachable": True, "kafka consumer started": False}
    port = free_port()
    with HealthServer(registry, port, "127.0.0.1", ready=lambda: checks):
        status, body = get(port, "/metrics")
        assert status == 200 and "detector_things_total 3.0" in body
        assert get(port, "/healthz") == (200, "ok\n")
        status, body = get(port, "/readyz")
        assert status == 503 and "kafka consumer started: not ready" in body and "store reachable: ok" in body
        checks["kafka consumer started"] = True
        assert get(port, "/readyz")[0] == 200
        assert get(port, "/")[0] == 404
        assert get(port, "/metrics/extra")[0] == 404


def test_a_readiness_check_that_raises_means_not_ready() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("bug")

    port = free_port()
    with HealthServer(CollectorRegistry(), port, "127.0.0.1", ready=broken):
        status, body = get(port, "/readyz")
    assert status == 503 and "RuntimeError" in body
