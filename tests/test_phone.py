import random
import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.signals.phone import PhoneParser, full_parse

TYPES = list(phonenumbers.PhoneNumberType.values())


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


def test_fast_path_agrees_with_a_full_parse() -> None:
    """Random numbers around every region's example numbers, varying the last 1 to 7 digits."""
    rng = random.Random(7)
    parser = PhoneParser()
    checked, differ = 0, []
    for example in EXAMPLES:
        for _ in range(20):
            tail = min(rng.randint(1, 7), len(example) - 3)
            number = example[:-tail] + "".join(rng.choice("0123456789") for _ in range(tail))
            checked += 1
            if parser.number_facts(number) != full_parse(number):
                differ.append(number)
    assert checked > 20_000
    assert differ == []


@given(st.sampled_from(EXAMPLES), st.integers(0, 9999))
def test_fast_path_agrees_with_a_full_parse_anywhere(example: str, tail: int) -> None:
    number = example[:-4] + f"{tail:04d}"
    assert PhoneParser().number_facts(number) == full_parse(number)


@given(st.text(max_size=30), st.one_of(st.none(), st.sampled_from(["GB", "US", "DE", "ZZ"])))
def test_parser_never_crashes(phone: str, country: str | None) -> None:
    PhoneParser().parse(phone, country)


_DIGIT_SETS = [0x30, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6]  # ASCII, full-width, Arabic-Indic, Persian, ...
_SPACERS = ["", " ", "-", ".", "/", "(", ")", "\u00a0", "\u2009", "\u2013", "\u200e", "\t"]


@given(st.sampled_from(EXAMPLES), st.data())
def test_every_spelling_of_a_number_is_its_ascii_e164(example: str, data: st.DataObject) -> None:
    parser = PhoneParser()
    expected = parser.parse(example)
    spelled = ["+"]
    for char in example[1:]:
        spelled.append(data.draw(st.sampled_from(_SPACERS)))
        spelled.append(chr(data.draw(st.sampled_from(_DIGIT_SETS)) + int(char)))
    spelled.append(data.draw(st.sampled_from(["", "\n", " "])))
    facts = parser.parse("".join(spelled))
    assert facts == expected and facts.e164 is not None and facts.e164.isascii()


@given(st.text(max_size=30), st.one_of(st.none(), st.sampled_from(["GB", "US", "DE"])))
def test_a_parsed_number_is_always_ascii_e164(phone: str, country: str | None) -> None:
    e164 = PhoneParser().parse(phone, country).e164
    assert e164 is None or re.fullmatch(r"\+[1-9][0-9]{6,14}", e164, re.ASCII)
