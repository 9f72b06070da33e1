"""The simulator's building blocks: countries, phone numbers, client addresses, users, and the OTP session.

Phone numbers come from phonenumbers' own metadata: each country's example mobile number is varied digit by
digit and kept only when `is_valid_number_for_region` accepts it and its type is mobile (or
fixed-line-or-mobile). Numbers are never made up from patterns of our own.

Client addresses are synthetic and come only from ranges reserved for documentation and benchmarking, so
no real network is named: residential and mobile IPv4 from 198.18.0.0/15 (RFC 2544), mobile IPv6 from
2001:db8::/32 (RFC 3849), hosting providers from 198.51.100.0/24 and 203.0.113.0/24 (RFC 5737), and the
large carrier-grade NAT addresses of the `cgnat` scenario from 192.0.2.0/24 (RFC 5737). Each country owns a
few /24 blocks of 198.18.0.0/15; the event carries `ip_country`, as an edge such as a CDN would set it.

Everything is drawn from `random.Random` instances seeded from the run's seed and a name, so the same seed
gives the same events, and the pools (number blocks, address blocks) do not depend on which scenarios run.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import random
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from detector.events import format_timestamp

Label = Literal["legit", "attack"]
Flow = Literal["signup", "login", "reset", "other"]
Platform = Literal["app", "web"]

DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
DAY = 86_400.0
BRAND = "Acme"
_MOBILE_TYPES = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)


def sub_rng(seed: int, *names: object) -> random.Random:
    """A generator of its own for (seed, names): independent of what else was drawn before it."""
    digest = hashlib.sha256(":".join([str(seed), *map(str, names)]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# --- countries ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Country:
    code: str
    utc_offset: float  # hours; one offset for the whole country is close enough for a traffic curve
    daily: int  # legitimate OTP sessions a day in the `diurnal` scenario (0: none)
    first_try: float  # probability that a legitimate user enters the first code sent
    blocks: int  # /24 blocks of residential addresses in 198.18.0.0/15


CORE_MARKETS = ("US", "CA", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "IN", "BR", "AU")

COUNTRIES: dict[str, Country] = {
    c.code: c
    for c in (
        # core markets
        Country("US", -6.0, 5250, 0.82, 60),
        Country("GB", 0.0, 2310, 0.83, 32),
        Country("DE", 1.0, 1960, 0.83, 28),
        Country("FR", 1.0, 1680, 0.82, 24),
        Country("ES", 1.0, 840, 0.81, 12),
        Country("IT", 1.0, 840, 0.81, 12),
        Country("NL", 1.0, 560, 0.84, 8),
        Country("SE", 1.0, 320, 0.84, 6),
        Country("CA", -5.0, 840, 0.82, 12),
        Country("AU", 10.0, 560, 0.83, 8),
        Country("IN", 5.5, 2940, 0.72, 40),
        Country("BR", -3.0, 1960, 0.75, 28),
        # some legitimate traffic everywhere else
        Country("MX", -6.0, 0, 0.76, 12),  # launched during the day by `new_country_launch`
        Country("PL", 1.0, 150, 0.80, 4),
        Country("PT", 0.0, 98, 0.80, 3),
        Country("IE", 0.0, 98, 0.82, 3),
        Country("BE", 1.0, 98, 0.82, 3),
        Country("CH", 1.0, 98, 0.83, 3),
        Country("AT", 1.0, 77, 0.83, 3),
        Country("JP", 9.0, 98, 0.80, 3),
        Country("SG", 8.0, 70, 0.82, 3),
        Country("TR", 3.0, 130, 0.74, 4),
        Country("ZA", 2.0, 98, 0.74, 3),
        Country("AR", -3.0, 98, 0.74, 3),
        Country("CO", -5.0, 98, 0.74, 3),
        Country("PE", -5.0, 49, 0.72, 2),
        Country("TH", 7.0, 77, 0.74, 3),
        Country("VN", 7.0, 63, 0.72, 2),
        Country("PH", 8.0, 130, 0.70, 4),
        Country("EG", 2.0, 77, 0.70, 3),
        Country("SA", 3.0, 63, 0.76, 2),
        Country("AE", 4.0, 98, 0.78, 3),
        Country("MA", 1.0, 49, 0.70, 2),
        Country("KE", 3.0, 49, 0.70, 2),
        Country("NG", 1.0, 98, 0.66, 3),
        Country("PK", 5.0, 98, 0.66, 3),
        Country("ID", 7.0, 130, 0.68, 4),
        Country("BD", 6.0, 42, 0.66, 2),
        Country("LK", 5.5, 21, 0.68, 2),
        Country("GH", 0.0, 28, 0.66, 2),
        Country("UA", 2.0, 42, 0.72, 2),
        Country("KZ", 5.0, 21, 0.72, 2),
        Country("RU", 3.0, 0, 0.72, 6),  # only as residential-proxy exits
        # destinations with high termination rates: attacks only, a trickle of real users
        Country("UZ", 5.0, 4, 0.66, 2),
        Country("TJ", 5.0, 2, 0.66, 2),
        Country("KG", 6.0, 2, 0.66, 2),
        Country("AZ", 4.0, 3, 0.66, 2),
        Country("AM", 4.0, 3, 0.70, 2),
        Country("GE", 4.0, 3, 0.70, 2),
        Country("BY", 3.0, 2, 0.70, 2),
        Country("MD", 2.0, 2, 0.70, 2),
        Country("IQ", 3.0, 3, 0.66, 2),
        Country("MM", 6.5, 2, 0.64, 2),
        Country("KH", 7.0, 2, 0.66, 2),
        Country("LA", 7.0, 2, 0.66, 2),
        Country("NP", 5.75, 3, 0.66, 2),
        Country("CM", 1.0, 2, 0.64, 2),
        Country("SN", 0.0, 2, 0.66, 2),
        Country("TZ", 3.0, 2, 0.64, 2),
        Country("UG", 3.0, 2, 0.64, 2),
        Country("ZW", 2.0, 2, 0.64, 2),
        # home markets of the business profiles only (`businesses.py`): no traffic in the mix
        Country("KW", 3.0, 0, 0.78, 6),
        Country("QA", 3.0, 0, 0.78, 4),
        Country("BH", 3.0, 0, 0.78, 3),
        Country("OM", 4.0, 0, 0.76, 4),
        Country("MY", 8.0, 0, 0.76, 8),
    )
}

# More residential /24 blocks for countries that are a business profile's home market, allocated after
# the table's so that the mix's addresses stay where they were.
_EXTRA_BLOCKS = {"AE": 14, "SA": 16, "ID": 10, "PH": 8, "TH": 6, "VN": 6}

# Share of OTP requests by local hour (a consumer app: quiet at night, busiest in the evening).
HOURLY = (0.30, 0.18, 0.12, 0.10, 0.10, 0.14, 0.30, 0.55, 0.85, 1.00, 1.08, 1.15,
           1.20, 1.15, 1.10, 1.10, 1.15, 1.25, 1.40, 1.50, 1.45, 1.25, 0.95, 0.60)  # fmt: skip
Curve = tuple[float, ...]  # relative traffic by local hour, 24 values


def curve_peak(curve: Curve) -> float:
    """The highest value `diurnal` takes on `curve`: the busiest hour over the mean."""
    return max(curve) / (sum(curve) / 24)


def diurnal(ts: float, utc_offset: float, curve: Curve = HOURLY) -> float:
    """Relative traffic (mean 1 over a day) at epoch `ts` in a country `utc_offset` hours from UTC."""
    hour = ((ts / 3600.0) + utc_offset) % 24.0
    low = int(hour)
    frac = hour - low
    # weights are for the middle of each hour
    a, b = (low - 1) % 24, low
    if frac >= 0.5:
        a, b, frac = low, (low + 1) % 24, frac - 0.5
    else:
        frac += 0.5
    return (curve[a] * (1 - frac) + curve[b] * frac) / (sum(curve) / 24)


def arrivals(
    rng: random.Random, start: float, end: float, rate: Callable[[float], float], rate_max: float
) -> Iterator[float]:
    """A Poisson process of time-varying `rate` (events per second, never above `rate_max`), by thinning."""
    if rate_max <= 0:
        return
    t = start
    while True:
        t += rng.expovariate(rate_max)
        if t >= end:
            return
        if rng.random() * rate_max < rate(t):
            yield t


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


# --- phone numbers ------------------------------------------------------------------------------------


def is_valid_mobile(e164: str, region: str, types: tuple[int, ...] = _MOBILE_TYPES) -> bool:
    """True when phonenumbers' metadata says `e164` is a valid number of `region` of one of `types`
    (mobile or fixed/mobile unless told)."""
    code = _country_code(region)
    nsn = e164[1 + len(code) :]
    if not e164.startswith("+" + code) or not nsn.isdigit() or nsn.startswith("0"):
        try:  # the general path, for leading zeros and anything unexpected
            number = phonenumbers.parse(e164, None)
        except phonenumbers.NumberParseException:
            return False
    else:  # the same number without parsing text: twice as fast
        number = phonenumbers.PhoneNumber(country_code=int(code), national_number=int(nsn))
    return phonenumbers.is_valid_number_for_region(number, region) and (
        phonenumbers.number_type(number) in types
    )


@functools.cache
def _country_code(region: str) -> str:
    return str(phonenumbers.country_code_for_region(region))


NumberKind = Literal["mobile", "premium_rate"]
NUMBER_TYPES: dict[NumberKind, tuple[int, ...]] = {
    "mobile": _MOBILE_TYPES,
    "premium_rate": (PhoneNumberType.PREMIUM_RATE,),
}


class NumberBook:
    """Valid mobile numbers per country, spread over many number blocks as real subscribers are.

    A country with many users (`daily` of 500 or more in the table, or one of `busy`) gets five times
    as many blocks as the others. Premium-rate numbers (`kind="premium_rate"`) come the same way.
    """

    STEM_DIGITS = 4  # a stem is a valid number minus its last 4 digits

    def __init__(self, seed: int, busy: Collection[str] = ()) -> None:
        self._seed = seed
        self._busy = frozenset(busy)
        self._stems: dict[tuple[str, NumberKind], list[str]] = {}

    def stems(self, region: str, kind: NumberKind = "mobile") -> list[str]:
        stems = self._stems.get((region, kind))
        if stems is None:
            stems = self._stems[region, kind] = self._find_stems(region, kind)
        return stems

    def has(self, region: str, kind: NumberKind) -> bool:
        """Whether phonenumbers knows numbers of `kind` in `region` (many countries list no premium rate)."""
        return phonenumbers.example_number_for_type(region, NUMBER_TYPES[kind][0]) is not None

    def _find_stems(self, region: str, kind: NumberKind) -> list[str]:
        types = NUMBER_TYPES[kind]
        example = phonenumbers.example_number_for_type(region, types[0])
        if example is None:
            raise ValueError(f"phonenumbers has no example {kind} number for {region}")
        code = str(example.country_code)
        nsn = phonenumbers.national_significant_number(example)
        country = COUNTRIES.get(region)
        busy = region in self._busy or (country is not None and country.daily >= 500)
        wanted = 240 if busy and kind == "mobile" else 48
        rng = sub_rng(self._seed, "stems", region, *([] if kind == "mobile" else [kind]))
        found: dict[str, None] = {}
        for attempt in range(wanted * 30):
            keep = 1 if attempt % 3 else 2  # vary the operator digits too, not only the subscriber digits
            digits = nsn[:keep] + "".join(rng.choice("0123456789") for _ in range(len(nsn) - keep))
            e164 = f"+{code}{digits}"
            if is_valid_mobile(e164, region, types):
                found[e164[: -self.STEM_DIGITS]] = None
                if len(found) >= wanted:
                    break
        if not found:
            found[phonenumbers.format_number(example, PhoneNumberFormat.E164)[: -self.STEM_DIGITS]] = None
        return list(found)

    def random_mobile(self, rng: random.Random, region: str, kind: NumberKind = "mobile") -> str:
        stems = self.stems(region, kind)
        for _ in range(200):
            stem = rng.choice(stems)
            e164 = stem + "".join(rng.choice("0123456789") for _ in range(self.STEM_DIGITS))
            if is_valid_mobile(e164, region, NUMBER_TYPES[kind]):
                return e164
        raise RuntimeError(f"could not draw a valid {kind} number for {region}")

    def number_range(self, rng: random.Random, region: str, digits: int) -> str:
        """The leading digits of a range of 10**digits numbers (digits=3: a block of 1000) in `region`."""
        stem = rng.choice(self.stems(region))
        if digits <= self.STEM_DIGITS:
            stem += "".join(rng.choice("0123456789") for _ in range(self.STEM_DIGITS - digits))
        else:
            stem = stem[: len(stem) - (digits - self.STEM_DIGITS)]
        return stem

    def in_range(self, rng: random.Random, region: str, stem: str, digits: int) -> str:
        for _ in range(200):
            e164 = stem + f"{rng.randrange(10**digits):0{digits}d}"
            if is_valid_mobile(e164, region):
                return e164
        raise RuntimeError(f"no valid number found in the range {stem}…")


_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def display_phone(e164: str, region: str, style: str) -> tuple[str, str | None]:
    """The phone as a client sends it: E.164, E.164 in Arabic-Indic digits, international with spaces, or
    national with `phone_country`."""
    if style == "e164":
        return e164, None
    if style == "arabic":
        return e164.translate(_ARABIC_INDIC), None
    number = phonenumbers.parse(e164, None)
    if style == "international":
        return phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL), None
    return phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL), region


# --- client addresses ---------------------------------------------------------------------------------

_BENCHMARK_V4 = ipaddress.IPv4Network("198.18.0.0/15")
_SHARED_V4 = ipaddress.IPv4Network("192.0.2.0/24")
_HOSTING = {
    "hosting-a": (ipaddress.IPv4Network("198.51.100.0/24"), "NL"),
    "hosting-b": (ipaddress.IPv4Network("203.0.113.0/24"), "US"),
    # consumer VPN exits (the `vpn_users` scenario), in the upper half of 192.0.2.0/24
    "vpn-nl": (ipaddress.IPv4Network("192.0.2.128/26"), "NL"),
    "vpn-us": (ipaddress.IPv4Network("192.0.2.192/26"), "US"),
}


def _allocate_blocks() -> dict[str, list[int]]:
    """Country → its /24 block indices inside 198.18.0.0/15: the table's in table order, then the extra."""
    allocation: dict[str, list[int]] = {}
    next_block = 0
    for country in COUNTRIES.values():
        allocation[country.code] = list(range(next_block, next_block + country.blocks))
        next_block += country.blocks
    for code, extra in _EXTRA_BLOCKS.items():
        allocation[code] += range(next_block, next_block + extra)
        next_block += extra
    if next_block > 512:
        raise AssertionError(f"{next_block} /24 blocks allocated; 198.18.0.0/15 has 512")
    return allocation


