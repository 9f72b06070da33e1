"""The policy: what to count, how each signal scores, and what the score means.

A policy file is YAML with a `version`. It may set only the keys it changes: it is merged over the default
policy shipped with the package (mappings merge key by key; lists and scalars replace). Every problem is
reported at once, each naming its field as a path like `$.rules.velocity.ip_10m.threshold` and saying what
is wrong: the valid values of a choice, the closest names of a misspelt key. The IP list files and the
GeoIP database it names are read too, so a policy that loads is one the engine can start with.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import msgspec
import yaml

from detector.errors import ConfigurationError

RuleMode = Literal["enforce", "shadow", "off"]
Dimension = Literal[
    "ip", "subnet", "msisdn", "prefix", "phone_country", "ip_country", "session", "account", "device",
    "all", "segment", "route",
]  # fmt: skip
FailMode = Literal["degrade", "open", "challenge", "block"]
NUMBER_TYPES = (
    "fixed_line", "mobile", "fixed_line_or_mobile", "toll_free", "premium_rate", "shared_cost", "voip",
    "personal_number", "pager", "uan", "voicemail", "unknown",
)  # fmt: skip

_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
Duration = str


class PolicyError(ConfigurationError, ValueError):
    """A policy that cannot be used; `problems` holds every problem found, each naming its field."""

    def __init__(self, problems: str | Sequence[str], source: str | Path | None = None) -> None:
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        self.source = source
        if len(self.problems) == 1:
            listed = self.problems[0]
        else:
            listed = f"{len(self.problems)} problems" + "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(f"invalid policy {source}: {listed}" if source is not None else listed)


def seconds(duration: Duration) -> int:
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"{duration!r} is not a duration like 30s, 10m, 1h or 7d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class Rule(_Strict, frozen=True):
    mode: RuleMode = "enforce"


class ScoreConfig(_Strict, frozen=True):
    """The response ladder: allow, below `delay_at`; delay (a retry after `delay_for` passes); challenge from
    `challenge_at`; block from `block_at`. `delay_at: null` leaves the delay rung out."""

    challenge_at: float = 40.0
    block_at: float = 70.0
    velocity_cap: float = 3.0
    delay_at: float | None = None
    delay_for: Duration = "30s"


class PhoneConfig(_Strict, frozen=True):
    prefix_digits: int = 3
    core_countries: tuple[str, ...] = ()
    default_region: str | None = None


class ListsConfig(_Strict, frozen=True):
    allow_ips: tuple[str, ...] = ()
    deny_ips: tuple[str, ...] = ()
    allow_phones: tuple[str, ...] = ()
    deny_phones: tuple[str, ...] = ()
    deny_phone_countries: tuple[str, ...] = ()
    deny_number_types: tuple[str, ...] = ()
    datacenter_ip_files: tuple[str, ...] = ()
    anonymizer_ip_files: tuple[str, ...] = ()
    geoip_database: str | None = None


class CountersConfig(_Strict, frozen=True):
    buckets: int = 12


class StateConfig(_Strict, frozen=True):
    on_error: FailMode = "degrade"
    timeout_ms: int = 250
    record_ttl: Duration = "48h"


class ChallengeConfig(_Strict, frozen=True):
    ttl: Duration = "10m"  # how long a challenge stays open for its result


class TimeConfig(_Strict, frozen=True):
    """How far an event's own `ts` may be from the reference clock (see detector.eventtime)."""

    max_skew: Duration = "5m"
    max_lateness: Duration = "10m"


class RateLimitRule(Rule, frozen=True):
    limit: int = 10
    window: Duration = "30m"


class RetryDelayRule(Rule, frozen=True):
    # What a request inside the delay gets: `delay` (the ladder's rung: answered with retry_after, a retry
    # after it passes) or `block`.
    action: Literal["delay", "block"] = "block"
    base: Duration = "30s"
    cap: Duration = "1h"
    window: Duration = "24h"


class VelocityRule(Rule, frozen=True):
    dimension: Dimension = "ip"
    window: Duration = "1h"
    threshold: int = 10
    points: float = 20.0
    count: Literal["requests", "unverified"] = "requests"


class UnverifiedRule(Rule, frozen=True):
    """Unverified OTPs in `recent` over max(floor, peak × peak_factor, verified × verified_factor)"""

    dimension: Dimension = "phone_country"
    recent: Duration = "1h"
    history: Duration = "24h"
    floor: int = 20
    peak_factor: float = 1.5
    verified_factor: float = 1.0
    points: float = 30.0


