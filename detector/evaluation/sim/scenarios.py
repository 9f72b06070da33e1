"""The scenarios: each is one sentence of description and a generator that writes its events into a run.

Legitimate scenarios verify as people do (see `generate.legit_session`). Attack requests almost never
verify: nobody reads a code sent to a pumped number. Times are fractions of the run, so a shorter run still
holds every scenario; at the default 24 h the mix is about 50,000 requests and 90,000 events.

Who, where and when come from the run's `Market` (`MIX_MARKET` for the mix, a business profile's
otherwise): its audience and daily curve, carrier NAT, travellers, launch, and the countries its attacks
aim at. The mix is the first twelve scenarios; `office`, `vpn_users`, `premium_numbers` and
`invalid_numbers` run with `all` (every business profile's default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from detector.evaluation.sim.generate import (
    CORE_MARKETS,
    COUNTRIES,
    DAY,
    HOURLY,
    Audience,
    Context,
    Flow,
    Label,
    Market,
    Pumped,
    User,
    app_user_agent,
    arrivals,
    curve_peak,
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
    for entry in ctx.run.market.audience:
        known: list[User] = []
        for t in diurnal_sessions(ctx, entry.country, entry.daily, utc_offset=entry.utc_offset):
            user = _returning_or_new(ctx, known, entry.country)
            legit_session(ctx, t, user, pick_flow(ctx.rng))


def gen_cgnat(ctx: Context) -> None:
    rng = ctx.rng
    market = ctx.run.market
    for index, (region, daily) in enumerate(market.cgnat):
        addresses = ctx.run.addresses
        in_country = market.carrier_nat_in_country
        address = addresses.mobile_nat(rng, region) if in_country else addresses.carrier_nat(index)
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
    market = ctx.run.market
    homes, weights = zip(*market.traveller_homes, strict=True)
    scale = market.travellers_daily / DAY
    # the mix keeps its historical bound (just under its curve's peak), so that its draws do not move
    peak = 1.8 if market is MIX_MARKET else curve_peak(market.curve)

    def rate(ts: float) -> float:
        return scale * diurnal(ts, market.travellers_offset, market.curve)

    for t in arrivals(rng, ctx.start, ctx.end, rate, scale * peak):
        home = rng.choices(homes, weights)[0]
        visited = rng.choice([v for v in market.visited if v != home])
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
    for code in ctx.run.market.homes:
        for entry in ctx.run.market.daily_of(code):
            times = diurnal_sessions(
                ctx, code, 2 * entry.daily, start=begin, end=finish, utc_offset=entry.utc_offset
            )
            for t in times:
                legit_session(ctx, t, legit_user(ctx, code), pick_flow(rng, 0.7))


def gen_new_country_launch(ctx: Context) -> None:
    """The service opens in a new country (the mix: Mexico) at 13:55 UTC on a day run: press traffic,
    then a plateau."""
    rng = ctx.rng
    launch = ctx.at(0.58)
    country, daily = ctx.run.market.launch

    def boost(ts: float) -> float:
        return 1.0 + 0.8 * max(0.0, 1.0 - (ts - launch) / (6 * 3600.0))

    known: list[User] = []
    for t in diurnal_sessions(ctx, country, daily, start=launch, boost=boost, boost_max=1.8):
        user = _returning_or_new(ctx, known, country, share=0.03)
        legit_session(ctx, t, user, pick_flow(rng, 0.65))


_OFFICE_HOURS = (0.02, 0.02, 0.02, 0.02, 0.02, 0.05, 0.2, 0.6, 1.2, 1.5, 1.5, 1.4,
                 1.1, 1.4, 1.5, 1.4, 1.2, 0.8, 0.4, 0.2, 0.1, 0.05, 0.02, 0.02)  # fmt: skip


_OFFICE_SESSIONS = 25  # a day, behind one office's egress address


def gen_office(ctx: Context) -> None:
    """People at work in the home countries, about 25 a day behind each office's egress address, busy
    in office hours; the peer is the office's, the forwarded header names the desktop inside."""
    rng = ctx.rng
    market = ctx.run.market
    total = sum(entry.daily for entry in market.audience if entry.country in market.homes)
    for code in market.homes:
        for entry in market.daily_of(code):
            daily = market.office_daily * entry.daily / max(total, 1)
            offices = [
                ctx.run.addresses.office(rng, code, anywhere=True)
                for _ in range(max(1, round(daily / _OFFICE_SESSIONS)))
            ]
            times = diurnal_sessions(ctx, code, daily, utc_offset=entry.utc_offset, curve=_OFFICE_HOURS)
            for t in times:
                inside = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                client = {"remote_addr": rng.choice(offices), "forwarded_for": inside}
                legit_session(ctx, t, legit_user(ctx, code, client=client), pick_flow(rng, 0.1))


