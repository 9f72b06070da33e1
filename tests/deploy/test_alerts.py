"""The alert rules: valid for Prometheus, each alert covered by promtool unit tests that make it fire and stay
quiet. The metrics they name are checked against live workers in test_dashboard.py."""

from __future__ import annotations

import yaml

from tests.deploy.cli_env import REPO
from tests.deploy.tools import promtool, run

ALERTS = REPO / "deploy" / "alerts"
RULES = ALERTS / "detector.rules.yaml"
UNIT_TESTS = ALERTS / "detector.test.yaml"
REQUIRED = {
    "DetectorTargetDown",  # a worker down
    "DetectorConsumerLagGrowing",
    "DetectorStoreUnavailable",  # degraded or unavailable store
    "DetectorDecisionsDegraded",
    "DetectorDeadLetterBurst",
    "DetectorBlockRateSpike",  # an attack in progress
    "Detector8x8ErrorRate",
    "DetectorSendsInDoubt",
}


def rules() -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_the_rules_load_in_prometheus() -> None:
    done = run(promtool(), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_and_stays_quiet_in_promtool_unit_tests() -> None:
    done = run(promtool(), "test", "rules", str(UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_there_and_tested_both_ways() -> None:
    assert {rule["alert"] for rule in rules()} == REQUIRED
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == REQUIRED, f"never seen firing: {REQUIRED - fired}"
    assert quiet == REQUIRED, f"never seen quiet: {REQUIRED - quiet}"