class ConversionRule(Rule, frozen=True):
    """Conversion (verified ÷ requested) in `recent` collapsing against the `baseline` window."""

    dimension: Dimension = "prefix"
    recent: Duration = "1h"
    baseline: Duration = "24h"
    min_requests: int = 20
    collapse_ratio: float = 0.5
    min_rate: float = 0.2
    default_rate: float = 0.6
    points: float = 30.0


class PointsRule(Rule, frozen=True):
    points: float = 10.0


class NeverVerifiedRule(Rule, frozen=True):
    """A foreign destination with `min_requests` codes in the home baseline and not one verified."""

    points: float = 20.0
    min_requests: int = 3


class PassesRule(Rule, frozen=True):
    """Challenges passed per entity in `window`: a pass is evidence, not absolution."""

    dimension: Dimension = "prefix"
    window: Duration = "1h"
    threshold: int = 3
    points: float = 30.0


class DistinctCountriesRule(Rule, frozen=True):
    window: Duration = "24h"
    threshold: int = 3
    points: float = 25.0


class UpstreamRule(Rule, frozen=True):
    bot: float = 40.0
    anonymizer: float = 20.0
    datacenter: float = 25.0
    session_velocity_medium: float = 10.0
    session_velocity_high: float = 30.0


class NumberTypeRule(Rule, frozen=True):
    points: dict[str, float] = msgspec.field(default_factory=dict)


class HomeConfig(_Strict, frozen=True):
    """Home countries, learned: a country with a meaningful share of the verified OTPs of `baseline`."""

    baseline: Duration = "7d"
    min_share: float = 0.02
    min_verified: int = 5
    # Below this many verified OTPs in the baseline there is no history to learn from: no country is foreign
    # yet (unless `phone.core_countries` names the home ones).
    warmup_verified: int = 200


class SegmentsRule(Rule, frozen=True):
    """Upstream signals (per flag and phone country) and IP-country → phone-country routes, judged by their
    own conversion: a segment that verifies like everyone else adds no points; a collapsed one, more."""

    baseline: Duration = "24h"
    pending: Duration = "10m"  # requests this recent may still be verified: left out of the rate
    min_requests: int = 20
    healthy_ratio: float = 0.7  # rate ≥ this × the overall rate: the segment's points are waived
    collapse_ratio: float = 0.3  # rate < this × the overall rate: its points are multiplied by `boost`
    boost: float = 1.5
    # A foreign destination whose own conversion collapsed (low-and-slow pumping to costly countries)
    # multiplies its non-home points by this, to the block line. A healthy one keeps its points.
    foreign_boost: float = 3.0


class KnownGoodRule(Rule, frozen=True):
    """A number verified in `window` (a returning user, a traveller) is low-risk: geography and anonymizer
    signals add nothing for it. It never bypasses the per-number limit or the velocity rules."""

    window: Duration = "7d"
    min_verified: int = 1


class QuarantineRule(Rule, frozen=True):
    """When a request is blocked by its score and a counted rule on one of `dimensions` pushed it there, that
    entity (a prefix, subnet or client) is quarantined: every request on it is blocked until the quarantine
    expires. Each offence within `forget_after` of the last one takes the next, longer, TTL."""

    dimensions: tuple[Dimension, ...] = ("prefix", "subnet", "ip")
    ttls: tuple[Duration, ...] = ("15m", "1h", "12h")
    forget_after: Duration = "24h"


class SpendConfig(_Strict, frozen=True):
    """Where SMS prices come from: a price file (`detector prices fetch` writes one), else the bundled one."""

    prices_file: str | None = None


class SpendRule(Rule, frozen=True):
    """A circuit breaker per destination country: when the spend of `window` passes `k` × the busiest
    verified hour's spend of the `baseline` (and `min_budget`), requests to that country from numbers with no
    verified history are blocked. A country with no verified OTP in the baseline has no budget yet, and the
    breaker does not fire for it.

    The busiest hour is read from the peak verified bucket the store keeps for the `baseline` window of
    phone_country (scaled to `window`). The default baseline is 24h, whose peak the adaptive unverified rule
    already keeps: a daily cycle's busiest hour falls in any 24h, its 2h buckets (12 per window) resolve it
    without new state, and it works the same in both stores. A 7d baseline would see weekly peaks, but with
    12 buckets its 14h-wide bucket averages the busiest hour away (168 buckets would cost 14× the state)."""

    k: float = 3.0
    window: Duration = "1h"
    baseline: Duration = "24h"
    min_budget: float = 5.0  # USD per window: below this spend the breaker never fires
    # What the window's spend counts: every request, or those not verified (pumped codes never are; a
    # marketing spike's are, so it does not eat its own budget: on the simulated mix, counting requests
    # blocks legitimate users of a morning ramp unless k is about 10).
    count: Literal["requests", "unverified"] = "unverified"