_BLOCKS = _allocate_blocks()
_COUNTRY_INDEX = {code: index for index, code in enumerate(COUNTRIES)}
_NAT_HOSTS = 4  # hosts 1-4 of each of a country's /24 blocks are its mobile carriers' NAT addresses


class AddressBook:
    """Synthetic client addresses by country and kind (see the module docstring for the ranges).

    In each /24 block of a country, hosts 1-4 are mobile carrier NAT addresses (shared by many
    subscribers over a day) and 5-239 home broadband; the first block's hosts 240-249 are hotel and airport
    Wi-Fi and 250-254 offices. The `busy` countries (a business profile's homes) also use their extra
    blocks; the others only the table's, so that the mix's addresses do not move.
    """

    def __init__(self, busy: Collection[str] = ()) -> None:
        self._blocks = {
            code: blocks if code in busy else blocks[: COUNTRIES[code].blocks]
            for code, blocks in _BLOCKS.items()
        }

    def _host(self, country: str, block: int, host: int) -> str:
        return str(_BENCHMARK_V4.network_address + self._blocks[country][block] * 256 + host)

    def residential(self, rng: random.Random, country: str) -> str:
        count = len(self._blocks[country])
        return self._host(country, rng.randrange(count), rng.randrange(_NAT_HOSTS + 1, 240))

    def mobile_nat(self, rng: random.Random, country: str) -> str:
        """An address of a mobile carrier's NAT pool: shared by many subscribers over a day."""
        count = len(self._blocks[country])
        return self._host(country, rng.randrange(count), rng.randrange(1, _NAT_HOSTS + 1))

    def hotel(self, rng: random.Random, country: str) -> str:
        return self._host(country, 0, rng.randrange(240, 250))

    def office(self, rng: random.Random, country: str, *, anywhere: bool = False) -> str:
        """An office's egress address: in the country's first block, or `anywhere` in its blocks."""
        block = rng.randrange(len(self._blocks[country])) if anywhere else 0
        return self._host(country, block, rng.randrange(250, 255))

    def mobile_v6(self, rng: random.Random, country: str) -> str:
        """A phone on an IPv6 mobile network: its own /64 inside its carrier's /48."""
        carrier = _COUNTRY_INDEX[country] * 4 + rng.randrange(4)
        words = [rng.randrange(0x10000) for _ in range(5)]
        return "2001:db8:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}".format(carrier, *words)

    def hosting(self, rng: random.Random, provider: str) -> tuple[str, str]:
        """(address, country) of a virtual server at one of two hosting providers."""
        network, country = _HOSTING[provider]
        return str(network.network_address + rng.randrange(2, network.num_addresses - 2)), country

    def carrier_nat(self, index: int) -> str:
        """One large carrier-grade NAT address (the `cgnat` scenario), in 192.0.2.0/24."""
        return str(_SHARED_V4.network_address + 1 + index)


