"""The scenarios: each is one sentence of description and a generator that writes its events into a run.

Legitimate scenarios verify as people do (see `generate.legit_session`). Attack requests almost never
verify: nobody reads a code sent to a pumped number. Times are fractions of the run, so a shorter run still
holds every scenario; at the default 24 h the mix is about 50,000 requests and 90,000 events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from detector.evaluation.sim.generate import (
    CORE_MARKETS,
    COUNTRIES,
    DAY,
    Context,
    Flow,
    Label,
    User,
    app_user_agent,
    arrivals,
    diurnal,
    diurnal_sessions,
    is_valid_mobile,
    legit_session,
    legit_user,
    pick_flow,
    web_user_agent,
)

Generator = Callable[[Context], None]


class Scenario(NamedTuple):
    description: str
    generate: Generator
    label: Label
    # How its clients answer a challenge, when not as their label's default (people pass at the
    # evaluation's `legit_pass_rate`, bots never do): the share passed and the median seconds to answer.
    challenge_pass_rate: float | None = None
    challenge_delay_s: float | None = None


# --- legitimate -----------------------------------------------------------------------------------------


def _returning_or_new(ctx: Context, known: list[User], region: str, share: float = 0.08) -> User:
    if known and ctx.rng.random() < share:
        return ctx.rng.choice(known)
    user = legit_user(ctx, region)
    known.append(user)
    return user


def gen_diurnal(ctx: Context) -> None:
    for country in COUNTRIES.values():
        if country.daily <= 0:
            continue
        known: list[User] = []
        for t in diurnal_sessions(ctx, country.code, country.daily):
            user = _returning_or_new(ctx, known, country.code)
            legit_session(ctx, t, user, pick_flow(ctx.rng))


_CGNAT = (("IN", 520), ("BR", 320), ("US", 220))  # (country, people a day behind one address)


def gen_cgnat(ctx: Context) -> None:
    rng = ctx.rng
    for index, (region, daily) in enumerate(_CGNAT):
        address = ctx.run.addresses.carrier_nat(index)
        known: list[User] = []
        for t in diurnal_sessions(ctx, region, daily):
            if known and rng.random() < 0.08:
                user = rng.choice(known)
            else:
                user = legit_user(ctx, region, client={"client_ip": address}, platform="app")
                known.append(user)
            legit_session(ctx, t, user, pick_flow(rng))


_HOMES = (
    ("US", 0.24),
    ("GB", 0.18),
    ("DE", 0.14),
    ("FR", 0.09),
    ("NL", 0.05),
    ("CA", 0.05),
    ("AU", 0.05),
    ("IN", 0.06),
    ("BR", 0.04),
    ("JP", 0.03),
    ("SE", 0.03),
    ("ES", 0.02),
    ("IT", 0.02),
)
_VISITED = ("ES", "IT", "FR", "US", "GB", "TH", "MX", "AE", "TR", "PT", "JP", "SG", "DE", "NL", "AT", "CH")


def gen_travellers(ctx: Context) -> None:
    rng = ctx.rng
    homes, weights = zip(*_HOMES, strict=True)
    for t in arrivals(rng, ctx.start, ctx.end, lambda ts: 1000 / DAY * diurnal(ts, 1.0), 1000 / DAY * 1.8):
        home = rng.choices(homes, weights)[0]
        visited = rng.choice([v for v in _VISITED if v != home])
        addresses = ctx.run.addresses
        roll = rng.random()
        if roll < 0.5:
            client = {"client_ip": addresses.hotel(rng, visited)}
        elif roll < 0.8:
            client = {"client_ip": addresses.residential(rng, visited)}
        else:
            client = {"client_ip": addresses.mobile_nat(rng, visited)}  # a local eSIM
        user = legit_user(ctx, home, ip_country=visited, client=client)
        home_try = COUNTRIES[home].first_try
        legit_session(ctx, t, user, pick_flow(rng, 0.1), first_try=home_try - 0.04, delay_scale=1.4)


def gen_marketing_spike(ctx: Context) -> None:
    """A campaign email at 16:48 UTC on a day run: twice the diurnal rate on top of it for two hours."""
    rng = ctx.rng
    begin = ctx.at(0.70)
    finish = min(begin + 2 * 3600.0, ctx.end)
    for code in CORE_MARKETS:
        for t in diurnal_sessions(ctx, code, 2 * COUNTRIES[code].daily, start=begin, end=finish):
            legit_session(ctx, t, legit_user(ctx, code), pick_flow(rng, 0.7))


def gen_new_country_launch(ctx: Context) -> None:
    """The service opens in Mexico at 13:55 UTC (07:55 local) on a day run: press traffic, then a plateau."""
    rng = ctx.rng
    launch = ctx.at(0.58)

    def boost(ts: float) -> float:
        return 1.0 + 0.8 * max(0.0, 1.0 - (ts - launch) / (6 * 3600.0))

    known: list[User] = []
    for t in diurnal_sessions(ctx, "MX", 2000, start=launch, boost=boost, boost_max=1.8):
        user = _returning_or_new(ctx, known, "MX", share=0.03)
        legit_session(ctx, t, user, pick_flow(rng, 0.65))


# --- attacks -----------------------------------------------------------------------------------------------

_SCRIPT_UAS = ("python-requests/2.32.3", "okhttp/4.12.0", "Go-http-client/2.0", "axios/1.7.7")


def _bot(
    ctx: Context,
    region: str,
    phone: str,
    client: dict[str, str],
    ip_country: str | None,
    *,
    user_agent: str,
    app: bool = True,
    signals: dict[str, Any] | None = None,
    phone_style: str = "e164",
) -> User:
    """A bot identity for one request: fresh device id on the app API (emulators reset), none on the web."""
    return User(
        phone=phone,
        region=region,
        client=client,
        ip_country=ip_country,
        platform="app" if app else "web",
        user_agent=user_agent,
        device_id=ctx.new_id() if app else None,
        account_id=None,
        phone_style=phone_style,
        signals=signals,
    )


def _attack_feedback(
    ctx: Context, t: float, request_id: str, verified: float = 0.0, failed: float = 0.0
) -> None:
    """Pumped numbers almost never enter a code; a bot may post a random one to look busy."""
    roll = ctx.rng.random()
    if roll < verified:
        ctx.feedback(t + ctx.rng.uniform(15.0, 90.0), request_id, "verified")
    elif roll < verified + failed:
        ctx.feedback(t + ctx.rng.uniform(5.0, 40.0), request_id, "failed")


def _spoofed_xff(ctx: Context) -> str:
    rng = ctx.rng
    return ctx.run.addresses.residential(rng, rng.choice(("US", "GB", "DE", "FR", "IN", "BR")))


def _sequential_burst(
    ctx: Context,
    region: str,
    provider: str,
    start: float,
    minutes: float,
    gap: tuple[float, float],
    user_agent: str,
) -> None:
    rng = ctx.rng
    address, ip_country = ctx.run.addresses.hosting(rng, provider)
    stem = ctx.run.numbers.number_range(rng, region, 3)
    number = int(stem[1:] + f"{rng.randrange(0, 400):03d}")
    finish = min(start + minutes * 60.0, ctx.end)
    t = start
    while t < finish:
        e164 = f"+{number}"
        number += 1
        if not is_valid_mobile(e164, region):
            continue
        client = {"remote_addr": address}
        if rng.random() < 0.7:
            client["forwarded_for"] = _spoofed_xff(ctx)  # spoofed: no trusted proxy wrote it
        bot = _bot(
            ctx,
            region,
            e164,
            client,
            ip_country,
            user_agent=user_agent,
            app=not user_agent.startswith("python"),
        )
        ctx.request(t, bot, "signup", ctx.new_id())
        t += rng.uniform(*gap)


def gen_fixed_ip_burst(ctx: Context) -> None:
    """Two waves, each one server address walking a number block: Uzbekistan at 02:53, Tajikistan at 13:12."""
    _sequential_burst(ctx, "UZ", "hosting-a", ctx.at(0.12), 35, (1.5, 4.0), _SCRIPT_UAS[0])
    _sequential_burst(ctx, "TJ", "hosting-b", ctx.at(0.55), 25, (2.0, 5.0), _SCRIPT_UAS[1])


def gen_rotating_proxies(ctx: Context) -> None:
    """Kyrgyz number ranges from a new residential proxy exit per request, 07:12 to 11:12 UTC on a day run."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    ranges = [
        (numbers.number_range(rng, "KG", 3), 3),
        (numbers.number_range(rng, "KG", 3), 3),
        (numbers.number_range(rng, "KG", 4), 4),
    ]
    begin = ctx.at(0.30)
    span = min(4 * 3600.0, ctx.end - begin)
    exits = ("KG", "KG", "KG", "KG", "RU", "KZ", "UZ", "TR")

    def rate(ts: float) -> float:  # ramps from one request per 12 s to one per 6 s
        return (1 / 12) + (1 / 12) * min(1.0, (ts - begin) / max(span, 1.0))

    for t in arrivals(rng, begin, begin + span, rate, 1 / 6):
        stem, digits = rng.choice(ranges)
        exit_country = rng.choice(exits)
        client = {"client_ip": ctx.run.addresses.residential(rng, exit_country)}
        bot = _bot(
            ctx,
            "KG",
            numbers.in_range(rng, "KG", stem, digits),
            client,
            exit_country,
            user_agent=app_user_agent(rng),
        )
        request_id = ctx.request(t, bot, "signup", ctx.new_id())
        _attack_feedback(ctx, t, request_id, verified=0.005)


