"""Phone facts: E.164, validity, region, number type and prefix, fast enough for unique numbers.

Parsing with phonenumbers costs ~50 µs a number, and an attack is many unique numbers. Two things make
it cheap:
- `NumberPlan` runs phonenumbers' own metadata (the same patterns, in the same order as its
  `_number_type_helper`) with the regular expressions compiled once, straight on the digits after the
  country code: the types a number of its length may be are one alternation, tried in that order in one
  match (~2 µs). A number it finds invalid is confirmed by a full parse, so rare plan quirks
  (national prefixes inside E.164) cannot make a valid number invalid; `tests/test_phone.py` checks it
  against a full parse on numbers from every region.
- Repeated numbers (retries, victims, sequential attacks) hit a per-number cache.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import msgspec
import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from detector.memo import Memo

REGION_CODE_FOR_NON_GEO_ENTITY = "001"

_TYPE_NAMES = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
    PhoneNumberType.UNKNOWN: "unknown",
}
_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)
_SEPARATORS = frozenset("().-/\\")
_MAX_DIGITS = 20


def canonical_digits(phone: str) -> str | None:
    """One spelling of what the client typed: an optional leading "+" and ASCII digits, or None.

    NFKC first (full-width digits and plus), then whitespace, separators, dashes and invisible format
    characters (direction marks pasted from right-to-left text) go, then every Unicode decimal digit becomes
    its ASCII digit: Arabic-Indic and Eastern Arabic-Indic digits, common in the Gulf, are not mapped by NFKC.
    Anything else (letters, which phonenumbers would read as keypad digits) makes the number unparseable.
    """
    text = unicodedata.normalize("NFKC", phone)
    out: list[str] = []
    for char in text:
        if char.isspace() or char in _SEPARATORS:
            continue
        digit = unicodedata.decimal(char, None)
        if digit is not None:
            out.append(chr(48 + digit))
        elif char == "+" and not out:
            out.append(char)
        elif unicodedata.category(char) not in ("Pd", "Cf"):
            return None
    if len(out) > _MAX_DIGITS + 1:
        return None
    return "".join(out)


class NumberFacts(msgspec.Struct, frozen=True):
    """What the number plan says about a block of numbers."""

    valid: bool
    region: str | None
    kind: str


class PhoneFacts(msgspec.Struct, frozen=True):
    e164: str | None
    valid: bool
    region: str | None
    kind: str
    prefix: str | None
    problem: str | None = None


class PhoneParser:
    def __init__(self, prefix_digits: int = 3, default_region: str | None = None) -> None:
        self.prefix_digits = prefix_digits
        self.default_region = default_region
        # ~100 B an entry measured, plus the number: 128 MB hold ~750,000 numbers (it used to keep 500,000)
        self._numbers: Memo[str, NumberFacts] = Memo(budget_bytes=128 << 20, entry_bytes=160)
        self._plan = NumberPlan()

    def parse(self, phone: str, country: str | None = None) -> PhoneFacts:
        e164 = phone if _E164.fullmatch(phone) else self._to_e164(phone, country)
        if e164 is None:
            return PhoneFacts(None, False, None, "unknown", None, "unparseable_number")
        facts = self.number_facts(e164)
        prefix = e164[: len(e164) - self.prefix_digits] if self.prefix_digits else e164
        return PhoneFacts(e164, facts.valid, facts.region, facts.kind, prefix)

    def number_facts(self, e164: str) -> NumberFacts:
        facts = self._numbers.get(e164)
        if facts is None:
            facts = self._plan.facts(e164)
            facts = self._numbers.put(e164, facts if facts.valid else full_parse(e164))
        return facts

    def _to_e164(self, phone: str, country: str | None) -> str | None:
        compact = canonical_digits(phone)
        if not compact or compact == "+":
            return None
        if compact.startswith("00"):
            compact = "+" + compact[2:]
        if _E164.fullmatch(compact):
            return compact
        region = country or self.default_region
        if region is None and not compact.startswith("+"):
            return None
        try:
            number = phonenumbers.parse(compact, region)
        except phonenumbers.NumberParseException:
            return None
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return e164 if _E164.fullmatch(e164) else None


def full_parse(e164: str) -> NumberFacts:
    """The uncached answer, straight from phonenumbers' metadata."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return NumberFacts(False, None, "unknown")
    valid = phonenumbers.is_valid_number(number)
    region = phonenumbers.region_code_for_number(number) if valid else None
    if region is None:
        candidates = phonenumbers.region_codes_for_country_code(number.country_code or 0)
        region = candidates[0] if len(candidates) == 1 else None
    kind = _TYPE_NAMES.get(phonenumbers.number_type(number), "unknown") if valid else "unknown"
    return NumberFacts(valid, region if region != "001" else None, kind)


_SPECIFIC_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)
_Desc = tuple[frozenset[int], "re.Pattern[str]"] | None


def _calling_codes_by_head() -> dict[str, str]:
    """Every string of one to three digits, to the calling code it begins with (codes are prefix-free, so
    there is at most one): a number's code is one lookup of its first three digits."""
    codes = {str(code) for code in COUNTRY_CODE_TO_REGION_CODE}
    by_head = {}
    for length in (1, 2, 3):
        for number in range(10**length):
            head = f"{number:0{length}d}"
            code = next((head[:size] for size in range(1, length + 1) if head[:size] in codes), None)
            if code is not None:
                by_head[head] = code
    return by_head


_CALLING_CODE_BY_HEAD = _calling_codes_by_head()