# --- user agents --------------------------------------------------------------------------------------

_IOS = ("17.6.1", "18.0.1", "18.1", "18.2", "18.3.2")
_ANDROID = (
    ("14", "SM-S918B"),
    ("13", "SM-A536B"),
    ("14", "Pixel 8"),
    ("15", "Pixel 9 Pro"),
    ("12", "Redmi Note 11"),
    ("13", "CPH2399"),
    ("14", "moto g54 5G"),
)
_APP_VERSIONS = ("7.12.0", "7.13.1", "7.14.0")
_CHROME = ("129.0.0.0", "130.0.0.0", "131.0.0.0")


def app_user_agent(rng: random.Random) -> str:
    version = rng.choice(_APP_VERSIONS)
    if rng.random() < 0.45:
        return f"{BRAND}/{version} (iPhone; iOS {rng.choice(_IOS)}; Scale/3.00)"
    android, model = rng.choice(_ANDROID)
    return f"{BRAND}/{version} (Linux; Android {android}; {model})"


def web_user_agent(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        android, model = rng.choice(_ANDROID)
        return (
            f"Mozilla/5.0 (Linux; Android {android}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{rng.choice(_CHROME)} Mobile Safari/537.36"
        )
    if roll < 0.6:
        ios = rng.choice(_IOS)
        return (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios.replace('.', '_')} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{ios.split('.')[0]}.0 Mobile/15E148 Safari/604.1"
        )
    if roll < 0.88:
        return (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{rng.choice(_CHROME)} Safari/537.36"
        )
    if roll < 0.95:
        return (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/18.1 Safari/605.1.15"
        )
    return "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0"