class Rules(_Strict, frozen=True):
    invalid_number: Rule = Rule()
    deny_lists: Rule = Rule()
    msisdn_rate_limit: RateLimitRule = RateLimitRule()
    retry_delay: RetryDelayRule = RetryDelayRule()
    velocity: dict[str, VelocityRule] = msgspec.field(default_factory=dict)
    passes: dict[str, PassesRule] = msgspec.field(default_factory=dict)
    unverified: dict[str, UnverifiedRule] = msgspec.field(default_factory=dict)
    conversion: dict[str, ConversionRule] = msgspec.field(default_factory=dict)
    ip_country_mismatch: PointsRule = PointsRule()
    non_core_destination: PointsRule = PointsRule()
    third_country_client: PointsRule = PointsRule()
    never_verified_destination: NeverVerifiedRule = NeverVerifiedRule()
    segments: SegmentsRule = SegmentsRule()
    known_good: KnownGoodRule = KnownGoodRule()
    quarantine: QuarantineRule = QuarantineRule()
    spend: SpendRule = SpendRule()
    impossible_client_ip: PointsRule = PointsRule()
    distinct_countries_per_ip: DistinctCountriesRule = DistinctCountriesRule()
    upstream: UpstreamRule = UpstreamRule()
    number_type: NumberTypeRule = NumberTypeRule()


class Policy(_Strict, frozen=True):
    version: str
    mode: Literal["enforce", "shadow"] = "enforce"
    trusted_proxies: tuple[str, ...] = ()
    score: ScoreConfig = ScoreConfig()
    phone: PhoneConfig = PhoneConfig()
    lists: ListsConfig = ListsConfig()
    counters: CountersConfig = CountersConfig()
    state: StateConfig = StateConfig()
    time: TimeConfig = TimeConfig()
    challenge: ChallengeConfig = ChallengeConfig()
    home: HomeConfig = HomeConfig()
    spend: SpendConfig = SpendConfig()
    rules: Rules = Rules()


def default_policy_data() -> dict[str, Any]:
    text = resources.files("detector").joinpath("default_policy.yaml").read_text()
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_policy(path: str | Path | None = None) -> Policy:
    """The default policy, with the file at `path` (if any) merged over it."""
    data = default_policy_data()
    if path is not None:
        try:
            override = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise PolicyError(f"cannot read the file: {exc.strerror}", path) from exc
        except yaml.YAMLError as exc:
            raise PolicyError(f"not valid YAML: {exc}", path) from exc
        if override is None:
            override = {}
        if not isinstance(override, dict):
            raise PolicyError(f"a policy is a YAML mapping, got {type(override).__name__}", path)
        data = merge(data, override)
    return policy_from_data(data, path)


def policy_from_data(data: dict[str, Any], source: str | Path | None = None) -> Policy:
    """The policy in `data` (already merged over the default), or a `PolicyError` with every problem."""
    data = _unquoted_off(data)
    problems = list(_shape_problems(data, Policy, "$"))
    try:
        # What passed the shape check, so the checks below also run on the rest of a broken policy.
        policy = msgspec.convert(_without_problems(data, Policy), Policy)
    except msgspec.ValidationError as exc:
        raise PolicyError([*problems, str(exc)], source) from exc
    problems += _semantic_problems(policy)
    problems += _file_problems(policy.lists)
    problems += _price_file_problems(policy.spend)
    if problems:
        raise PolicyError(problems, source)
    return policy


