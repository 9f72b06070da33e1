"""The Grafana dashboard: the committed JSON is what the code generates, every query parses, and every metric
the dashboard and the alert rules name is one that live workers export (scraped from their /metrics)."""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from detector.kafka.topics import TopicNames, ensure_topics
from detector.testing.eightbyeight_double import EightByEightDouble
from tests.deploy.cli_env import REPO
from tests.deploy.promql import parse, regex_matchers, selectors

DASHBOARDS = REPO / "deploy" / "dashboards"
DASHBOARD_JSON = DASHBOARDS / "sms-pumping-detector.json"
ALERT_RULES = REPO / "deploy" / "alerts" / "detector.rules.yaml"

# Metrics that come from elsewhere than the detector's processes.
EXTERNAL = {
    "up": "Prometheus itself, per scrape target",
    "kafka_consumergroup_lag": "a Kafka exporter (kafka-exporter in deploy/compose.yaml)",
}
# Metrics the dashboard and alerts already show but no process exports yet. The live test fails as soon as
# one of them appears in a scrape, so this list cannot go stale.
PENDING: dict[str, str] = {}


def dashboard_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("detector_dashboard", DASHBOARDS / "detector_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _targets(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield from panel.get("targets") or []
        yield from _targets(panel.get("panels") or [])


def dashboard_expressions() -> list[str]:
    return [target["expr"] for target in _targets(json.loads(DASHBOARD_JSON.read_text())["panels"])]


def alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def test_the_committed_json_is_the_generated_one() -> None:
    assert DASHBOARD_JSON.read_text() == dashboard_module().render(), "run `make dashboards` and commit"


def test_the_dashboard_has_every_panel_operators_need() -> None:
    titles = {p["title"] for p in json.loads(DASHBOARD_JSON.read_text())["panels"] if p["type"] != "row"}
    assert titles >= {
        "Decisions by action and verdict", "Top reasons", "Events in", "Consumer lag", "Batch latency",
        "Decision latency", "Store errors and degraded decisions", "Dead letters", "Send outcomes",
        "8x8 errors and retries", "Sends in doubt", "Quarantines", "Cost stopped",
    }  # fmt: skip


def test_every_query_parses_as_promql() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    for expr in expressions + alert_expressions():
        assert selectors(expr), expr  # parse() raises on a syntax error
    with pytest.raises(ValueError):
        parse("sum by (action (rate(detector_decisions_total[5m]))")


def test_the_lag_queries_watch_the_groups_deployments_use() -> None:
    """Consumer lag is selected by group name: every group the workers use by default, in compose and in the
    chart's values must match, or the lag panel and alert go blank without a sign."""
    from detector.send.config import DEFAULT_GROUP as SEND_GROUP
    from detector.stream.config import DEFAULT_GROUP as STREAM_GROUP

    values = yaml.safe_load((REPO / "deploy" / "helm" / "sms-pumping-detector" / "values.yaml").read_text())
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["services"]
    groups = {STREAM_GROUP, SEND_GROUP, values["worker"]["groupId"], values["sendWorker"]["groupId"]}
    for service in compose.values():
        environment = service.get("environment") or {}
        groups |= {
            environment[n] for n in ("DETECTOR_GROUP_ID", "DETECTOR_SEND_GROUP_ID") if n in environment
        }
    patterns = [
        pattern
        for expr in dashboard_expressions() + alert_expressions()
        for pattern in regex_matchers(expr, "kafka_consumergroup_lag", "consumergroup")
    ]
    assert len(patterns) >= 3, "the lag panel and both halves of the lag alert"
    for pattern in patterns:
        for group in groups:
            assert re.fullmatch(pattern, group), f"{group} is not watched by consumergroup=~{pattern!r}"
        assert not re.fullmatch(pattern, "another-app")


def exported(text: str) -> dict[str, set[str]]:
    """Every series name a scrape offers -> the label names seen on its samples. A family without samples
    yet (a labelled counter never incremented) still declares its names, with no labels known."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}  # fmt: skip
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in suffixes.get(family.type, ("",)):
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


# --- the live check --------------------------------------------------------------------------------------


@pytest.fixture
async def double() -> AsyncIterator[EightByEightDouble]:
    from tests.test_send_worker import API_KEY

    async with EightByEightDouble(api_key=API_KEY) as running:
        yield running


@pytest.mark.kafka
@pytest.mark.redis
async def test_every_metric_named_is_one_the_workers_export(
    kafka_bootstrap: str, redis_url: str, double: EightByEightDouble, tmp_path: Path
) -> None:
    from tests.test_send_worker import API_KEY, FAST_ENV, SUB_ACCOUNT, produce
    from tests.test_send_worker import WorkerProcess as SendWorkerProcess
    from tests.test_stream import WorkerProcess, eventually, worker_env

    tag = uuid.uuid4().hex[:8]
    topics = TopicNames(
        requests=f"dash-{tag}.requests", feedback=f"dash-{tag}.feedback", decisions=f"dash-{tag}.decisions",
        dead_letters=f"dash-{tag}.dead-letters", feedback_retry=f"dash-{tag}.feedback-retry",
    )  # fmt: skip
    outcomes = f"dash-{tag}.outcomes"
    await ensure_topics(kafka_bootstrap, [*topics.all(), outcomes], 2, 1)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: dash-1\nlists:\n  deny_ips: [198.51.100.0/24]\n")
    # Counters in a namespace of this test's own: country counts that other tests left on the shared
    # server would otherwise block every request, and no send would reach 8x8.
    store = f"{redis_url}?namespace=dash-{tag}:"
    env = worker_env(
        kafka_bootstrap, store, topics, f"dash-detect-{tag}",
        DETECTOR_POLICY=str(policy),
        DETECTOR_TOPIC_OUTCOMES=outcomes,
        DETECTOR_SEND_GROUP_ID=f"dash-send-{tag}",
        DETECTOR_SEND_LEDGER=redis_url,
        DETECTOR_SEND_LEDGER_PREFIX=f"dash:{tag}:",
        EIGHTBYEIGHT_SUBACCOUNT_ID=SUB_ACCOUNT,
        EIGHTBYEIGHT_API_KEY=API_KEY,
        EIGHTBYEIGHT_BASE_URL=double.base_url,
        **{name: value for name, value in FAST_ENV.items() if name.startswith("DETECTOR_SEND_")},
    )  # fmt: skip
    worker = WorkerProcess("worker", tmp_path, env)
    sender = SendWorkerProcess("sender", tmp_path, env)
    processes = [worker, sender]

    def alive() -> None:
        for process in processes:
            process.assert_running()

    async def scrape() -> dict[str, set[str]]:
        names: dict[str, set[str]] = {}
        async with httpx.AsyncClient(timeout=5) as client:
            for process in processes:
                response = await client.get(f"http://127.0.0.1:{process.metrics_port}/metrics")
                response.raise_for_status()
                for name, labels in exported(response.text).items():
                    names.setdefault(name, set()).update(labels)
        return names

    async def settled() -> bool:
        try:
            names = await scrape()
        except httpx.HTTPError:
            return False
        # Decisions of both kinds, an outcome, a dead letter and a batch: the labelled series exist.
        return all(names.get(n) for n in ("detector_decisions_total", "detector_send_outcomes_total",
                                          "detector_dead_letters_total", "detector_batch_seconds_bucket",
                                          "detector_send_8x8_requests_total"))  # fmt: skip

    base = 1_795_420_800.0
    events = [
        {"type": "otp_request", "request_id": f"{tag}-{n}", "ts": base + n, "phone": f"+4474009{n:05d}",
         "client_ip": ip, "flow": "login", "message": {"text": f"Your code is {300000 + n}"}}
        for n, ip in enumerate(["203.0.113.7", "203.0.113.8", "198.51.100.9"])
    ]  # fmt: skip
    try:
        await produce(kafka_bootstrap, topics.requests, events)
        await produce(kafka_bootstrap, topics.requests, [{"type": "otp_request", "request_id": 7}])
        await eventually(
            settled, 120, "labelled metrics on both workers' /metrics", alive=alive, interval=0.5
        )
        names = await scrape()
    finally:
        for process in processes:
            process.close()

    assert not set(PENDING) & set(names), "now exported: move them out of PENDING"
    checked = 0
    for expr in dashboard_expressions() + alert_expressions():
        for metric, labels in selectors(expr):
            if metric in EXTERNAL or metric in PENDING:
                continue
            assert metric in names, f"{metric} (in {expr!r}) is not exported by the workers"
            if names[metric]:  # label names known from samples
                assert labels <= names[metric], f"{metric} has no label {sorted(labels - names[metric])}"
            checked += 1
    assert checked >= 20