# --- the run: events collected from every scenario ----------------------------------------------------


@dataclass(slots=True)
class User:
    """One person (or one bot identity) asking for codes: what stays the same across their requests."""

    phone: str
    region: str
    client: dict[str, str]
    ip_country: str | None
    platform: Platform
    user_agent: str
    device_id: str | None
    account_id: str | None
    phone_style: str = "e164"
    resend: tuple[float, bool] = (60.0, False)  # the UI's resend timer (seconds) and whether it doubles
    signals: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Audience:
    """People in `country` asking for `daily` codes a day, on its clock or on `utc_offset` (a time zone)."""

    country: str
    daily: int
    utc_offset: float | None = None

    @property
    def offset(self) -> float:
        return COUNTRIES[self.country].utc_offset if self.utc_offset is None else self.utc_offset


@dataclass(frozen=True, slots=True)
class Pumped:
    """The high-cost countries the pumping attacks send to (each must have address blocks in the table)."""

    burst: tuple[str, str]  # the fixed-IP burst's two waves
    rotating: str  # the rotating proxies'
    partial: str  # the partial-signals bot's


@dataclass(frozen=True, slots=True)
class Market:
    """Who one business's users are, where and when: what its legitimate scenarios draw from, and what
    the attacks on it aim at. The mix's is `scenarios.MIX_MARKET`; the profiles' are in `businesses.py`."""

    audience: tuple[Audience, ...]  # the `diurnal` scenario: home markets and a little elsewhere
    homes: tuple[str, ...]  # its home countries, biggest first: marketing spikes, office, VPN users
    curve: Curve  # relative traffic by local hour
    cgnat: tuple[tuple[str, int], ...]  # (country, people a day behind one carrier NAT address)
    traveller_homes: tuple[tuple[str, float], ...]  # (country, weight)
    visited: tuple[str, ...]
    travellers_daily: int
    travellers_offset: float  # the clock the travellers' day follows
    launch: tuple[str, int]  # (country opened during the day, sessions a day once open)
    office_daily: int
    vpn_daily: int
    home_block: str  # the country of the attack on a number block inside a home market
    victim: str  # the bombed number's country
    victim_proxies: tuple[str, ...]  # countries of the bomber's residential proxies
    farm_exits: str  # the captcha farm's proxy exits: an address from the home market
    pumped: Pumped
    arabic_digits: float = 0.0  # share of people whose phone spelling uses Arabic-Indic digits
    # A carrier NAT address is one of its country's mobile NAT addresses; the mix's share 192.0.2.0/24.
    carrier_nat_in_country: bool = True

    def daily_of(self, country: str) -> list[Audience]:
        return [entry for entry in self.audience if entry.country == country]