_SLOW_TARGETS = (
    "NG",
    "PK",
    "ID",
    "BD",
    "LK",
    "GH",
    "KE",
    "EG",
    "MA",
    "PH",
    "MM",
    "KH",
    "LA",
    "NP",
    "CM",
    "SN",
    "TZ",
    "UG",
)
_SLOW_EXITS = ("US", "GB", "DE", "FR", "BR", "IN", "RU", "TR", "ID", "VN", "PH", "NG")


def gen_low_and_slow(ctx: Context) -> None:
    """All day, one request every ~100 s to 18 high-cost countries from a pool of 140 proxy exits."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    ranges = {region: [numbers.number_range(rng, region, 4) for _ in range(2)] for region in _SLOW_TARGETS}
    pool = []
    for _ in range(140):
        exit_country = rng.choice(_SLOW_EXITS)
        pool.append((ctx.run.addresses.residential(rng, exit_country), exit_country))
    flows: tuple[Flow, ...] = ("signup", "signup", "login", "reset")
    for t in arrivals(rng, ctx.start, ctx.end, lambda _ts: 1 / 100, 1 / 100):
        region = rng.choice(_SLOW_TARGETS)
        address, exit_country = rng.choice(pool)
        bot = _bot(
            ctx,
            region,
            numbers.in_range(rng, region, rng.choice(ranges[region]), 4),
            {"client_ip": address},
            exit_country,
            user_agent=app_user_agent(rng),
        )
        ctx.request(t, bot, rng.choice(flows), ctx.new_id())


def gen_victim_bombing(ctx: Context) -> None:
    """An SMS bomber aimed at one Indian number for 25 minutes from 15:50 UTC, through a public proxy list."""
    rng = ctx.rng
    addresses = ctx.run.addresses
    victim = ctx.run.numbers.random_mobile(rng, "IN")
    proxies: list[tuple[str, str, bool]] = []
    for _ in range(80):
        if rng.random() < 0.4:
            address, country = addresses.hosting(rng, rng.choice(("hosting-a", "hosting-b")))
            proxies.append((address, country, True))
        else:
            country = rng.choice(("IN", "IN", "BD", "PK", "ID", "VN"))
            proxies.append((addresses.residential(rng, country), country, False))
    flows: tuple[Flow, ...] = ("signup", "login", "reset")
    begin = ctx.at(0.66)
    finish = min(begin + 25 * 60.0, ctx.end)
    t = begin
    while t < finish:
        address, country, hosted = rng.choice(proxies)
        signals = {
            "bot": rng.random() < 0.3,
            "anonymizer": not hosted and rng.random() < 0.5,
            "datacenter": hosted,
        }
        bot = _bot(
            ctx,
            "IN",
            victim,
            {"client_ip": address},
            country,
            user_agent=web_user_agent(rng),
            app=False,
            signals=signals,
            phone_style=rng.choice(("e164", "national")),
        )
        ctx.request(t, bot, rng.choice(flows), ctx.new_id())
        t += rng.uniform(3.0, 15.0)


def gen_core_country_block(ctx: Context) -> None:
    """Two adjacent blocks of 1000 British mobile numbers from British proxy exits, 10:05 to 15:05 UTC."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    stem = numbers.number_range(rng, "GB", 4)
    first = rng.randrange(0, 9)
    blocks = (f"{stem}{first}", f"{stem}{first + 1}")
    begin = ctx.at(0.42)
    for t in arrivals(rng, begin, min(begin + 5 * 3600.0, ctx.end), lambda _ts: 1 / 25, 1 / 25):
        addresses = ctx.run.addresses
        ip = addresses.mobile_nat(rng, "GB") if rng.random() < 0.1 else addresses.residential(rng, "GB")
        clean = {"bot": False, "anonymizer": False, "datacenter": False}  # a real browser the edge trusts
        bot = _bot(
            ctx,
            "GB",
            numbers.in_range(rng, "GB", rng.choice(blocks), 3),
            {"client_ip": ip},
            "GB",
            user_agent=web_user_agent(rng),
            app=False,
            signals=clean,
        )
        request_id = ctx.request(t, bot, "signup", ctx.new_id())
        _attack_feedback(ctx, t, request_id, verified=0.003)