def _desc(number_desc: Any) -> _Desc:
    if number_desc is None or not number_desc.national_number_pattern:
        return None
    return frozenset(number_desc.possible_length or ()), re.compile(number_desc.national_number_pattern)


def _matches(desc: _Desc, nsn: str) -> bool:
    if desc is None:
        return False
    lengths, pattern = desc
    if lengths and len(nsn) not in lengths:
        return False
    return pattern.fullmatch(nsn) is not None


@dataclass(frozen=True, slots=True)
class _RegionPlan:
    region: str
    leading_digits: re.Pattern[str] | None
    general: _Desc
    specific: tuple[tuple[_Desc, int], ...]
    fixed_line: _Desc
    mobile: _Desc
    same_fixed_and_mobile: bool
    # Per number length: the types a number of that length may be, as one alternation in the order they are
    # tried (the first that matches is the type), and the type of each alternative's group.
    by_length: dict[int, tuple[re.Pattern[str] | None, dict[str, int]]] = field(default_factory=dict)

    @classmethod
    def of(cls, region: str, metadata: Any) -> _RegionPlan:
        return cls(
            region=region,
            leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits else None,
            general=_desc(metadata.general_desc),
            specific=tuple((_desc(getattr(metadata, name)), kind) for name, kind in _SPECIFIC_TYPES),
            fixed_line=_desc(metadata.fixed_line),
            mobile=_desc(metadata.mobile),
            same_fixed_and_mobile=bool(metadata.same_mobile_and_fixed_line_pattern),
        )

    def number_type(self, nsn: str) -> int:
        """phonenumbers' `_number_type_helper`: a number of the general pattern is of the first specific
        type it matches, else fixed line and mobile; one match of the plan for its length."""
        types = self.by_length.get(len(nsn)) or self._types_of_length(len(nsn))
        plan, kinds = types
        match = plan.fullmatch(nsn) if plan is not None else None
        if match is None or match.lastgroup is None:
            return PhoneNumberType.UNKNOWN
        kind = kinds[match.lastgroup]
        if kind == PhoneNumberType.FIXED_LINE and (self.same_fixed_and_mobile or _matches(self.mobile, nsn)):
            return PhoneNumberType.FIXED_LINE_OR_MOBILE
        return kind

    def _types_of_length(self, length: int) -> tuple[re.Pattern[str] | None, dict[str, int]]:
        """The general pattern as a lookahead, then the types a number of `length` may be, as alternatives in
        the order they are tried: the first that matches is the number's type."""
        tried = [*self.specific, (self.fixed_line, PhoneNumberType.FIXED_LINE)]
        if not self.same_fixed_and_mobile:  # the same patterns: a number that is no fixed line is no mobile
            tried.append((self.mobile, PhoneNumberType.MOBILE))
        alternatives: list[str] = []
        kinds: dict[str, int] = {}
        for desc, kind in tried:
            if _admits(desc, length):
                # Named groups: an alternative's own group closes last, so it is the match's `lastgroup`.
                name = f"t{len(alternatives)}"
                alternatives.append(f"(?P<{name}>{desc[1].pattern})")
                kinds[name] = kind
        plan = None
        if alternatives and _admits(self.general, length):
            general = self.general[1].pattern
            plan = re.compile(f"(?=(?:{general})\\Z)(?:{'|'.join(alternatives)})")
        self.by_length[length] = (plan, kinds)
        return plan, kinds


def _admits(desc: _Desc, length: int) -> TypeGuard[tuple[frozenset[int], re.Pattern[str]]]:
    """Whether a number of `length` may match `desc`."""
    return desc is not None and (not desc[0] or length in desc[0])


class NumberPlan:
    """phonenumbers' metadata, compiled once per country calling code."""

    def __init__(self) -> None:
        self._plans: dict[str, tuple[_RegionPlan, ...]] = {}  # by calling code, as its digits

    def facts(self, e164: str) -> NumberFacts:
        digits = e164[1:]
        code = _CALLING_CODE_BY_HEAD.get(digits[:3])
        if code is None:
            return NumberFacts(False, None, "unknown")
        return self._facts(code, digits[len(code) :])

    def _facts(self, code: str, nsn: str) -> NumberFacts:
        plans = self._plans.get(code)
        if plans is None:
            plans = self._plans[code] = self._compile(int(code))
        several = len(plans) > 1
        for plan in plans:
            if several and plan.leading_digits is not None:
                if plan.leading_digits.match(nsn):
                    return self._answer(plan, plan.number_type(nsn))
                continue
            kind = plan.number_type(nsn)
            if kind != PhoneNumberType.UNKNOWN:
                return self._answer(plan, kind)
        return NumberFacts(False, None, "unknown")

    @staticmethod
    def _answer(plan: _RegionPlan, kind: int) -> NumberFacts:
        if kind == PhoneNumberType.UNKNOWN:
            return NumberFacts(False, None, "unknown")
        region = None if plan.region == REGION_CODE_FOR_NON_GEO_ENTITY else plan.region
        return NumberFacts(True, region, _TYPE_NAMES.get(kind, "unknown"))

    @staticmethod
    def _compile(code: int) -> tuple[_RegionPlan, ...]:
        plans = []
        for region in COUNTRY_CODE_TO_REGION_CODE[code]:
            if region == REGION_CODE_FOR_NON_GEO_ENTITY:
                metadata = PhoneMetadata.metadata_for_nongeo_region(code, None)
            else:
                metadata = PhoneMetadata.metadata_for_region(region, None)
            if metadata is not None:
                plans.append(_RegionPlan.of(region, metadata))
        return tuple(plans)