@dataclass(slots=True)
class Run:
    """Shared by every scenario of one simulation: seed, time span, market, number and address books,
    the events."""

    seed: int
    start: float
    duration: float
    market: Market
    numbers: NumberBook
    addresses: AddressBook
    events: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(slots=True)
class Context:
    """What one scenario's generator works with: its own random generator and the shared run."""

    name: str
    label: Label
    index: int
    rng: random.Random
    run: Run
    # How this scenario's clients answer a challenge, written on each request (see `Scenario`).
    challenge_pass_rate: float | None = None
    challenge_delay_s: float | None = None
    _seq: int = 0

    @property
    def start(self) -> float:
        return self.run.start

    @property
    def end(self) -> float:
        return self.run.end

    @property
    def duration(self) -> float:
        return self.run.duration

    def at(self, fraction: float) -> float:
        """The time `fraction` of the way through the run."""
        return self.run.start + fraction * self.run.duration

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _emit(self, ts: float, payload: dict[str, Any]) -> None:
        millis = round(ts * 1000)
        payload["ts"] = format_timestamp(millis / 1000)
        self.run.events.append((millis, self.index * 10_000_000 + self._seq, payload))
        self._seq += 1

    def request(
        self, ts: float, user: User, flow: Flow, session_id: str | None, signals: dict[str, Any] | None = None
    ) -> str:
        """Emit an otp_request for `user`; returns its request_id."""
        request_id = self.new_id()
        phone, phone_country = display_phone(user.phone, user.region, user.phone_style)
        event: dict[str, Any] = {"type": "otp_request", "request_id": request_id, "ts": "", "phone": phone}
        if phone_country is not None:
            event["phone_country"] = phone_country
        event.update(user.client)
        if user.ip_country is not None:
            event["ip_country"] = user.ip_country
        chosen = signals if signals is not None else user.signals
        if chosen is not None:
            event["signals"] = chosen
        if session_id is not None:
            event["session_id"] = session_id
        if user.account_id is not None and flow != "signup":
            event["account_id"] = user.account_id
        if user.device_id is not None:
            event["device_id"] = user.device_id
        event["flow"] = flow
        event["user_agent"] = user.user_agent
        code = f"{self.rng.randrange(1_000_000):06d}"
        event["message"] = {
            "text": f"{code} is your {BRAND} verification code. Do not share it.",
            "source": BRAND,
        }
        event["label"] = self.label
        event["scenario"] = self.name
        if self.challenge_pass_rate is not None:
            event["challenge_pass_rate"] = self.challenge_pass_rate
        if self.challenge_delay_s is not None:
            event["challenge_delay_s"] = self.challenge_delay_s
        self._emit(ts, event)
        return request_id

    def feedback(self, ts: float, request_id: str, outcome: str) -> None:
        self._emit(ts, {"type": "otp_feedback", "request_id": request_id, "ts": "", "outcome": outcome})


