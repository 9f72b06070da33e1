from pathlib import Path

import pytest

from detector.policy import PolicyError, load_policy, read_cidr_file


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
        ("score: {delay_at: 40, challenge_at: 40}\n", ["$.score.delay_at", "below challenge_at (40)"]),
        ("score: {delay_at: 55, challenge_at: 40}\n", ["$.score.delay_at"]),
        ("score: {delay_at: -5}\n", ["$.score.delay_at", "-5"]),
        ("score: {delay_at: soon}\n", ["$.score.delay_at"]),
        ("score: {delay_for: 0s}\n", ["$.score.delay_for"]),
        ("score: {delay_for: half a minute}\n", ["$.score.delay_for"]),
        ("score: {tresholds: 1}\n", ["tresholds", "$.score"]),
        ("rules:\n  velocity:\n    ip_10m: {threshold: -1}\n", ["$.rules.velocity.ip_10m.threshold"]),
        ("rules:\n  velocity:\n    ip_10m: {window: 10 minutes}\n", ["$.rules.velocity.ip_10m.window"]),
        ("rules:\n  velocity:\n    ip_10m: {dimension: planet}\n", ["$.rules.velocity.ip_10m.dimension"]),
        ("lists: {deny_phone_countries: [gb]}\n", ["$.lists.deny_phone_countries[0]"]),
        ("lists: {deny_number_types: [satellite]}\n", ["$.lists.deny_number_types[0]"]),
        ("rules: {msisdn_rate_limit: {limit: ten}}\n", ["$.rules.msisdn_rate_limit.limit"]),
        ("state: {on_error: maybe}\n", ["$.state.on_error"]),
        (
            "rules: {never_verified_destination: {min_requests: 0}}\n",
            ["$.rules.never_verified_destination.min_requests"],
        ),
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


def test_unquoted_off_turns_a_rule_off(tmp_path: Path) -> None:
    policy = load_policy(
        _write(tmp_path, "rules:\n  upstream: {mode: off}\n  velocity:\n    ip_10m: {mode: off}\n")
    )
    assert policy.rules.upstream.mode == "off" and policy.rules.velocity["ip_10m"].mode == "off"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "mode: loud\n"
        "trusted_proxies: [10.0.0.0/33]\n"
        "score: {block_at: high}\n"
        "rules:\n  msisdn_rate_limit: {limit: ten}\n  velocity:\n    ip_10m: {window: 10 minutes}\n"
    )
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, text))
    where = [
        "$.mode",
        "$.trusted_proxies[0]",
        "$.score.block_at",
        "$.rules.msisdn_rate_limit.limit",
        "$.rules.velocity.ip_10m.window",
    ]
    located = sorted(problem.rsplit(" - at ", 1)[1] for problem in error.value.problems)
    assert located == sorted(f"`{name}`" for name in where)
    assert f"{len(where)} problems" in str(error.value) and str(tmp_path) in str(error.value)


def test_a_choice_lists_its_valid_values(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, "mode: loud\nstate: {on_error: maybe}\n"))
    assert error.value.problems == (
        "must be one of enforce, shadow, not 'loud' - at `$.mode`",
        "must be one of degrade, open, challenge, block, not 'maybe' - at `$.state.on_error`",
    )


def test_a_misspelt_key_gets_the_closest_names(tmp_path: Path) -> None:
    text = "score: {challenge_a: 50}\nrules:\n  velocity:\n    ip_10m: {treshold: 5}\n  velocityy: {}\n"
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, text))
    assert error.value.problems == (
        "unknown key 'challenge_a' (did you mean `challenge_at`?) - at `$.score`",
        "unknown key 'treshold' (did you mean `threshold`?) - at `$.rules.velocity.ip_10m`",
        "unknown key 'velocityy' (did you mean `velocity`?) - at `$.rules`",
    )
    with pytest.raises(PolicyError, match="valid keys: challenge_at, block_at, velocity_cap"):
        load_policy(_write(tmp_path, "score: {zzz: 1}\n"))


def test_list_files_must_exist_and_parse(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("# datacenters\n192.0.2.0/24\n\n2001:db8::/32  # v6\n")
    bad.write_text("192.0.2.0/24\nnot-an-ip\n")
    not_mmdb = tmp_path / "geo.mmdb"
    not_mmdb.write_bytes(b"not a database")
    assert read_cidr_file(str(good)) == ["192.0.2.0/24", "2001:db8::/32"]
    text = (
        f"lists:\n  datacenter_ip_files: [{good}, {bad}]\n  anonymizer_ip_files: [{tmp_path / 'none.txt'}]\n"
        f"  geoip_database: {not_mmdb}\n"
    )
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, text))
    bad_line, missing, not_geoip = error.value.problems
    assert bad_line == (
        f"{bad}:2: 'not-an-ip' is not an IP address or CIDR block - at `$.lists.datacenter_ip_files[1]`"
    )
    assert missing == (
        f"cannot read {tmp_path / 'none.txt'}: No such file or directory"
        " - at `$.lists.anonymizer_ip_files[0]`"
    )
    assert not_geoip.startswith(f"{not_mmdb} is not a MaxMind database")
    assert load_policy(
        _write(tmp_path, f"lists: {{datacenter_ip_files: [{good}]}}\n")
    ).lists.datacenter_ip_files
