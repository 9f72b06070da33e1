"""What one OTP SMS costs in the simulator and `detector evaluate`: the bundled table (`detector.prices`)."""

from __future__ import annotations

from detector.prices import DEFAULT_KEY, Price, load_prices

__all__ = ["DEFAULT_KEY", "Price", "default_price", "price_for", "price_table"]


def price_table() -> dict[str, Price]:
    """Country code (and DEFAULT) → price, from the bundled `detector/prices.csv`."""
    return dict(load_prices().rows)


def default_price() -> float:
    return load_prices().default


def price_for(country: str | None) -> float:
    """USD for one SMS to a number in `country`; the DEFAULT row's price when unlisted or unknown."""
    return load_prices().price_for(country)
