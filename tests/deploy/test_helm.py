"""The Helm chart: lint, render with every values file in ci/, validate every object against Kubernetes'
schemas (KEDA's and the Prometheus operator's for their kinds), and check what the pods are given."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from detector.policy import load_policy
from tests.deploy.cli_env import REPO, read_by_detector
from tests.deploy.tools import helm, run

CHART = REPO / "deploy" / "helm" / "sms-pumping-detector"
CRD_SCHEMAS = REPO / "deploy" / "helm" / "crd-schemas"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion), the newest kubernetes-validate knows.
# The first test may build Helm (`go install`, minutes on a new machine; `make test` builds it beforehand).
pytestmark = pytest.mark.timeout(1200)
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
KUBE_RENDER = "1.31.0"
RELEASE = "otp"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
SECRET_VARIABLES = (
    "DETECTOR_HASH_KEY",
    "EIGHTBYEIGHT_API_KEY",
    "DETECTOR_API_TOKENS",
    "DETECTOR_CAPTCHA_SECRET",
)


def template(values: Path | None, *extra: str) -> list[dict[str, Any]]:
    args = ["-f", str(values)] if values else []
    # --kube-version: a helm built by `go install` assumes Kubernetes 1.20, older than the chart allows.
    done = run(
        helm(),
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        "fraud",
        "--kube-version",
        KUBE_RENDER,
        *args,
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def rendered(name: str) -> list[dict[str, Any]]:
    return template(CHART / "ci" / name)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def by_name(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [
        o for o in of_kind(objects, kind) if o["metadata"]["name"] == f"{RELEASE}-{CHART.name}{suffix}"
    ]
    return found


def containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) of every container the chart runs."""
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"], c)
        for o in objects
        if o["kind"] in WORKLOADS
        for c in o["spec"]["template"]["spec"]["containers"]
    ]


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for path in CRD_SCHEMAS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schema = version["schema"]["openAPIV3Schema"]
            jsonschema.Draft7Validator.check_schema(schema)
            validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def test_ci_values_cover_every_autoscaling_mode() -> None:
    modes = {yaml.safe_load(p.read_text())["worker"]["autoscaling"]["mode"] for p in CI_VALUES}
    assert modes == {"keda", "hpa", "none"}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_lint(values: Path) -> None:
    done = run(helm(), "lint", "--strict", str(CHART), "-f", str(values))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_its_schema(values: Path, version: str) -> None:
    objects = rendered(values.name)
    assert objects
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        custom = crd_validators().get((obj["apiVersion"], obj["kind"]))
        if custom is not None:
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in custom.iter_errors(obj)]
            assert not errors, f"{where}: {errors}"
        else:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} on Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_a_misspelt_field_fails_the_custom_schemas() -> None:
    scaled = by_name(rendered("keda.yaml"), "ScaledObject", "-worker")
    broken = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 3}}
    assert not crd_validators()[("keda.sh/v1alpha1", "ScaledObject")].is_valid(broken)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_every_environment_variable_is_one_the_cli_reads(values: Path) -> None:
    known = read_by_detector()
    for workload, _, container in containers(rendered(values.name)):
        unknown = {e["name"] for e in container.get("env", [])} - known
        assert not unknown, f"{workload} sets variables the detector does not read: {sorted(unknown)}"


