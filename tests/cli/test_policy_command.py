"""`detector policy check` and what a bad policy does to the commands that load one."""

from pathlib import Path

from click.testing import CliRunner

from detector.cli import main


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_a_good_policy_is_ok(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["policy", "check", str(_write(tmp_path, "version: mine-2\n"))])
    assert result.exit_code == 0 and "ok (version mine-2, mode enforce)" in result.output


def test_every_problem_in_one_run(tmp_path: Path) -> None:
    text = (
        "mode: loud\n"
        "score: {challenge_a: 50}\n"
        f"lists: {{datacenter_ip_files: [{tmp_path / 'missing.txt'}]}}\n"
        "rules:\n  velocity:\n    ip_10m: {dimension: planet}\n"
    )
    result = CliRunner().invoke(main, ["policy", "check", str(_write(tmp_path, text))])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "4 problems" in result.output
    assert "must be one of enforce, shadow, not 'loud' - at `$.mode`" in result.output
    assert "did you mean `challenge_at`?" in result.output
    assert "one of ip, subnet, msisdn, prefix, phone_country" in result.output
    assert f"cannot read {tmp_path / 'missing.txt'}: No such file or directory" in result.output


def test_replay_with_a_missing_list_file_says_so(tmp_path: Path) -> None:
    """It used to pass the check and then crash with a traceback in the engine."""
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type": "otp_request", "request_id": "r1", "ts": 1793577600, "phone": "+447400123456"}\n'
    )
    policy = _write(tmp_path, f"lists: {{anonymizer_ip_files: [{tmp_path / 'gone.txt'}]}}\n")
    result = CliRunner().invoke(main, ["replay", str(events), "--policy", str(policy)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"invalid policy {policy}: cannot read {tmp_path / 'gone.txt'}" in result.output
    assert "$.lists.anonymizer_ip_files[0]" in result.output
