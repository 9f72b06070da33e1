"""deploy/compose.yaml, checked without a container engine: its structure, every variable it gives a
detector process is one the CLI reads, secrets arrive as files, and Prometheus scrapes every process."""

from __future__ import annotations

import functools
import posixpath
from typing import Any

import yaml

from detector.testing import eightbyeight_double
from tests.deploy.cli_env import REPO, read_by_detector
from tests.deploy.tools import promtool, run

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def detector_services() -> dict[str, dict[str, Any]]:
    """The services that run the `detector` CLI (the image's entrypoint), by name."""
    return {name: s for name, s in services().items()
            if s.get("image", "").startswith("localhost/sms-pumping-detector:")}  # fmt: skip


def by_command(command: str) -> list[str]:
    return [name for name, s in detector_services().items() if s["command"] == [command]]


def env(service: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (service.get("environment") or {}).items()}


def test_the_laptop_pipeline_is_all_there() -> None:
    kafka = env(services()["kafka"])
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"], "KRaft: the broker is its own controller"
    assert not [name for name in services() if "zookeeper" in name]
    assert {"kafka", "redis", "eightbyeight", "prometheus", "grafana"} <= set(services())
    assert len(by_command("worker")) == 2
    assert len(by_command("send-worker")) == 1
    assert len(by_command("serve")) == 1


def test_every_detector_variable_is_one_the_cli_reads() -> None:
    known = read_by_detector()
    for name, service in detector_services().items():
        unknown = set(env(service)) - known
        assert not unknown, f"{name} sets variables the detector does not read: {sorted(unknown)}"


def test_the_8x8_double_expects_the_key_the_send_worker_is_given() -> None:
    double = services()["eightbyeight"]
    parser_default = "EIGHTBYEIGHT_API_KEY"  # the double's --api-key-env default
    assert set(env(double)) <= {parser_default, eightbyeight_double.SPECS_ENV}
    assert f"--api-key-env {parser_default}" not in str(double.get("command", ""))
    (sender,) = by_command("send-worker")
    secret = compose()["secrets"]["eightbyeight-api-key"]["file"]
    assert env(double)[parser_default] == (DEPLOY / secret).read_text().strip()
    assert services()[sender]["network_mode"] == "service:eightbyeight"
    assert env(services()[sender])["EIGHTBYEIGHT_BASE_URL"].startswith("http://127.0.0.1:")


def test_secrets_arrive_as_files() -> None:
    declared = compose()["secrets"]
    for name, service in detector_services().items():
        variables = env(service)
        for plain in ("DETECTOR_HASH_KEY", "EIGHTBYEIGHT_API_KEY", "DETECTOR_API_TOKENS"):
            assert plain not in variables, f"{name}: {plain} as a value"
        assert "DETECTOR_HASH_KEY_FILE" in variables, name
        for variable, path in variables.items():
            if variable.endswith("_FILE"):
                secret = path.removeprefix("/run/secrets/")
                assert secret in service["secrets"], f"{name}: {variable} -> {path} is not mounted"
                assert (DEPLOY / declared[secret]["file"]).read_text().strip(), secret


def test_processes_run_read_only_and_report_readiness() -> None:
    for name, service in detector_services().items():
        assert service["read_only"] is True and "/tmp" in service["tmpfs"], name
        port = metrics_port(service)
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"]), name


def metrics_port(service: dict[str, Any]) -> str:
    variables = env(service)
    for variable in ("DETECTOR_METRICS_PORT", "DETECTOR_SEND_METRICS_PORT", "DETECTOR_SERVE_PORT"):
        if variable in variables:
            return variables[variable]
    raise AssertionError(f"no metrics port in {sorted(variables)}")


def test_prometheus_scrapes_every_process_and_loads_the_rules() -> None:
    done = run(promtool(), "check", "config", str(PROMETHEUS))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        t for job in config["scrape_configs"] for static in job["static_configs"] for t in static["targets"]
    }
    for name, service in detector_services().items():
        host = service.get("network_mode", "").removeprefix("service:") or name
        assert f"{host}:{metrics_port(service)}" in targets, name
    assert "kafka-exporter:9308" in targets, "consumer lag for the dashboard and the lag alert"
    # The rule files resolve from the config's directory both here and inside the container.
    mounts = dict(v.split(":")[:2] for v in services()["prometheus"]["volumes"])
    config_dir = posixpath.dirname(mounts["./prometheus/prometheus.yml"])
    for rules in config["rule_files"]:
        assert (PROMETHEUS.parent / rules).resolve().parent == DEPLOY / "alerts"
        assert posixpath.normpath(posixpath.join(config_dir, rules)).startswith(mounts["./alerts"] + "/")


def test_grafana_provisions_the_dashboard_from_prometheus() -> None:
    grafana = services()["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "detector.yaml").read_text())["providers"]
    assert mounts["./dashboards"] == provider["options"]["path"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert (DEPLOY / "dashboards" / "sms-pumping-detector.json").is_file()
