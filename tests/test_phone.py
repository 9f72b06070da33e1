import random

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.signals.phone import PhoneParser, full_parse

TYPES = [
    phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.VOIP, phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.SHARED_COST,
]


def _examples() -> list[str]:
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return found


EXAMPLES = _examples()


@pytest.mark.parametrize(
    ("phone", "country", "e164", "region", "kind"),
    [
        ("+447400123456", None, "+447400123456", "GB", "mobile"),
        ("07400 123456", "GB", "+447400123456", "GB", "mobile"),
        ("0044 7400 123456", None, "+447400123456", "GB", "mobile"),
        ("+1 (201) 555-0123", None, "+12015550123", "US", "fixed_line_or_mobile"),
        ("+919876543210", None, "+919876543210", "IN", "mobile"),
        ("+499001234567", None, "+499001234567", "DE", "premium_rate"),
    ],
)
def test_parse(phone: str, country: str | None, e164: str, region: str, kind: str) -> None:
    facts = PhoneParser().parse(phone, country)
    assert (facts.e164, facts.valid, facts.region, facts.kind) == (e164, True, region, kind)


def test_prefix_drops_the_last_digits() -> None:
    assert PhoneParser(prefix_digits=3).parse("+447400123456").prefix == "+447400123"
    assert PhoneParser(prefix_digits=5).parse("+447400123456").prefix == "+4474001"


@pytest.mark.parametrize("phone", ["", "abc", "+0123456789", "12345", "+44"])
def test_unparseable_numbers_are_invalid_not_errors(phone: str) -> None:
    facts = PhoneParser().parse(phone)
    assert not facts.valid


def test_national_number_without_country_is_unparseable() -> None:
    assert PhoneParser().parse("07400123456").problem == "unparseable_number"
    assert PhoneParser(default_region="GB").parse("07400123456").valid


def test_block_cache_agrees_with_a_full_parse() -> None:
    """The cache answers per block of 1,000 numbers; count how often that differs from phonenumbers."""
    rng = random.Random(7)
    parser = PhoneParser()
    checked = differ = 0
    for example in EXAMPLES:
        for _ in range(25):
            number = example[:-3] + f"{rng.randrange(1000):03d}"
            checked += 1
            differ += parser.number_facts(number) != full_parse(number)
    assert checked > 20_000
    assert differ / checked < 0.002, f"{differ} of {checked} differ"


@given(st.sampled_from(EXAMPLES), st.integers(0, 999))
def test_cached_facts_are_stable(example: str, tail: int) -> None:
    parser = PhoneParser()
    number = example[:-3] + f"{tail:03d}"
    assert parser.parse(number) == parser.parse(number)


@given(st.text(max_size=30), st.one_of(st.none(), st.sampled_from(["GB", "US", "DE", "ZZ"])))
def test_parser_never_crashes(phone: str, country: str | None) -> None:
    PhoneParser().parse(phone, country)
