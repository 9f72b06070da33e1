"""The long-running commands say everything that is missing in one go, before touching Kafka."""

from pathlib import Path

from click.testing import CliRunner

from detector.cli import main
from detector.testing.services import free_port


def test_send_worker_lists_the_sub_account_and_the_key_together() -> None:
    result = CliRunner().invoke(main, ["send-worker"])
    assert result.exit_code == 2
    assert "EIGHTBYEIGHT_SUBACCOUNT_ID" in result.output and "EIGHTBYEIGHT_API_KEY_FILE" in result.output


def test_worker_lists_the_policy_and_the_hash_key_together(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("mode: loud\n")
    brokers = f"127.0.0.1:{free_port()}"  # nobody there: the command must stop before trying it
    result = CliRunner().invoke(
        main, ["worker", "--policy", str(policy), "--store", "redis://127.0.0.1:6379/0", "--brokers", brokers]
    )
    assert result.exit_code == 1
    assert "must be one of enforce, shadow" in result.output and "DETECTOR_HASH_KEY" in result.output