# --- legitimate behaviour -----------------------------------------------------------------------------


def verification_delay(rng: random.Random) -> float:
    """Seconds from the request to the code being entered: log-normal around 20 s, and a long tail."""
    late = rng.random() < 0.06  # switched apps, the SMS arrived late, came back later
    delay = lognormal(rng, 150.0, 0.9) if late else lognormal(rng, 20.0, 0.55)
    return min(max(delay, 4.0), 3600.0)


def legit_user(
    ctx: Context,
    region: str,
    *,
    ip_country: str | None = None,
    client: dict[str, str] | None = None,
    platform: Platform | None = None,
) -> User:
    """A person with a phone in `region`, on a network in `ip_country` (the same by default)."""
    rng = ctx.rng
    addresses = ctx.run.addresses
    where = ip_country or region
    platform = platform or ("app" if rng.random() < 0.55 else "web")
    if client is None:
        roll = rng.random()
        if roll < 0.22:
            client = {"client_ip": addresses.mobile_v6(rng, where)}
        elif roll < 0.40:
            client = {"client_ip": addresses.mobile_nat(rng, where)}
        elif roll < 0.88:
            client = {"client_ip": addresses.residential(rng, where)}
        elif roll < 0.96:
            client = {"remote_addr": addresses.residential(rng, where)}  # a deployment that sends the peer
        else:  # an office: the peer is its egress, the header names the desktop inside
            inside = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            client = {"remote_addr": addresses.office(rng, where), "forwarded_for": inside}
    signals: dict[str, Any] | None = None
    if platform == "web":  # the web edge has a bot manager; the app API does not
        roll = rng.random()
        signals = {"bot": False, "anonymizer": False, "datacenter": False}
        if roll < 0.03:
            signals["anonymizer"] = True  # private relay, consumer VPN
        elif roll < 0.035:
            signals["datacenter"] = True  # a cloud desktop, a corporate VPN in a cloud
        elif roll < 0.045:
            signals["session_velocity"] = "medium"
    style_roll = rng.random()
    style = "e164" if style_roll < 0.85 else "international" if style_roll < 0.95 else "national"
    arabic = ctx.run.market.arabic_digits
    if arabic > 0 and style == "e164" and rng.random() < arabic:
        style = "arabic"
    device = ctx.new_id() if platform == "app" or rng.random() < 0.9 else None
    resend = (30.0, True) if platform == "app" else (60.0, False)
    return User(
        phone=ctx.run.numbers.random_mobile(rng, region),
        region=region,
        client=client,
        ip_country=where if rng.random() < 0.96 else None,
        platform=platform,
        user_agent=app_user_agent(rng) if platform == "app" else web_user_agent(rng),
        device_id=device,
        account_id=f"acct_{rng.getrandbits(40):010x}",
        phone_style=style,
        resend=resend,
        signals=signals,
    )


