"""`detector replay` on a store that does not answer stops at once, saying what to fix."""

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from detector.cli import main
from detector.testing.services import free_port
from tests.factories import T0, request

HASH_KEY = "a-local-test-key-of-32-characters"


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps(request(request_id=f"r{i}", ts=T0 + i)) for i in range(20)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a hung Redis."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


def _replay(events: Path, store: str, tmp_path: Path) -> tuple[int, str, Path]:
    decisions = tmp_path / "decisions.jsonl"
    result = CliRunner().invoke(
        main,
        ["replay", str(events), "--store", store, "--decisions", str(decisions)],
        env={"DETECTOR_HASH_KEY": HASH_KEY},
    )
    return result.exit_code, result.output, decisions


def test_a_refused_store_exits_non_zero(events: Path, tmp_path: Path) -> None:
    store = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    code, output, decisions = _replay(events, store, tmp_path)
    assert code == 1
    assert f"the store {store} does not answer" in output and "DETECTOR_STORE" in output
    assert not decisions.exists() or decisions.read_bytes() == b""  # nothing decided with state_unavailable


def test_a_store_that_never_answers_exits_non_zero(events: Path, tmp_path: Path, silent_server: str) -> None:
    code, output, _ = _replay(events, silent_server, tmp_path)
    assert code == 1 and "does not answer" in output and "did not answer within" in output


def test_the_password_stays_out_of_the_message(events: Path, tmp_path: Path) -> None:
    store = f"redis://user:s3cret-pass@127.0.0.1:{free_port()}/0"
    code, output, _ = _replay(events, store, tmp_path)
    assert code == 1 and "s3cret-pass" not in output and "user:****@" in output


@pytest.mark.redis
def test_a_live_store_replays(events: Path, tmp_path: Path, redis_url: str) -> None:
    code, output, decisions = _replay(events, redis_url + "?namespace=cli-replay-" + tmp_path.name, tmp_path)
    assert code == 0, output
    assert len(decisions.read_bytes().splitlines()) == 20


def test_evaluate_with_a_refused_store_exits_non_zero(events: Path) -> None:
    store = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(
        main, ["evaluate", str(events), "--store", store], env={"DETECTOR_HASH_KEY": HASH_KEY}
    )
    assert result.exit_code == 1 and f"the store {store} does not answer" in result.output
