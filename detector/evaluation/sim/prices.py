"""What one OTP SMS costs, by destination country: the price table in `prices.csv`.

Every row of the table is an assumption (the order of magnitude of 2025 A2P list prices), written beside
the row in its `basis` column; replace the numbers with your own rates to compare policies in dollars.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

DEFAULT_KEY = "DEFAULT"


@dataclass(frozen=True, slots=True)
class Price:
    country: str
    usd_per_sms: float
    basis: str


@functools.cache
def price_table() -> dict[str, Price]:
    """Country code (and DEFAULT) → price, read once from the packaged CSV."""
    text = resources.files("detector.evaluation.sim").joinpath("prices.csv").read_text()
    rows = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    table: dict[str, Price] = {}
    for row in csv.DictReader(rows):
        country = row["country"].strip().upper()
        table[country] = Price(country, float(row["usd_per_sms"]), row["basis"].strip())
    if DEFAULT_KEY not in table:
        raise ValueError("prices.csv needs a DEFAULT row for destinations it does not list")
    return table


def default_price() -> float:
    return price_table()[DEFAULT_KEY].usd_per_sms


def price_for(country: str | None) -> float:
    """USD for one SMS to a number in `country`; the DEFAULT row's price when unlisted or unknown."""
    table = price_table()
    entry = table.get(country.upper()) if country else None
    return (entry or table[DEFAULT_KEY]).usd_per_sms
