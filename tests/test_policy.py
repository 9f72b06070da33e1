from pathlib import Path

import pytest
from click.testing import CliRunner

from detector.cli import main
from detector.policy import PolicyError, load_policy


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_default_policy_loads() -> None:
    policy = load_policy()
    assert policy.mode == "enforce"
    assert policy.rules.msisdn_rate_limit.limit == 10
    assert policy.rules.msisdn_rate_limit.window == "30m"


def test_a_file_sets_only_what_it_changes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "version: mine-1\nmode: shadow\ntrusted_proxies: [10.0.0.0/8]\n"
        "rules:\n  velocity:\n    ip_10m: {threshold: 99}\n",
    )
    policy = load_policy(path)
    default = load_policy()
    assert (policy.version, policy.mode, policy.trusted_proxies) == ("mine-1", "shadow", ("10.0.0.0/8",))
    assert policy.rules.velocity["ip_10m"].threshold == 99
    assert policy.rules.velocity["ip_10m"].points == default.rules.velocity["ip_10m"].points
    assert policy.rules.velocity["subnet_1h"] == default.rules.velocity["subnet_1h"]
    assert policy.score == default.score


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("mode: loud\n", ["mode"]),
        ("trusted_proxies: [10.0.0.0/33]\n", ["trusted_proxies[0]"]),
        ("score: {challenge_at: 90, block_at: 50}\n", ["$.score"]),
        ("score: {tresholds: 1}\n", ["tresholds", "$.score"]),
        ("rules:\n  velocity:\n    ip_10m: {threshold: -1}\n", ["$.rules.velocity.ip_10m.threshold"]),
        ("rules:\n  velocity:\n    ip_10m: {window: 10 minutes}\n", ["$.rules.velocity.ip_10m.window"]),
        ("rules:\n  velocity:\n    ip_10m: {dimension: planet}\n", ["$.rules.velocity.ip_10m.dimension"]),
        ("lists: {deny_phone_countries: [gb]}\n", ["$.lists.deny_phone_countries[0]"]),
        ("lists: {deny_number_types: [satellite]}\n", ["$.lists.deny_number_types[0]"]),
        ("rules: {msisdn_rate_limit: {limit: ten}}\n", ["$.rules.msisdn_rate_limit.limit"]),
        ("state: {on_error: maybe}\n", ["$.state.on_error"]),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, names: list[str]) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, text))
    for name in names:
        assert name in str(error.value)


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(_write(tmp_path, "mode: [unclosed\n"))
    with pytest.raises(PolicyError, match="mapping"):
        load_policy(_write(tmp_path, "- a\n- b\n"))


def test_policy_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(main, ["policy", "check", str(_write(tmp_path, "version: x\n"))])
    assert good.exit_code == 0 and "ok" in good.output
    bad = runner.invoke(main, ["policy", "check", str(_write(tmp_path, "mode: loud\n"))])
    assert bad.exit_code != 0 and "$.mode" in bad.output


def test_unquoted_off_turns_a_rule_off(tmp_path: Path) -> None:
    policy = load_policy(
        _write(tmp_path, "rules:\n  upstream: {mode: off}\n  velocity:\n    ip_10m: {mode: off}\n")
    )
    assert policy.rules.upstream.mode == "off" and policy.rules.velocity["ip_10m"].mode == "off"