def gen_partial_signals(ctx: Context) -> None:
    """Azerbaijani ranges, 19:12 to 21:42 UTC: the web edge flags the bot; two thirds come via the app."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    addresses = ctx.run.addresses
    ranges = [numbers.number_range(rng, "AZ", 3) for _ in range(3)]
    servers = [addresses.hosting(rng, rng.choice(("hosting-a", "hosting-b"))) for _ in range(40)]
    begin = ctx.at(0.80)
    for t in arrivals(rng, begin, min(begin + 2.5 * 3600.0, ctx.end), lambda _ts: 1 / 12, 1 / 12):
        hosted = rng.random() < 0.6
        if hosted:
            address, country = rng.choice(servers)
        else:
            country = rng.choice(("AZ", "AZ", "RU", "TR"))
            address = addresses.residential(rng, country)
        web = rng.random() < 0.35
        signals: dict[str, Any] | None = None
        if web:
            signals = {"bot": rng.random() < 0.8, "datacenter": hosted}
            if rng.random() < 0.3:
                signals["session_velocity"] = "high"
        phone = numbers.in_range(rng, "AZ", rng.choice(ranges), 3)
        agent = web_user_agent(rng) if web else app_user_agent(rng)
        bot = _bot(
            ctx, "AZ", phone, {"client_ip": address}, country, user_agent=agent, app=not web, signals=signals
        )
        request_id = ctx.request(t, bot, "signup", ctx.new_id())
        _attack_feedback(ctx, t, request_id, verified=0.005, failed=0.03)


_FARM_COUNTRY = "IQ"
_FARM_EXITS = "US"


def gen_captcha_farm(ctx: Context) -> None:
    """From 04:48 to 16:48 UTC on a day run, about 16 requests an hour to four Iraqi number blocks from
    American residential proxy exits and a real browser: the default policy challenges each one (a foreign
    number from a home-market address) and, at that pace, blocks none; a CAPTCHA-solving service passes
    the challenges."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    blocks = [numbers.number_range(rng, _FARM_COUNTRY, 3) for _ in range(4)]
    begin = ctx.at(0.20)
    rate = 16 / 3600
    for t in arrivals(rng, begin, min(begin + 12 * 3600.0, ctx.end), lambda _ts: rate, rate):
        clean = {"bot": False, "anonymizer": False, "datacenter": False}  # solved by people, in a browser
        bot = _bot(
            ctx,
            _FARM_COUNTRY,
            numbers.in_range(rng, _FARM_COUNTRY, rng.choice(blocks), 3),
            {"client_ip": ctx.run.addresses.residential(rng, _FARM_EXITS)},
            _FARM_EXITS,
            user_agent=web_user_agent(rng),
            app=False,
            signals=clean,
        )
        ctx.request(t, bot, "signup", ctx.new_id())