def read_cidr_file(path: str) -> list[str]:
    """The CIDR blocks of a list file: one per line, `#` comments and blank lines skipped."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path} is not a text file ({exc.reason})") from exc
    cidrs: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            problems.append(f"{path}:{number}: {entry!r} is not an IP address or CIDR block")
        cidrs.append(entry)
    if problems:
        shown = problems[:_MAX_LINE_PROBLEMS]
        if len(problems) > len(shown):
            shown.append(f"{path}: {len(problems) - len(shown)} more lines like these")
        raise PolicyError(shown)
    return cidrs


_MAX_LINE_PROBLEMS = 5


def _unquoted_off(data: Any) -> Any:
    """YAML 1.1 reads an unquoted `mode: off` as false; that is what the author meant."""
    if isinstance(data, dict):
        return {k: "off" if k == "mode" and v is False else _unquoted_off(v) for k, v in data.items()}
    return data


def _shape_problems(value: Any, kind: Any, where: str) -> Iterator[str]:
    """Every unknown key, missing key and value of the wrong type or choice under `where`."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        if not isinstance(value, dict):
            yield f"expected a mapping, got {_type_name(value)} - at `{where}`"
            return
        fields = {field.encode_name: field for field in msgspec.structs.fields(kind)}
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                yield f"unknown key {key!r}{_did_you_mean(str(key), fields)} - at `{where}`"
            else:
                yield from _shape_problems(item, field.type, f"{where}.{key}")
        for name, field in fields.items():
            if field.required and name not in value:
                yield f"`{name}` is required - at `{where}`"
    elif get_origin(kind) is dict:
        if not isinstance(value, dict):
            yield f"expected a mapping, got {_type_name(value)} - at `{where}`"
            return
        _, item_kind = get_args(kind)
        for key, item in value.items():
            yield from _shape_problems(item, item_kind, f"{where}.{key}")
    elif get_origin(kind) is Literal:
        choices = get_args(kind)
        if value not in choices:
            yield f"must be one of {', '.join(map(str, choices))}, not {value!r} - at `{where}`"
    else:
        try:
            msgspec.convert(value, kind)
        except msgspec.ValidationError as exc:
            yield f"{exc}".replace(" - at `$`", "") + f" - at `{where}`"


def _without_problems(value: Any, kind: Any) -> Any:
    """`value` without the entries `_shape_problems` objects to (their defaults stand in)."""
    if not isinstance(value, dict):
        return value
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        kinds = {field.encode_name: field.type for field in msgspec.structs.fields(kind)}
    elif get_origin(kind) is dict:
        kinds = dict.fromkeys(value, get_args(kind)[1])
    else:
        return value
    return {
        key: _without_problems(item, kinds[key])
        for key, item in value.items()
        if (key in kinds and not any(_shape_problems(item, kinds[key], "$")))
        or (key in kinds and isinstance(item, dict) and _is_container(kinds[key]))
    }


def _is_container(kind: Any) -> bool:
    return (isinstance(kind, type) and issubclass(kind, msgspec.Struct)) or get_origin(kind) is dict


def _did_you_mean(key: str, names: Any) -> str:
    close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(f"`{name}`" for name in close) + "?)"
    return f" (valid keys: {', '.join(names)})"


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _file_problems(lists: ListsConfig) -> Iterator[str]:
    for name in ("datacenter_ip_files", "anonymizer_ip_files"):
        for index, path in enumerate(getattr(lists, name)):
            try:
                read_cidr_file(path)
            except PolicyError as exc:
                yield from (f"{problem} - at `$.lists.{name}[{index}]`" for problem in exc.problems)
    if lists.geoip_database is not None:
        import maxminddb

        try:
            maxminddb.open_database(lists.geoip_database).close()
        except OSError as exc:
            yield f"cannot read {lists.geoip_database}: {exc.strerror} - at `$.lists.geoip_database`"
        except (ValueError, maxminddb.InvalidDatabaseError) as exc:
            yield f"{lists.geoip_database} is not a MaxMind database ({exc}) - at `$.lists.geoip_database`"


def _price_file_problems(spend: SpendConfig) -> Iterator[str]:
    if spend.prices_file is not None:
        from detector.prices import PriceFileError, load_prices

        try:
            load_prices(spend.prices_file)
        except PriceFileError as exc:
            yield from (f"{line} - at `$.spend.prices_file`" for line in str(exc).splitlines())


