"""What is normal for this business, learned from its own verified traffic.

Attack traffic never verifies, so it cannot teach the detector that it is normal; real users do. Three
things are read from counts the store already keeps:

* **home countries**: a destination country with at least `home.min_share` of the verified OTPs of the last
  `home.baseline` (and `home.min_verified` of them) is home; so is a client country, by the same share of
  the verified OTPs requested from there. `phone.core_countries`, when set, names home countries outright.
  With fewer than `home.warmup_verified` verified OTPs in all, there is no verified history yet and the
  shares are of requests (unless configured): a new deployment's own users are most of what it is asked
  for, so it does not challenge them, and with fewer than 1 / `home.min_share` requests nothing is foreign;
* **segments**: requests with an upstream flag (anonymizer, datacenter, bot) to one phone country, requests
  from one IP country to another phone country, and requests to a foreign destination, are judged by their
  own conversion against the business's. Requests of the last `pending` are left out (their codes may
  still be verified);
* **known-good numbers**: a number verified within `rules.known_good.window`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from detector.policy import Policy, seconds
from detector.state.base import Counts

ALL = "*"  # the one key of the `all` dimension: every request of the business
_HOME_DIMENSIONS = ("all", "phone_country", "ip_country")
_SEGMENT_DIMENSIONS = ("all", "segment", "route", "phone_country")
HomeBasis = Literal["configured", "learned", "warmup"]


class Home(msgspec.Struct, frozen=True):
    home: bool
    basis: HomeBasis
    share: float = 0.0
    asked: int = 0  # requests to (or from) the country in the baseline


class Health(msgspec.Struct, frozen=True):
    """A segment's conversion next to the business's: `factor` multiplies the points of its signals."""

    factor: float
    rate: float
    overall: float


class Baseline:
    def __init__(self, policy: Policy, slots: Mapping[tuple[str, int], int] | None = None) -> None:
        """`slots`: where each counted window is in `Counts.windows` (`CounterPlan.slots`); the scorer gives
        them, once its plan includes the windows this asks for (`windows`)."""
        home = policy.home
        self._core = frozenset(policy.phone.core_countries)
        self._home_window = seconds(home.baseline)
        self._min_share = home.min_share
        self._min_verified = home.min_verified
        self._warmup = home.warmup_verified
        segments = policy.rules.segments
        self._segments = segments
        self._segment_window = seconds(segments.baseline)
        self._pending_window = seconds(segments.pending)
        known = policy.rules.known_good
        self._known_window = seconds(known.window) if known.mode != "off" else None
        self._known_min = known.min_verified
        # Where each window read per request is in `Counts.windows` (None: not counted), resolved once.
        place = dict(slots or {}).get
        self._home_places = {dim: place((dim, self._home_window)) for dim in _HOME_DIMENSIONS}
        self._segment_places = {
            dim: (place((dim, self._segment_window)), place((dim, self._pending_window)))
            for dim in _SEGMENT_DIMENSIONS
        }
        self._known_place = place(("msisdn", self._known_window)) if self._known_window is not None else None

    def windows(self) -> dict[str, set[int]]:
        """The windows this needs, per dimension."""
        wanted: dict[str, set[int]] = {dim: {self._home_window} for dim in _HOME_DIMENSIONS}
        if self._segments.mode != "off":
            for dim in _SEGMENT_DIMENSIONS:
                wanted.setdefault(dim, set()).update({self._segment_window, self._pending_window})
        if self._known_window is not None:
            wanted["msisdn"] = {self._known_window}
        return wanted

    def home(self, region: str, counts: Counts | None, dimension: str = "phone_country") -> Home:
        """Whether `region` is home: as a destination (`phone_country`: where the verified codes went) or as
        where clients are (`ip_country`: where the clients that verified were)."""
        if region in self._core:
            return Home(True, "configured")
        if counts is None:
            return Home(True, "warmup")
        places = self._home_places
        asked, everyone = _pair(counts, places["all"]) or (0, 0)
        if self._core and everyone < self._warmup:
            return Home(False, "configured")
        if everyone < self._warmup:
            # No verified history yet: the business's own requests are the best estimate of its market. An
            # attack can only make its destination look like home this way, and below 1 / min_share
            # requests in all, every country asked for is home.
            region_asked, _ = _pair(counts, places[dimension]) or (0, 0)
            share = region_asked / asked if asked else 1.0
            return Home(share >= self._min_share, "warmup", share)
        region_asked, verified = _pair(counts, places[dimension]) or (0, 0)
        share = verified / everyone
        return Home(
            share >= self._min_share and verified >= self._min_verified, "learned", share, region_asked
        )

    def health(self, dimension: str, counts: Counts) -> Health | None:
        """A segment's conversion over the settled part of the baseline, or None without enough of it."""
        rule = self._segments
        segment = self._settled(counts, dimension)
        overall = self._settled(counts, "all")
        if segment is None or overall is None or segment[0] < rule.min_requests or not overall[0]:
            return None
        rate, business = segment[1] / segment[0], overall[1] / overall[0]
        if rate >= rule.healthy_ratio * business:
            factor = 0.0
        elif rate < rule.collapse_ratio * business:
            factor = rule.boost
        else:
            factor = 1.0
        return Health(factor, round(rate, 3), round(business, 3))

    def known_good(self, counts: Counts | None) -> int:
        """How often the number was verified in the window, when that makes it known-good; else 0."""
        if counts is None or self._known_window is None:
            return 0
        _, verified = _pair(counts, self._known_place) or (0, 0)
        return verified if verified >= self._known_min else 0

    def _settled(self, counts: Counts, dimension: str) -> tuple[int, int] | None:
        """(requests, verified) of the segment baseline without the last `pending` seconds' requests (their
        codes may be verified yet)."""
        whole_place, pending_place = self._segment_places[dimension]
        whole = _pair(counts, whole_place)
        if whole is None:
            return None
        recent, _ = _pair(counts, pending_place) or (0, 0)
        return max(whole[0] - recent, 0), whole[1]


def _pair(counts: Counts, place: int | None) -> tuple[int, int] | None:
    """(requests, verified) of the window at `place`, None when the request has no entity there or the
    window is not counted."""
    return None if place is None else counts.windows[place]