SCENARIOS: dict[str, Scenario] = {
    "diurnal": Scenario(
        "People in the core markets and a little everywhere else, following each country's day.",
        gen_diurnal,
        "legit",
    ),
    "cgnat": Scenario(
        "Hundreds of real people a day behind one mobile carrier's NAT address (India, Brazil, US), "
        "verifying "
        "normally.",
        gen_cgnat,
        "legit",
    ),
    "travellers": Scenario(
        "Travellers on hotel Wi-Fi, local eSIMs and rentals: the IP's country is not the phone's, verifying "
        "normally.",
        gen_travellers,
        "legit",
    ),
    "marketing_spike": Scenario(
        "A campaign: three times normal traffic in the core markets for two hours, mostly sign-ups, "
        "verifying "
        "normally.",
        gen_marketing_spike,
        "legit",
    ),
    "new_country_launch": Scenario(
        "A launch in Mexico (not a core country) with a press-day surge, verifying normally.",
        gen_new_country_launch,
        "legit",
    ),
    "fixed_ip_burst": Scenario(
        "One server address bursting to sequential numbers in a high-cost country, with spoofed "
        "X-Forwarded-For.",
        gen_fixed_ip_burst,
        "attack",
    ),
    "rotating_proxies": Scenario(
        "A new residential proxy exit per request, hitting three number ranges in one high-cost country.",
        gen_rotating_proxies,
        "attack",
    ),
    "low_and_slow": Scenario(
        "All day at a low rate, spread over 18 high-cost countries and a pool of 140 proxy exits.",
        gen_low_and_slow,
        "attack",
    ),
    "victim_bombing": Scenario(
        "An SMS bomber sending one victim's number from many proxy addresses.", gen_victim_bombing, "attack"
    ),
    "core_country_block": Scenario(
        "An attack inside a core country (GB) on a narrow block of 2000 numbers, from local proxy exits "
        "and a "
        "browser the edge does not flag.",
        gen_core_country_block,
        "attack",
    ),
    "partial_signals": Scenario(
        "A bot the web edge flags, but most of its requests go through the app API where no upstream signal "
        "is attached.",
        gen_partial_signals,
        "attack",
    ),
    "captcha_farm": Scenario(
        "Four number blocks of an expensive country from home-market residential addresses, slowly enough "
        "to be challenged rather than blocked; a CAPTCHA-solving service passes 90% of challenges fast.",
        gen_captcha_farm,
        "attack",
        challenge_pass_rate=0.9,
        challenge_delay_s=8.0,
    ),
}

MIX = "mix"


def resolve(names: str | list[str]) -> list[str]:
    """Scenario names from 'mix' or a comma-separated list; raises ValueError naming an unknown one."""
    items = names.split(",") if isinstance(names, str) else names
    chosen: list[str] = []
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        if name == MIX:
            chosen.extend(n for n in SCENARIOS if n not in chosen)
        elif name in SCENARIOS:
            if name not in chosen:
                chosen.append(name)
        else:
            raise ValueError(f"unknown scenario {name!r}; known: {MIX}, {', '.join(SCENARIOS)}")
    if not chosen:
        raise ValueError("no scenario given")
    return chosen