def gen_vpn_users(ctx: Context) -> None:
    """People on a consumer VPN: the web edge flags the address as an anonymizer, it is a VPN exit in
    another country than the phone's, and they verify like everyone else."""
    rng = ctx.rng
    market = ctx.run.market
    homes = market.homes
    weights = [sum(entry.daily for entry in market.daily_of(code)) for code in homes]
    for t in diurnal_sessions(ctx, homes[0], market.vpn_daily):
        home = rng.choices(homes, weights)[0]
        address, exit_country = ctx.run.addresses.hosting(rng, rng.choice(("vpn-nl", "vpn-us")))
        user = legit_user(ctx, home, ip_country=exit_country, client={"client_ip": address}, platform="web")
        user.signals = {"bot": False, "anonymizer": True, "datacenter": False}
        legit_session(ctx, t, user, pick_flow(rng))


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
    """Two waves, each one server address walking a number block of a high-cost country, at 02:53 and
    13:12 UTC on a day run (the mix: Uzbekistan, then Tajikistan)."""
    pumped = ctx.run.market.pumped
    _sequential_burst(ctx, pumped.burst[0], "hosting-a", ctx.at(0.12), 35, (1.5, 4.0), _SCRIPT_UAS[0])
    _sequential_burst(ctx, pumped.burst[1], "hosting-b", ctx.at(0.55), 25, (2.0, 5.0), _SCRIPT_UAS[1])


