"""Business profiles: whole businesses the default policy was never tuned on, for `--business NAME`.

Each profile is a `Market`: its home countries and their volumes, its daily curve, the carrier NAT and
office traffic, its VPN users, where its travellers go and where it launches; the attacks aim at it (a
number block inside its biggest home, a bomber on one of its numbers, a CAPTCHA farm from its home
addresses, low-and-slow pumping of the costly countries that are not its home). Every profile runs every
scenario (`scenarios.SCENARIOS`); the mix (`MIX_MARKET`) stays the demo's single business.
"""

from __future__ import annotations

from typing import NamedTuple

from detector.evaluation.sim.generate import HOURLY, Audience, Market, Pumped


class Business(NamedTuple):
    description: str
    market: Market


def _shares(audience: tuple[Audience, ...], homes: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """Each home country's share of the home audience: where the travellers come from."""
    total = sum(entry.daily for entry in audience if entry.country in homes)
    return tuple((code, sum(e.daily for e in audience if e.country == code) / total) for code in homes)


# Late evenings are the busiest hours, and the night is not quiet.
_GULF_HOURS = (0.90, 0.60, 0.35, 0.20, 0.15, 0.15, 0.25, 0.45, 0.70, 0.85, 0.95, 1.00,
               1.00, 0.95, 0.90, 0.95, 1.05, 1.20, 1.40, 1.60, 1.75, 1.80, 1.60, 1.25)  # fmt: skip
# A lunchtime and an evening peak.
_ASIA_HOURS = (0.35, 0.20, 0.12, 0.10, 0.12, 0.25, 0.50, 0.85, 1.10, 1.25, 1.30, 1.35,
               1.40, 1.30, 1.20, 1.15, 1.20, 1.30, 1.45, 1.55, 1.50, 1.30, 1.00, 0.65)  # fmt: skip

_GULF_HOMES = ("SA", "AE", "KW", "QA", "OM", "BH")
_GULF_AUDIENCE = (
    Audience("SA", 3500),
    Audience("AE", 3000),
    Audience("KW", 1200),
    Audience("QA", 900),
    Audience("OM", 800),
    Audience("BH", 500),
    # expatriates and visitors
    Audience("IN", 400),
    Audience("PK", 250),
    Audience("EG", 250),
    Audience("PH", 200),
    Audience("GB", 120),
    Audience("US", 120),
)

_NORTH_AMERICA_HOMES = ("US", "CA")
_NORTH_AMERICA_AUDIENCE = (  # two humps: the east coast's evening, then the west coast's
    Audience("US", 5000, -5.0),
    Audience("US", 2200, -6.0),
    Audience("US", 600, -7.0),
    Audience("US", 2800, -8.0),
    Audience("CA", 1100, -5.0),
    Audience("CA", 400, -8.0),
    Audience("GB", 150),
    Audience("IN", 200),
    Audience("PH", 100),
    Audience("BR", 80),
    Audience("DE", 80),
)

_SOUTH_EAST_ASIA_HOMES = ("IN", "ID", "PH", "VN", "TH", "MY")
_SOUTH_EAST_ASIA_AUDIENCE = (
    Audience("IN", 9000),
    Audience("ID", 5000),
    Audience("PH", 3500),
    Audience("VN", 2000),
    Audience("TH", 2000),
    Audience("MY", 1200),
    Audience("AE", 200),
    Audience("SA", 200),
    Audience("BD", 150),
    Audience("US", 100),
    Audience("JP", 100),
    Audience("AU", 100),
)

BUSINESSES: dict[str, Business] = {
    "gulf": Business(
        "A Gulf business: Saudi Arabia and the Emirates first, busiest late in the evening; some people "
        "type their number in Arabic-Indic digits, many use a VPN.",
        Market(
            audience=_GULF_AUDIENCE,
            homes=_GULF_HOMES,
            curve=_GULF_HOURS,
            cgnat=(("SA", 450), ("AE", 350)),
            traveller_homes=_shares(_GULF_AUDIENCE, _GULF_HOMES),
            visited=("GB", "TR", "TH", "FR", "GE", "EG", "US", "IN", "MY", "DE", "CH", "AT", "ES", "IT"),
            travellers_daily=600,
            travellers_offset=3.0,
            launch=("TR", 800),
            office_daily=600,
            vpn_daily=500,
            home_block="SA",
            victim="AE",
            victim_proxies=("AE", "AE", "SA", "EG", "PK", "IN"),
            farm_exits="SA",
            pumped=Pumped(burst=("TJ", "AM"), rotating="UZ", partial="GE"),
            arabic_digits=0.25,
        ),
    ),
    "north_america": Business(
        "A North American business: the United States and Canada over four time zones (two evening "
        "humps), many office users.",
        Market(
            audience=_NORTH_AMERICA_AUDIENCE,
            homes=_NORTH_AMERICA_HOMES,
            curve=HOURLY,
            cgnat=(("US", 300), ("CA", 150)),
            traveller_homes=_shares(_NORTH_AMERICA_AUDIENCE, _NORTH_AMERICA_HOMES),
            visited=("MX", "GB", "FR", "IT", "ES", "JP", "DE", "TH", "PT", "NL", "CH", "AT", "CO", "AR"),
            travellers_daily=900,
            travellers_offset=-5.0,
            launch=("MX", 1500),
            office_daily=1800,
            vpn_daily=700,
            home_block="US",
            victim="US",
            victim_proxies=("US", "US", "CA", "MX", "BR", "IN"),
            farm_exits="US",
            pumped=Pumped(burst=("KG", "BY"), rotating="AZ", partial="UZ"),
        ),
    ),
    "south_east_asia": Business(
        "A South and South-East Asian business: India, Indonesia, the Philippines, Vietnam, Thailand and "
        "Malaysia; big volumes, much of it behind carrier-grade NAT, peaks at lunch and in the evening.",
        Market(
            audience=_SOUTH_EAST_ASIA_AUDIENCE,
            homes=_SOUTH_EAST_ASIA_HOMES,
            curve=_ASIA_HOURS,
            cgnat=(("IN", 900), ("ID", 700), ("PH", 600), ("VN", 350), ("TH", 300)),
            traveller_homes=_shares(_SOUTH_EAST_ASIA_AUDIENCE, _SOUTH_EAST_ASIA_HOMES),
            visited=("SG", "JP", "TH", "MY", "AE", "SA", "AU", "GB", "US", "VN", "ID"),
            travellers_daily=800,
            travellers_offset=7.0,
            launch=("SG", 600),
            office_daily=1500,
            vpn_daily=600,
            home_block="IN",
            victim="PH",
            victim_proxies=("PH", "PH", "ID", "VN", "IN", "BD"),
            farm_exits="IN",
            pumped=Pumped(burst=("MM", "TJ"), rotating="KH", partial="KG"),
        ),
    ),
}


def profile(name: str) -> Business:
    """The profile called `name`; raises ValueError naming the known ones."""
    try:
        return BUSINESSES[name]
    except KeyError:
        raise ValueError(f"unknown business {name!r}; known: {', '.join(BUSINESSES)}") from None