def test_keda_scales_workers_on_lag_up_to_the_partitions() -> None:
    objects = rendered("keda.yaml")
    scaled = by_name(objects, "ScaledObject", "-worker")
    worker = by_name(objects, "Deployment", "-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert scaled["spec"]["maxReplicaCount"] == 6, "ci/keda.yaml asks for 24 on 6 partitions"
    (trigger,) = scaled["spec"]["triggers"]
    env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == env["DETECTOR_GROUP_ID"]
    assert trigger["metadata"]["topic"] == env["DETECTOR_TOPIC_REQUESTS"]
    assert trigger["metadata"]["bootstrapServers"] == env["DETECTOR_KAFKA_BROKERS"]
    assert "replicas" not in worker["spec"], "the autoscaler owns the replica count"
    assert not of_kind(objects, "HorizontalPodAutoscaler")


def test_without_keda_an_hpa_scales_the_workers() -> None:
    objects = rendered("hpa.yaml")
    hpa = by_name(objects, "HorizontalPodAutoscaler", "-worker")
    assert (
        hpa["spec"]["scaleTargetRef"]["name"] == by_name(objects, "Deployment", "-worker")["metadata"]["name"]
    )
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert not of_kind(objects, "ScaledObject")


def test_fixed_replicas_and_only_the_request_workers() -> None:
    objects = rendered("minimal.yaml")
    (worker,) = of_kind(objects, "Deployment")
    assert worker["spec"]["replicas"] == 3
    assert not of_kind(objects, "ScaledObject") + of_kind(objects, "HorizontalPodAutoscaler")
    assert not of_kind(objects, "PodDisruptionBudget")


def test_disruption_budgets_cover_each_component() -> None:
    objects = rendered("keda.yaml")
    budgets = of_kind(objects, "PodDisruptionBudget")
    selected = {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for b in budgets}
    assert selected == {"worker", "send-worker", "serve"}
    for budget in budgets:
        labels = budget["spec"]["selector"]["matchLabels"]
        matching = [d for d in of_kind(objects, "Deployment")
                    if labels.items() <= d["spec"]["template"]["metadata"]["labels"].items()]  # fmt: skip
        assert len(matching) == 1, budget["metadata"]["name"]


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_pods_run_unprivileged_with_probes_and_resources(values: Path) -> None:
    for workload, pod, container in containers(rendered(values.name)):
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, workload
        assert security["readOnlyRootFilesystem"] is True, workload
        assert security["allowPrivilegeEscalation"] is False, workload
        assert security["capabilities"]["drop"] == ["ALL"], workload
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], workload
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", workload
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", workload
        ports = {p["name"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["port"] in ports, workload
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{workload}: nothing else is writable"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_secrets_arrive_as_files_never_as_values(values: Path) -> None:
    objects = rendered(values.name)
    secret_names = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    for workload, pod, container in containers(objects):
        env = {e["name"]: e for e in container["env"]}
        for name in SECRET_VARIABLES:
            assert name not in env, f"{workload}: {name} as a plain value"
        files = {name: e["value"] for name, e in env.items() if name.endswith("_FILE")}
        assert "DETECTOR_HASH_KEY_FILE" in files, workload
        volumes = {v["name"]: v for v in pod["volumes"]}
        for name, path in files.items():
            (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
            secret = volumes[mount["name"]]["secret"]
            key = path.removeprefix(mount["mountPath"] + "/")
            assert key in {item["path"] for item in secret["items"]}, f"{workload}: {name}"
            if secret["secretName"] in secret_names:  # made by the chart, not an existing one
                assert key in secret_names[secret["secretName"]]["stringData"], f"{workload}: {name}"


def test_the_policy_configmap_is_a_valid_policy(tmp_path: Path) -> None:
    objects = rendered("keda.yaml")
    configmap = by_name(objects, "ConfigMap", "-policy")
    policy = tmp_path / "policy.yaml"
    policy.write_text(configmap["data"]["policy.yaml"])
    assert load_policy(str(policy)).version == "ci-1"
    for workload, _, container in containers(objects):
        env = {e["name"]: e.get("value") for e in container["env"]}
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "policy"]
        assert env["DETECTOR_POLICY"] == f"{mount['mountPath']}/policy.yaml", workload


def test_the_service_monitor_finds_every_metrics_port() -> None:
    objects = rendered("keda.yaml")
    monitor = by_name(objects, "ServiceMonitor", "")
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    watched = [s for s in of_kind(objects, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in watched}
    assert components == {"worker", "send-worker", "serve"}
    for service in watched:
        assert ports & {p["name"] for p in service["spec"]["ports"]}, service["metadata"]["name"]


def test_a_missing_hash_key_is_refused_with_a_message() -> None:
    done = run(
        helm(),
        "template",
        "otp",
        str(CHART),
        "--kube-version",
        KUBE_RENDER,
        "--set",
        "sendWorker.enabled=false,serve.enabled=false",
    )
    assert done.returncode != 0
    assert "secrets.hashKey is required" in done.stderr


def test_the_components_that_end_challenges_read_the_challenges_and_check_captcha_tokens() -> None:
    objects = rendered("keda.yaml")
    by_component = {
        workload: {e["name"]: e.get("value") for e in container["env"]}
        for workload, _, container in containers(objects)
    }
    worker = next(env for workload, env in by_component.items() if workload.endswith("detector-worker"))
    serve = next(env for workload, env in by_component.items() if workload.endswith("-serve"))
    send = next(env for workload, env in by_component.items() if workload.endswith("-send-worker"))
    assert worker["DETECTOR_TOPIC_CHALLENGES"] == "otp.challenges"
    for env in (worker, serve):
        assert env["DETECTOR_CAPTCHA_PROVIDER"] == "turnstile"
        assert env["DETECTOR_CAPTCHA_SECRET_FILE"].endswith("/captcha-secret")
    assert not any(name.startswith("DETECTOR_CAPTCHA") for name in send), "the send worker has no use for it"
    minimal = {workload: c["env"] for workload, _, c in containers(rendered("minimal.yaml"))}
    assert not any(e["name"].startswith("DETECTOR_CAPTCHA") for env in minimal.values() for e in env)


def test_a_captcha_provider_without_its_secret_is_refused_with_a_message() -> None:
    done = run(helm(), "template", RELEASE, str(CHART), "--kube-version", KUBE_RENDER,
               "-f", str(CHART / "ci" / "keda.yaml"), "--set", "secrets.captchaSecret=")  # fmt: skip
    assert done.returncode != 0
    assert "secrets.captchaSecret is required" in done.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("worker.autoscaling.mod=keda", "Additional property mod is not allowed"),  # a misspelt key
        ("worker.autoscaling.mode=lag", "worker.autoscaling.mode"),
        ("redis.url=localhost:6379", "redis.url"),
        ("captcha.provider=recaptha", "captcha.provider"),
    ],
)
def test_the_values_schema_refuses_mistakes(setting: str, complaint: str) -> None:
    done = run(helm(), "template", RELEASE, str(CHART), "--kube-version", KUBE_RENDER,
               "-f", str(CHART / "ci" / "keda.yaml"), "--set", setting)  # fmt: skip
    assert done.returncode != 0
    assert complaint in done.stderr
