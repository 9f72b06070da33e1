"""The container image: built with podman on a Debian base made by mmdebstrap (scripts/image.sh; the base is
cached in ~/.cache/sms-pumping-detector), then run: the CLI answers, as an unprivileged user, with no build
or test tooling inside, and a request worker runs on a read-only root filesystem against the test broker."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.deploy.cli_env import REPO
from tests.deploy.tools import SCRIPTS

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

TAG = "localhost/sms-pumping-detector:test"


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(SCRIPTS / "image.sh"), "podman", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def run_image(*args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    override = ["--entrypoint", entrypoint] if entrypoint else []
    return podman("run", "--rm", "--pull=never", "--network=host", *override, TAG, *args)


@pytest.fixture(scope="module")
def image() -> str:
    # The first build makes the base (about a minute) and installs the wheels (a few minutes); later ones
    # reuse the cached base and podman's layer cache.
    done = subprocess.run(["bash", str(SCRIPTS / "image.sh"), "build", TAG], capture_output=True, text=True,
                          timeout=1500, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return TAG


def test_the_entrypoint_is_the_cli(image: str) -> None:
    done = run_image("--help")
    assert done.returncode == 0, done.stderr
    for command in ("worker", "send-worker", "replay", "policy"):
        assert command in done.stdout
    (config,) = json.loads(podman("image", "inspect", image).stdout)
    assert config["Config"]["Entrypoint"] == ["detector"]


def test_it_runs_as_an_unprivileged_user(image: str) -> None:
    done = run_image("-u", entrypoint="id")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) != 0
    (config,) = json.loads(podman("image", "inspect", image).stdout)
    assert config["Config"]["User"].split(":")[0] not in ("", "0", "root")


def test_only_runtime_dependencies_are_inside(image: str) -> None:
    probe = (
        "import importlib.util as u, os; "
        "print([m for m in ('pytest', 'mypy', 'ruff', 'hypothesis', 'pip', 'setuptools') if u.find_spec(m)], "
        "os.path.exists('/src'))"
    )
    done = run_image("-c", probe, entrypoint="python3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] False"
    done = run_image(
        "-c", "import detector.stream.app, detector.send.worker, faust, redis", entrypoint="python3"
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"detector-test-{uuid.uuid4().hex[:8]}"
    yield name
    podman("rm", "--force", "--time", "5", name)


@pytest.mark.kafka
@pytest.mark.redis
def test_a_worker_runs_on_a_read_only_root_filesystem(
    image: str, kafka_bootstrap: str, redis_url: str, container_name: str
) -> None:
    from detector.testing.services import free_port

    port = free_port()
    tag = uuid.uuid4().hex[:8]
    env = {
        "DETECTOR_KAFKA_BROKERS": kafka_bootstrap,
        "DETECTOR_STORE": redis_url,
        "DETECTOR_HASH_KEY": f"image-test-{uuid.uuid4().hex}",
        "DETECTOR_GROUP_ID": f"image-{tag}",
        "DETECTOR_TOPIC_REQUESTS": f"image-{tag}.requests",
        "DETECTOR_TOPIC_FEEDBACK": f"image-{tag}.feedback",
        "DETECTOR_TOPIC_DECISIONS": f"image-{tag}.decisions",
        "DETECTOR_TOPIC_DEAD_LETTERS": f"image-{tag}.dead-letters",
        "DETECTOR_TOPIC_FEEDBACK_RETRY": f"image-{tag}.feedback-retry",
        "DETECTOR_TOPIC_PARTITIONS": "1",
        "DETECTOR_TOPIC_REPLICATION": "1",
        "DETECTOR_METRICS_PORT": str(port),
        "DETECTOR_METRICS_HOST": "127.0.0.1",
    }
    flags = [arg for name, value in env.items() for arg in ("--env", f"{name}={value}")]
    started = podman("run", "--detach", "--name", container_name, "--pull=never", "--network=host",
                     "--read-only", "--tmpfs", "/tmp", *flags, image, "worker")  # fmt: skip
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 120
    while True:
        state = podman("inspect", "--format", "{{.State.Running}}", container_name).stdout.strip()
        assert state == "true", podman("logs", container_name).stdout[-3000:]
        try:  # ready: its consumer joined the group (a worker stopped while starting is tests/test_exit.py's)
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, podman("logs", container_name).stdout[-3000:]
        time.sleep(0.5)
    assert "detector_events_in" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    stopped = podman("stop", "--time", "60", container_name, timeout=90)  # SIGTERM, then the exit status
    assert stopped.returncode == 0, stopped.stderr
    status = podman("inspect", "--format", "{{.State.ExitCode}}", container_name).stdout.strip()
    logs = podman("logs", container_name)
    assert status == "0", logs.stdout[-3000:] + logs.stderr[-3000:]


DOUBLE_TAG = "localhost/sms-pumping-detector-double:test"


@pytest.fixture(scope="module")
def double_image(image: str) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPTS / "image.sh"), "build", DOUBLE_TAG, "eightbyeight-double"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return DOUBLE_TAG


async def test_the_compose_8x8_double_image_serves_the_contract(
    double_image: str, container_name: str
) -> None:
    """compose.yaml's 8x8 double: our client's send is queued with the right key, refused with a wrong one."""
    from detector.send.eightbyeight import EightByEightClient, EightByEightConfig, Queued, SmsMessage
    from detector.send.secrets import ApiKey
    from detector.testing.eightbyeight_double import specs_dir
    from detector.testing.services import free_port

    port, key = free_port(), f"image-{uuid.uuid4().hex}"
    started = podman("run", "--detach", "--name", container_name, "--pull=never", "--network=host",
                     "--read-only", "--env", f"EIGHTBYEIGHT_API_KEY={key}",
                     "--volume", f"{specs_dir()}:/specs:ro", double_image, "--port", str(port))  # fmt: skip
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while "listening" not in podman("logs", container_name).stdout:
        assert podman("inspect", "--format", "{{.State.Running}}", container_name).stdout.strip() == "true", (
            podman("logs", container_name).stderr[-3000:]
        )
        assert time.monotonic() < deadline, "the double did not start"
        time.sleep(0.2)

    def client(api_key: str) -> EightByEightClient:
        return EightByEightClient(
            EightByEightConfig("acme-otp", ApiKey(api_key), base_url=f"http://127.0.0.1:{port}")
        )

    message = SmsMessage("+6591234567", "Your code is 123456", "req-image-1", client_ip="203.0.113.9")
    async with client(key) as good, client("not-the-key") as bad:
        assert isinstance(await good.send(message), Queued)
        refused = await bad.send(message)
    assert not isinstance(refused, Queued)
    assert getattr(refused, "status", None) == 401
