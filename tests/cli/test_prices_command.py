"""`detector prices fetch` against the contract-checked 8x8 double: the account's prices become a price file
the detector loads; a refused key or a foreign currency writes nothing and says what to fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from detector.cli import main
from detector.prices import DEFAULT_KEY, PriceFileError, load_prices, parse_prices
from detector.testing.eightbyeight_double import PRICES, EightByEightDouble

KEY = "prices-test-key-not-a-real-one"
ACCOUNT = "0c4b8f52-6a1e-4d3b-9f2a-5e7d1c3b2a10"


@pytest.fixture
def double() -> Iterator[EightByEightDouble]:
    with EightByEightDouble(api_key=KEY).in_thread() as served:
        yield served


def _fetch(double: EightByEightDouble, out: Path, *extra: str, key: str = KEY) -> Result:
    env = {
        "EIGHTBYEIGHT_API_KEY": key,
        "EIGHTBYEIGHT_ACCOUNT_ID": ACCOUNT,
        "EIGHTBYEIGHT_SUBACCOUNT_ID": "acme-otp",
        "EIGHTBYEIGHT_BASE_URL": double.base_url,
    }
    return CliRunner().invoke(main, ["prices", "fetch", "--out", str(out), *extra], env=env)


def test_the_accounts_prices_become_a_price_file(double: EightByEightDouble, tmp_path: Path) -> None:
    double.prices = {"SG": [0.0099, 0.0125], "GB": [0.041], "KH": [0.2]}
    out = tmp_path / "prices" / "8x8.csv"
    result = _fetch(double, out)
    assert result.exit_code == 0, result.output
    table = load_prices(str(out))
    assert table.price_for("SG") == pytest.approx(0.0125)  # the dearest operator of the country
    assert table.price_for("gb") == pytest.approx(0.041)
    assert table.price_for("ZZ") == table.default == pytest.approx(0.2)  # unlisted: the dearest of all
    [seen] = [s for s in double.requests if s.operation == PRICES]
    assert seen.method == "GET" and double.violations == []


def test_a_refused_key_says_what_to_fix_and_writes_nothing(
    double: EightByEightDouble, tmp_path: Path
) -> None:
    out = tmp_path / "8x8.csv"
    result = _fetch(double, out, key="a-wrong-key-for-this-account")
    assert result.exit_code == 1
    assert "8x8 refused the API key (HTTP 401" in result.output
    assert "EIGHTBYEIGHT_API_KEY" in result.output and ACCOUNT in result.output
    assert "a-wrong-key-for-this-account" not in result.output
    assert not out.exists()


def test_another_currency_needs_a_rate(double: EightByEightDouble, tmp_path: Path) -> None:
    double.price_currency, double.prices = "SGD", {"SG": [0.02]}
    out = tmp_path / "8x8.csv"
    refused = _fetch(double, out)
    assert refused.exit_code == 1 and "quotes this account in SGD" in refused.output and not out.exists()
    converted = _fetch(double, out, "--usd-per-unit", "0.75")
    assert converted.exit_code == 0, converted.output
    assert load_prices(str(out)).price_for("SG") == pytest.approx(0.015)


def test_prices_that_are_not_prices_are_skipped(double: EightByEightDouble, tmp_path: Path) -> None:
    double.prices = {"SG": [float("nan"), 0.01], "GB": [-1.0], "FR": [float("inf")]}
    out = tmp_path / "8x8.csv"
    assert _fetch(double, out).exit_code == 0
    assert set(load_prices(str(out)).rows) == {"SG", DEFAULT_KEY} and load_prices(str(out)).default == 0.01
    double.prices = {"GB": [float("nan")]}
    nothing = _fetch(double, tmp_path / "none.csv")
    assert nothing.exit_code == 1 and "no outbound prices" in nothing.output
    assert not (tmp_path / "none.csv").exists()


def test_missing_settings_are_named_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["prices", "fetch", "--out", str(tmp_path / "p.csv")], env={})
    assert result.exit_code == 2
    for name in ("EIGHTBYEIGHT_SUBACCOUNT_ID", "EIGHTBYEIGHT_API_KEY", "EIGHTBYEIGHT_ACCOUNT_ID"):
        assert name in result.output


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("country,usd_per_sms\nGB,0.04\n", "needs a DEFAULT row"),
        ("country,price\nGB,0.04\n", "needs country and usd_per_sms"),
        ("country,usd_per_sms\nGB,-1\nDEFAULT,1\n", "p.csv:2: '-1' is not a price"),
        ("country,usd_per_sms\nGB,nan\nDEFAULT,1\n", "'nan' is not a price"),
        ("country,usd_per_sms\nGBR,0.1\nDEFAULT,1\n", "'GBR' is not an ISO 3166"),
        ("country,usd_per_sms\nGB,0.1\nGB,0.2\nDEFAULT,1\n", "GB is listed twice"),
        ("", "no header"),
    ],
)
def test_a_bad_price_file_names_its_lines(text: str, problem: str) -> None:
    with pytest.raises(PriceFileError, match=problem):
        parse_prices(text, "p.csv")


def test_the_bundled_table_is_the_fallback() -> None:
    bundled = load_prices()
    assert DEFAULT_KEY in bundled.rows and bundled.price_for("US") < bundled.price_for("KH")