def pick_flow(rng: random.Random, signup_share: float = 0.25) -> Flow:
    roll = rng.random()
    if roll < signup_share:
        return "signup"
    if roll < signup_share + (1 - signup_share) * 0.72:
        return "login"
    if roll < signup_share + (1 - signup_share) * 0.95:
        return "reset"
    return "other"


def legit_session(
    ctx: Context,
    t0: float,
    user: User,
    flow: Flow,
    *,
    first_try: float | None = None,
    delay_scale: float = 1.0,
) -> None:
    """One person asking for a code: enters it (usually), or waits out the resend timer and asks again.

    Feedback: `verified` for the code entered; `failed` for a mistyped code; `completed_other` when the
    person finished another way (a voice call, an email link). About 10-25% never verify, by country.
    """
    rng = ctx.rng
    country = COUNTRIES.get(user.region)
    ok_first = first_try if first_try is not None else (country.first_try if country else 0.75)
    session_id = ctx.new_id()
    t = t0
    timer, doubling = user.resend
    for attempt in range(1, 5):
        if t >= ctx.end:
            return  # the run is over: no request after its end (feedback may still arrive)
        request_id = ctx.request(t, user, flow, session_id)
        if rng.random() < (ok_first if attempt == 1 else 0.62):
            delay = verification_delay(rng) * delay_scale
            if rng.random() < 0.05:  # mistyped once, then got it right
                ctx.feedback(t + delay * rng.uniform(0.5, 0.85), request_id, "failed")
                delay += rng.uniform(4.0, 20.0)
            outcome = "completed_other" if rng.random() < 0.02 else "verified"
            ctx.feedback(t + delay, request_id, outcome)
            return
        if rng.random() < 0.05:
            ctx.feedback(t + verification_delay(rng), request_id, "failed")
        if rng.random() > (0.55 if attempt == 1 else 0.4):
            return  # gave up: never verifies
        wait = timer * (2 ** (attempt - 1) if doubling else 1)
        t += wait + lognormal(rng, 12.0, 0.9)


def diurnal_sessions(
    ctx: Context,
    region: str,
    daily: float,
    *,
    start: float | None = None,
    end: float | None = None,
    boost: Callable[[float], float] | None = None,
    boost_max: float = 1.0,
    utc_offset: float | None = None,
    curve: Curve | None = None,
) -> Iterator[float]:
    """Session start times for `daily` sessions a day in `region` following its local day (the market's
    curve on the country's clock unless told), times `boost`."""
    offset = COUNTRIES[region].utc_offset if utc_offset is None else utc_offset
    shape = ctx.run.market.curve if curve is None else curve
    scale = daily / DAY

    def rate(ts: float) -> float:
        return scale * diurnal(ts, offset, shape) * (boost(ts) if boost is not None else 1.0)

    yield from arrivals(
        ctx.rng,
        ctx.start if start is None else start,
        ctx.end if end is None else end,
        rate,
        curve_peak(shape) * scale * boost_max,
    )
