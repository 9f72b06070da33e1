"""What one SMS costs, by destination country: a price file, or the bundled table (`prices.csv`).

A price file is CSV with a header: `country` (ISO 3166 alpha-2, or DEFAULT for every country not listed),
`usd_per_sms`, and optionally `basis` (where the number comes from); `#` lines are comments.
`detector prices fetch` writes one from the account's own 8x8 price list. The bundled table is the
fallback: every row of it is an assumption (the order of magnitude of 2025 A2P list prices).
"""

from __future__ import annotations

import csv
import functools
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from detector.errors import ConfigurationError

DEFAULT_KEY = "DEFAULT"
_MAX_PROBLEMS = 5


class PriceFileError(ConfigurationError, ValueError):
    """A price file that cannot be used; the message names the file and the lines."""


@dataclass(frozen=True, slots=True)
class Price:
    country: str
    usd_per_sms: float
    basis: str


@dataclass(frozen=True, slots=True)
class PriceTable:
    rows: Mapping[str, Price]  # country code (and DEFAULT) → price

    def price_for(self, country: str | None) -> float:
        """USD for one SMS to a number in `country`; the DEFAULT row's price when unlisted or unknown."""
        entry = self.rows.get(country.upper()) if country else None
        return (entry or self.rows[DEFAULT_KEY]).usd_per_sms

    @property
    def default(self) -> float:
        return self.rows[DEFAULT_KEY].usd_per_sms


def load_prices(path: str | None = None) -> PriceTable:
    """The price file at `path`, or the bundled table; read once per path."""
    return _load(str(Path(path).resolve()) if path is not None else None)


@functools.cache
def _load(path: str | None) -> PriceTable:
    if path is None:
        return parse_prices(resources.files("detector").joinpath("prices.csv").read_text(), "prices.csv")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceFileError(f"cannot read the price file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PriceFileError(f"the price file {path} is not UTF-8 text ({exc.reason})") from exc
    return parse_prices(text, path)


def parse_prices(text: str, source: str) -> PriceTable:
    """The table in `text`, or a `PriceFileError` naming every bad line (the first few)."""
    numbered = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise PriceFileError(f"{source}: no header and no prices (need country,usd_per_sms[,basis])")
    reader = csv.reader(line for _, line in numbered)
    header = [name.strip().lower() for name in next(reader)]
    if "country" not in header or "usd_per_sms" not in header:
        raise PriceFileError(f"{source}:{numbered[0][0]}: the header needs country and usd_per_sms columns")
    at_country, at_price = header.index("country"), header.index("usd_per_sms")
    at_basis = header.index("basis") if "basis" in header else None
    rows: dict[str, Price] = {}
    problems: list[str] = []
    for (number, _), cells in zip(numbered[1:], reader, strict=True):
        if len(cells) <= max(at_country, at_price):
            problems.append(f"{source}:{number}: expected {len(header)} columns, got {len(cells)}")
            continue
        country = cells[at_country].strip().upper()
        if country != DEFAULT_KEY and not (len(country) == 2 and country.isalpha() and country.isascii()):
            problems.append(f"{source}:{number}: {country[:20]!r} is not an ISO 3166 alpha-2 code or DEFAULT")
            continue
        try:
            price = float(cells[at_price])
        except ValueError:
            price = math.nan
        if not math.isfinite(price) or price < 0:
            problems.append(f"{source}:{number}: {cells[at_price][:20]!r} is not a price in USD (≥ 0)")
            continue
        if country in rows:
            problems.append(f"{source}:{number}: {country} is listed twice")
            continue
        basis = cells[at_basis].strip() if at_basis is not None and at_basis < len(cells) else ""
        rows[country] = Price(country, price, basis)
    if not problems and DEFAULT_KEY not in rows:
        problems.append(f"{source}: needs a DEFAULT row, the price of destinations it does not list")
    if problems:
        more = len(problems) - _MAX_PROBLEMS
        shown = problems[:_MAX_PROBLEMS] + ([f"{source}: {more} more lines like these"] if more > 0 else [])
        raise PriceFileError("\n".join(shown))
    return PriceTable(rows)


def write_prices(path: str | Path, prices: Mapping[str, float], basis: str, comment: str = "") -> None:
    """Write a price file of `prices` (country → USD); DEFAULT, unless given, is the dearest of them (an
    unlisted destination is priced as the worst listed one). Written whole or not at all."""
    rows = dict(sorted(prices.items()))
    default = rows.pop(DEFAULT_KEY, max(rows.values(), default=0.0))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", newline="", dir=target.parent, prefix=f".{target.name}.", delete=False
    ) as out:
        for line in comment.splitlines():
            out.write(f"# {line}\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["country", "usd_per_sms", "basis"])
        for country, price in rows.items():
            writer.writerow([country, f"{price:.6g}", basis])
        writer.writerow(
            [DEFAULT_KEY, f"{default:.6g}", "the dearest listed price, for destinations not listed"]
        )
    os.replace(out.name, target)