def gen_rotating_proxies(ctx: Context) -> None:
    """Number ranges of a high-cost country (the mix: Kyrgyzstan) from a new residential proxy exit per
    request, 07:12 to 11:12 UTC on a day run."""
    rng = ctx.rng
    target = ctx.run.market.pumped.rotating
    numbers = ctx.run.numbers
    ranges = [
        (numbers.number_range(rng, target, 3), 3),
        (numbers.number_range(rng, target, 3), 3),
        (numbers.number_range(rng, target, 4), 4),
    ]
    begin = ctx.at(0.30)
    span = min(4 * 3600.0, ctx.end - begin)
    exits = (target, target, target, target, "RU", "KZ", "UZ", "TR")

    def rate(ts: float) -> float:  # ramps from one request per 12 s to one per 6 s
        return (1 / 12) + (1 / 12) * min(1.0, (ts - begin) / max(span, 1.0))

    for t in arrivals(rng, begin, begin + span, rate, 1 / 6):
        stem, digits = rng.choice(ranges)
        exit_country = rng.choice(exits)
        client = {"client_ip": ctx.run.addresses.residential(rng, exit_country)}
        bot = _bot(
            ctx,
            target,
            numbers.in_range(rng, target, stem, digits),
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
    """All day, one request every ~100 s to the high-cost countries (of 18) that are not the business's
    home, from a pool of 140 proxy exits."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    targets = [region for region in _SLOW_TARGETS if region not in ctx.run.market.homes]
    ranges = {region: [numbers.number_range(rng, region, 4) for _ in range(2)] for region in targets}
    pool = []
    for _ in range(140):
        exit_country = rng.choice(_SLOW_EXITS)
        pool.append((ctx.run.addresses.residential(rng, exit_country), exit_country))
    flows: tuple[Flow, ...] = ("signup", "signup", "login", "reset")
    for t in arrivals(rng, ctx.start, ctx.end, lambda _ts: 1 / 100, 1 / 100):
        region = rng.choice(targets)
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
    """An SMS bomber aimed at one number of a home country (the mix: India) for 25 minutes from 15:50 UTC,
    through a public proxy list."""
    rng = ctx.rng
    addresses = ctx.run.addresses
    market = ctx.run.market
    victim = ctx.run.numbers.random_mobile(rng, market.victim)
    proxies: list[tuple[str, str, bool]] = []
    for _ in range(80):
        if rng.random() < 0.4:
            address, country = addresses.hosting(rng, rng.choice(("hosting-a", "hosting-b")))
            proxies.append((address, country, True))
        else:
            country = rng.choice(market.victim_proxies)
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
            market.victim,
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
    """Two adjacent blocks of 1000 mobile numbers of a home country (the mix: Britain) from proxy exits
    there, 10:05 to 15:05 UTC."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    home = ctx.run.market.home_block
    stem = numbers.number_range(rng, home, 4)
    first = rng.randrange(0, 9)
    blocks = (f"{stem}{first}", f"{stem}{first + 1}")
    begin = ctx.at(0.42)
    for t in arrivals(rng, begin, min(begin + 5 * 3600.0, ctx.end), lambda _ts: 1 / 25, 1 / 25):
        addresses = ctx.run.addresses
        ip = addresses.mobile_nat(rng, home) if rng.random() < 0.1 else addresses.residential(rng, home)
        clean = {"bot": False, "anonymizer": False, "datacenter": False}  # a real browser the edge trusts
        bot = _bot(
            ctx,
            home,
            numbers.in_range(rng, home, rng.choice(blocks), 3),
            {"client_ip": ip},
            home,
            user_agent=web_user_agent(rng),
            app=False,
            signals=clean,
        )
        request_id = ctx.request(t, bot, "signup", ctx.new_id())
        _attack_feedback(ctx, t, request_id, verified=0.003)


def gen_partial_signals(ctx: Context) -> None:
    """Number ranges of a high-cost country (the mix: Azerbaijan), 19:12 to 21:42 UTC: the web edge flags
    the bot; two thirds come via the app."""
    rng = ctx.rng
    target = ctx.run.market.pumped.partial
    numbers = ctx.run.numbers
    addresses = ctx.run.addresses
    ranges = [numbers.number_range(rng, target, 3) for _ in range(3)]
    servers = [addresses.hosting(rng, rng.choice(("hosting-a", "hosting-b"))) for _ in range(40)]
    begin = ctx.at(0.80)
    for t in arrivals(rng, begin, min(begin + 2.5 * 3600.0, ctx.end), lambda _ts: 1 / 12, 1 / 12):
        hosted = rng.random() < 0.6
        if hosted:
            address, country = rng.choice(servers)
        else:
            country = rng.choice((target, target, "RU", "TR"))
            address = addresses.residential(rng, country)
        web = rng.random() < 0.35
        signals: dict[str, Any] | None = None
        if web:
            signals = {"bot": rng.random() < 0.8, "datacenter": hosted}
            if rng.random() < 0.3:
                signals["session_velocity"] = "high"
        phone = numbers.in_range(rng, target, rng.choice(ranges), 3)
        agent = web_user_agent(rng) if web else app_user_agent(rng)
        bot = _bot(
            ctx,
            target,
            phone,
            {"client_ip": address},
            country,
            user_agent=agent,
            app=not web,
            signals=signals,
        )
        request_id = ctx.request(t, bot, "signup", ctx.new_id())
        _attack_feedback(ctx, t, request_id, verified=0.005, failed=0.03)


_FARM_COUNTRY = "IQ"


def gen_captcha_farm(ctx: Context) -> None:
    """From 04:48 to 16:48 UTC on a day run, about 16 requests an hour to four Iraqi number blocks from
    American residential proxy exits and a real browser: the default policy challenges each one (a foreign
    number from a home-market address) and, at that pace, blocks none; a CAPTCHA-solving service passes
    the challenges."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    exits = ctx.run.market.farm_exits
    blocks = [numbers.number_range(rng, _FARM_COUNTRY, 3) for _ in range(4)]
    begin = ctx.at(0.20)
    rate = 16 / 3600
    for t in arrivals(rng, begin, min(begin + 12 * 3600.0, ctx.end), lambda _ts: rate, rate):
        clean = {"bot": False, "anonymizer": False, "datacenter": False}  # solved by people, in a browser
        bot = _bot(
            ctx,
            _FARM_COUNTRY,
            numbers.in_range(rng, _FARM_COUNTRY, rng.choice(blocks), 3),
            {"client_ip": ctx.run.addresses.residential(rng, exits)},
            exits,
            user_agent=web_user_agent(rng),
            app=False,
            signals=clean,
        )
        ctx.request(t, bot, "signup", ctx.new_id())


_PREMIUM_ABROAD = ("GB", "LV", "LT", "EE", "AT")


def gen_premium_numbers(ctx: Context) -> None:
    """From 05:46 to 09:46 UTC, premium-rate numbers (of the home countries that have them, and a few
    abroad) from residential proxy exits: each SMS to one earns the attacker a share of its price."""
    rng = ctx.rng
    numbers = ctx.run.numbers
    regions = [r for r in (*ctx.run.market.homes, *_PREMIUM_ABROAD) if numbers.has(r, "premium_rate")]
    begin = ctx.at(0.24)
    for t in arrivals(rng, begin, min(begin + 4 * 3600.0, ctx.end), lambda _ts: 1 / 40, 1 / 40):
        region = rng.choice(regions)
        exit_country = rng.choice(_SLOW_EXITS)
        bot = _bot(
            ctx,
            region,
            numbers.random_mobile(rng, region, "premium_rate"),
            {"client_ip": ctx.run.addresses.residential(rng, exit_country)},
            exit_country,
            user_agent=app_user_agent(rng),
        )
        ctx.request(t, bot, "signup", ctx.new_id())


def _invalid_number(ctx: Context, region: str) -> str:
    """A home country's mobile number one digit too long or too short: what an enumerating script sends."""
    rng = ctx.rng
    for _ in range(50):
        valid = ctx.run.numbers.random_mobile(rng, region)
        candidate = valid + str(rng.randrange(10)) if rng.random() < 0.5 else valid[:-1]
        if not is_valid_mobile(candidate, region):
            return candidate
    raise RuntimeError(f"no invalid number found for {region}")


def gen_invalid_numbers(ctx: Context) -> None:
    """A script walking malformed numbers with the home countries' codes from a few servers, one request
    every ~6 s from 12:00 to 13:00 UTC on a day run."""
    rng = ctx.rng
    homes = ctx.run.market.homes
    servers = [ctx.run.addresses.hosting(rng, "hosting-a") for _ in range(3)]
    begin = ctx.at(0.5)
    for t in arrivals(rng, begin, min(begin + 3600.0, ctx.end), lambda _ts: 1 / 6, 1 / 6):
        region = rng.choice(homes[:3])
        address, country = rng.choice(servers)
        bot = _bot(
            ctx,
            region,
            _invalid_number(ctx, region),
            {"client_ip": address},
            country,
            user_agent=rng.choice(_SCRIPT_UAS),
            app=False,
        )
        ctx.request(t, bot, "signup", ctx.new_id())


SCENARIOS: dict[str, Scenario] = {
    "diurnal": Scenario(
        "People in the core markets and a little everywhere else, following each country's day.",
        gen_diurnal,
        "legit",
    ),
    "cgnat": Scenario(
        "Hundreds of real people a day behind one mobile carrier's NAT address (the mix: India, Brazil, "
        "US), verifying normally.",
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
        "A campaign: three times normal traffic in the home markets for two hours, mostly sign-ups, "
        "verifying normally.",
        gen_marketing_spike,
        "legit",
    ),
    "new_country_launch": Scenario(
        "A launch in a new country (the mix: Mexico) with a press-day surge, verifying normally.",
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
        "An attack inside a home country (the mix: GB) on a narrow block of 2000 numbers, from local "
        "proxy exits and a browser the edge does not flag.",
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
    # not in the mix: the business profiles' (`businesses.py`), which run every scenario
    "office": Scenario(
        "People at work behind a few office egress addresses in the home countries, verifying normally.",
        gen_office,
        "legit",
    ),
    "vpn_users": Scenario(
        "People on a consumer VPN: anonymizer-flagged, an exit abroad, verifying normally.",
        gen_vpn_users,
        "legit",
    ),
    "premium_numbers": Scenario(
        "Premium-rate numbers (home countries' and a few abroad) from residential proxy exits.",
        gen_premium_numbers,
        "attack",
    ),
    "invalid_numbers": Scenario(
        "A script sending malformed numbers with the home countries' codes from three servers.",
        gen_invalid_numbers,
        "attack",
    ),
}

MIX = "mix"
ALL = "all"
MIX_SCENARIOS = (
    "diurnal",
    "cgnat",
    "travellers",
    "marketing_spike",
    "new_country_launch",
    "fixed_ip_burst",
    "rotating_proxies",
    "low_and_slow",
    "victim_bombing",
    "core_country_block",
    "partial_signals",
    "captcha_farm",
)

# The demo's single business: Western core markets, a little traffic everywhere else.
MIX_MARKET = Market(
    audience=tuple(Audience(c.code, c.daily) for c in COUNTRIES.values() if c.daily > 0),
    homes=CORE_MARKETS,
    curve=HOURLY,
    cgnat=(("IN", 520), ("BR", 320), ("US", 220)),
    traveller_homes=_HOMES,
    visited=_VISITED,
    travellers_daily=1000,
    travellers_offset=1.0,
    launch=("MX", 2000),
    office_daily=1500,
    vpn_daily=800,
    home_block="GB",
    victim="IN",
    victim_proxies=("IN", "IN", "BD", "PK", "ID", "VN"),
    farm_exits="US",
    pumped=Pumped(burst=("UZ", "TJ"), rotating="KG", partial="AZ"),
    carrier_nat_in_country=False,
)


def resolve(names: str | list[str]) -> list[str]:
    """Scenario names from 'mix' (the demo's twelve), 'all' or a comma-separated list; raises ValueError
    naming an unknown one."""
    items = names.split(",") if isinstance(names, str) else names
    chosen: list[str] = []
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        if name in (MIX, ALL):
            chosen.extend(n for n in (MIX_SCENARIOS if name == MIX else SCENARIOS) if n not in chosen)
        elif name in SCENARIOS:
            if name not in chosen:
                chosen.append(name)
        else:
            raise ValueError(f"unknown scenario {name!r}; known: {MIX}, {ALL}, {', '.join(SCENARIOS)}")
    if not chosen:
        raise ValueError("no scenario given")
    return chosen
