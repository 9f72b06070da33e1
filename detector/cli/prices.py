"""`detector prices fetch`: the account's own SMS prices from 8x8, as a price file for the policy."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from detector.cli.options import option
from detector.cli.vendor_options import vendor_config, vendor_options


@click.group()
def prices() -> None:
    """SMS prices per destination country (for the spend circuit breaker)."""


@prices.command("fetch")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The price file to write.",
)
@vendor_options(
    sub_account_help="8x8 sub-account whose prices to fetch (the one that sends the OTPs).",
    account_id_help="8x8 account id (a GUID; required).",
)
@option(
    "--usd-per-unit",
    "usd_per_unit",
    env="DETECTOR_PRICES_USD_PER_UNIT",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="USD for one unit of the account's currency, when 8x8 quotes it in another currency.",
)
def prices_fetch(out: str, usd_per_unit: float | None, **options: Any) -> None:
    """Fetch the account's outbound price list from 8x8 (GET /api/v1/accounts/{accountId}/prices) into OUT.

    One row per destination country: the dearest of its operators' prices, in USD; DEFAULT (for
    countries 8x8 did not list) is the dearest of all. Point the policy's `spend.prices_file` at OUT.
    The API key comes only from EIGHTBYEIGHT_API_KEY or EIGHTBYEIGHT_API_KEY_FILE.
    """
    from detector.prices import write_prices
    from detector.send import EightByEightClient, EightByEightConfig, PermanentFailure
    from detector.send.eightbyeight import PriceList

    problems: list[str] = []
    account_id = options.get("account_id")
    vendor = vendor_config(options, problems, purpose="that sends OTPs (its prices are fetched)")
    if not account_id:
        problems.append("set EIGHTBYEIGHT_ACCOUNT_ID (or --account-id) to the 8x8 account id (a GUID)")
    if problems or vendor is None or not account_id:
        raise click.UsageError("\n".join(problems))

    async def fetch(config: EightByEightConfig) -> PriceList | PermanentFailure | Any:
        async with EightByEightClient(config) as client:
            return await client.prices(account_id)

    answer = asyncio.run(fetch(vendor))
    if isinstance(answer, PermanentFailure) and answer.reason == "unauthorized":
        raise click.ClickException(
            f"8x8 refused the API key (HTTP {answer.status}: {answer.message}) for account {account_id}: set "
            "EIGHTBYEIGHT_API_KEY or EIGHTBYEIGHT_API_KEY_FILE to a key of that account, and check "
            "EIGHTBYEIGHT_ACCOUNT_ID and EIGHTBYEIGHT_REGION / EIGHTBYEIGHT_BASE_URL (a key works in its "
            "region)"
        )
    if not isinstance(answer, PriceList):
        status = f" (HTTP {answer.status})" if answer.status else ""
        raise click.ClickException(
            f"8x8 did not give the price list{status}: {answer.message}; nothing written"
        )
    rate = 1.0 if answer.currency == "USD" else usd_per_unit
    if rate is None:
        raise click.ClickException(
            f"8x8 quotes this account in {answer.currency}: pass --usd-per-unit (USD for one "
            f"{answer.currency}) so the price file is in USD; nothing written"
        )
    fetched = time.strftime("%Y-%m-%d", time.gmtime())
    converted = "" if answer.currency == "USD" else f", {answer.currency} at {rate} USD"
    write_prices(
        out,
        {country: amount * rate for country, amount in answer.countries.items()},
        basis=f"8x8 price list {fetched}{converted}",
        comment=f"8x8 outbound prices of sub-account {vendor.sub_account_id}, fetched {fetched}: "
        "per country the dearest operator",
    )
    click.echo(f"{out}: {len(answer.countries)} countries ({answer.currency}{converted})")