def _semantic_problems(policy: Policy) -> Iterator[str]:
    for index, cidr in enumerate(policy.trusted_proxies):
        yield from _cidr_problem(cidr, f"$.trusted_proxies[{index}]")
    for name in ("allow_ips", "deny_ips"):
        for index, cidr in enumerate(getattr(policy.lists, name)):
            yield from _cidr_problem(cidr, f"$.lists.{name}[{index}]")
    for name in ("deny_phone_countries",):
        for index, code in enumerate(getattr(policy.lists, name)):
            if not (len(code) == 2 and code.isalpha() and code.isupper()):
                yield f"{code!r} is not an ISO 3166 alpha-2 code - at `$.lists.{name}[{index}]`"
    for index, code in enumerate(policy.phone.core_countries):
        if not (len(code) == 2 and code.isalpha() and code.isupper()):
            yield f"{code!r} is not an ISO 3166 alpha-2 code - at `$.phone.core_countries[{index}]`"
    known = ", ".join(NUMBER_TYPES)
    for index, kind in enumerate(policy.lists.deny_number_types):
        if kind not in NUMBER_TYPES:
            yield f"{kind!r} is not a number type ({known}) - at `$.lists.deny_number_types[{index}]`"
    for kind in policy.rules.number_type.points:
        if kind not in NUMBER_TYPES:
            yield f"{kind!r} is not a number type ({known}) - at `$.rules.number_type.points`"
    if not 0 < policy.score.challenge_at <= policy.score.block_at:
        yield "need 0 < challenge_at <= block_at - at `$.score`"
    delay_at = policy.score.delay_at
    if delay_at is not None and not 0 < delay_at < policy.score.challenge_at:
        yield (
            f"must be more than 0 and below challenge_at ({policy.score.challenge_at:g}), not {delay_at:g}"
            " - at `$.score.delay_at`"
        )
    if not 0 <= policy.phone.prefix_digits <= 8:
        yield "must be between 0 and 8 - at `$.phone.prefix_digits`"
    if not 2 <= policy.counters.buckets <= 120:
        yield "must be between 2 and 120 - at `$.counters.buckets`"
    if not policy.rules.spend.k > 0:
        yield "must be more than 0 - at `$.rules.spend.k`"
    if not policy.rules.spend.min_budget >= 0:
        yield "must be at least 0 - at `$.rules.spend.min_budget`"
    if policy.rules.never_verified_destination.min_requests < 1:
        yield "must be at least 1 - at `$.rules.never_verified_destination.min_requests`"
    if policy.rules.msisdn_rate_limit.limit < 1:
        yield "must be at least 1 - at `$.rules.msisdn_rate_limit.limit`"
    yield from _duration_problems(policy)


def _duration_problems(policy: Policy) -> Iterator[str]:
    def check(value: str, where: str) -> Iterator[str]:
        try:
            if seconds(value) <= 0:
                yield f"must be longer than 0 - at `{where}`"
        except ValueError as exc:
            yield f"{exc} - at `{where}`"

    rules = policy.rules
    yield from check(policy.state.record_ttl, "$.state.record_ttl")
    yield from check(policy.time.max_skew, "$.time.max_skew")
    yield from check(policy.time.max_lateness, "$.time.max_lateness")
    yield from check(rules.msisdn_rate_limit.window, "$.rules.msisdn_rate_limit.window")
    for field in ("base", "cap", "window"):
        yield from check(getattr(rules.retry_delay, field), f"$.rules.retry_delay.{field}")
    yield from check(rules.distinct_countries_per_ip.window, "$.rules.distinct_countries_per_ip.window")
    yield from check(policy.challenge.ttl, "$.challenge.ttl")
    yield from check(policy.score.delay_for, "$.score.delay_for")
    yield from check(policy.home.baseline, "$.home.baseline")
    yield from check(rules.segments.baseline, "$.rules.segments.baseline")
    yield from check(rules.segments.pending, "$.rules.segments.pending")
    yield from check(rules.known_good.window, "$.rules.known_good.window")
    yield from check(rules.quarantine.forget_after, "$.rules.quarantine.forget_after")
    yield from check(rules.spend.window, "$.rules.spend.window")
    yield from check(rules.spend.baseline, "$.rules.spend.baseline")
    if not rules.quarantine.ttls:
        yield "needs at least one duration - at `$.rules.quarantine.ttls`"
    for index, ttl in enumerate(rules.quarantine.ttls):
        yield from check(ttl, f"$.rules.quarantine.ttls[{index}]")
    for name, passes in rules.passes.items():
        yield from check(passes.window, f"$.rules.passes.{name}.window")
        if passes.threshold < 1:
            yield f"must be at least 1 - at `$.rules.passes.{name}.threshold`"
    for name, velocity in rules.velocity.items():
        yield from check(velocity.window, f"$.rules.velocity.{name}.window")
        if velocity.threshold < 1:
            yield f"must be at least 1 - at `$.rules.velocity.{name}.threshold`"
    for name, unverified in rules.unverified.items():
        yield from check(unverified.recent, f"$.rules.unverified.{name}.recent")
        yield from check(unverified.history, f"$.rules.unverified.{name}.history")
    for name, conversion in rules.conversion.items():
        yield from check(conversion.recent, f"$.rules.conversion.{name}.recent")
        yield from check(conversion.baseline, f"$.rules.conversion.{name}.baseline")


def _cidr_problem(value: str, where: str) -> Iterator[str]:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        yield f"{value!r} is not an IP address or CIDR block - at `{where}`"
