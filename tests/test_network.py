import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.signals.network import (
    MAX_FORWARDED_HOPS,
    SUBNET_PREFIX,
    ClientResolver,
    NetworkSet,
    impossible_client,
    parse_ip,
    spelled,
    subnet_of,
)

PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.7", "198.51.100.7"),
        (" 198.51.100.7 ", "198.51.100.7"),
        ("198.51.100.7:51234", "198.51.100.7"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("[::ffff:198.51.100.7]:80", "198.51.100.7"),
        ('"198.51.100.7"', "198.51.100.7"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_parse_ip_accepts_what_proxies_write(text: str, expected: str) -> None:
    assert str(parse_ip(text)) == expected


@pytest.mark.parametrize(
    "text", ["", "unknown", "_hidden", "300.1.1.1", "1.2.3", "[2001:db8::1", "a:b", "::g"]
)
def test_parse_ip_refuses_garbage(text: str) -> None:
    assert parse_ip(text) is None


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    resolver = ClientResolver([])
    assert str(resolver.resolve(None, "10.0.0.1", "6.6.6.6, 198.51.100.7").ip) == "10.0.0.1"


def test_walks_right_to_left_past_trusted_proxies() -> None:
    resolver = ClientResolver(PROXIES)
    found = resolver.resolve(None, "10.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3")
    assert str(found.ip) == "198.51.100.7" and found.problem is None


def test_untrusted_peer_is_the_client_whatever_the_header_says() -> None:
    resolver = ClientResolver(PROXIES)
    assert str(resolver.resolve(None, "198.51.100.9", "6.6.6.6").ip) == "198.51.100.9"


def test_ipv6_and_mapped_hops() -> None:
    resolver = ClientResolver(PROXIES)
    found = resolver.resolve(None, "[2001:db8:ffff::2]:443", "2001:db8:1::5, [::ffff:10.0.0.9]:80")
    assert str(found.ip) == "2001:db8:1::5"


def test_empty_elements_are_skipped() -> None:
    resolver = ClientResolver(PROXIES)
    assert str(resolver.resolve(None, "10.0.0.1", "198.51.100.7, , ,").ip) == "198.51.100.7"


def test_garbage_stops_the_walk_with_a_reason() -> None:
    resolver = ClientResolver(PROXIES)
    found = resolver.resolve(None, "10.0.0.1", "198.51.100.7, garbage, 10.0.0.2")
    assert str(found.ip) == "10.0.0.2" and found.problem == "bad_forwarded_for"


def test_all_trusted_hops_give_the_leftmost() -> None:
    resolver = ClientResolver(PROXIES)
    assert str(resolver.resolve(None, "10.0.0.1", "10.0.0.3, 10.0.0.2").ip) == "10.0.0.3"


def test_the_walk_stops_after_a_bounded_number_of_hops() -> None:
    resolver = ClientResolver(PROXIES)
    last = ", ".join(["10.0.0.5"] * (MAX_FORWARDED_HOPS - 1))
    found = resolver.resolve(None, "10.0.0.1", "198.51.100.7, " + last)
    assert str(found.ip) == "198.51.100.7" and found.problem is None, "the client is the last hop walked"
    found = resolver.resolve(None, "10.0.0.1", "198.51.100.7, 10.0.0.6, " + last)
    assert str(found.ip) == "10.0.0.6" and found.problem == "bad_forwarded_for"
    found = resolver.resolve(None, "10.0.0.1", "198.51.100.7, " + "10.0.0.6, " * 100_000 + "10.0.0.5")
    assert found.problem == "bad_forwarded_for", "a huge header of trusted hops is not walked to its end"


@pytest.mark.parametrize(
    ("address", "category"),
    [("0.0.0.0", "unspecified"), ("::", "unspecified"), ("127.0.0.2", "loopback"), ("224.1.1.1", "multicast"),
     ("255.255.255.255", "broadcast"), ("169.254.1.1", "link_local"), ("fe80::2", "link_local"),
     ("250.1.1.1", "reserved"), ("10.0.0.1", None), ("100.64.0.1", None), ("fd12::1", None),
     ("192.0.2.1", None), ("8.8.4.4", None)],
)  # fmt: skip
def test_impossible_client_categories(address: str, category: str | None) -> None:
    parsed = parse_ip(address)
    assert parsed is not None and impossible_client(parsed) == category


def _named_by_ipaddress(address: ipaddress.IPv4Address) -> str | None:
    """What `impossible_client` says of an IPv4 address, from ipaddress's own properties."""
    if address.is_unspecified or address in ipaddress.ip_network("0.0.0.0/8"):
        return "unspecified"
    for name in ("loopback", "multicast"):
        if getattr(address, f"is_{name}"):
            return name
    if address == ipaddress.ip_address("255.255.255.255"):
        return "broadcast"
    return "link_local" if address.is_link_local else "reserved" if address.is_reserved else None


@pytest.mark.parametrize("seed", range(2))
def test_impossible_ipv4_clients_are_those_ipaddress_names(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.getrandbits(32) for _ in range(20_000)]
    # every /8's first and last addresses, and the edges of the /16 link-local block
    values += [first << 24 | low for first in range(256) for low in (0, 1, 0xFFFFFE, 0xFFFFFF)]
    values += [169 << 24 | 253 << 16 | 0xFFFF, 169 << 24 | 254 << 16, 169 << 24 | 254 << 16 | 0xFFFF]
    values += [169 << 24 | 255 << 16]
    for value in values:
        address = ipaddress.IPv4Address(value)
        assert impossible_client(address) == _named_by_ipaddress(address), str(address)


def test_bad_peer_and_bad_client_ip_are_reasons() -> None:
    resolver = ClientResolver(PROXIES)
    assert resolver.resolve(None, "nonsense", None).problem == "bad_remote_addr"
    assert resolver.resolve("999.1.1.1", None, None).problem == "bad_client_ip"


def test_subnets() -> None:
    assert subnet_of(ipaddress.ip_address("198.51.100.7")) == "198.51.100.0/24"
    assert subnet_of(ipaddress.ip_address("2001:db8:1:2:3::9")) == "2001:db8:1:2::/64"


@pytest.mark.parametrize("seed", range(3))
def test_addresses_and_subnets_are_spelled_as_ipaddress_spells_them(seed: int) -> None:
    rng = random.Random(seed)
    addresses = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(2000)]
    addresses += [ipaddress.IPv6Address(rng.getrandbits(rng.choice([128, 80, 64, 16]))) for _ in range(2000)]
    for address in addresses:
        network = ipaddress.ip_network(f"{address}/{SUBNET_PREFIX[address.version]}", strict=False)
        assert subnet_of(address) == str(network)
        assert spelled(address) == str(address)


ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
addresses = st.one_of(ipv4, ipv6)


def _spelled(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int | None, spaces: str) -> str:
    text = str(address)
    if port is not None:
        text = f"[{text}]:{port}" if address.version == 6 else f"{text}:{port}"
    return f"{spaces}{text}{spaces}"


@given(addresses, st.one_of(st.none(), st.integers(1, 65535)), st.sampled_from(["", " ", "  "]))
def test_parse_ip_round_trips_any_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int | None, spaces: str
) -> None:
    parsed = parse_ip(_spelled(address, port, spaces))
    expected = address.ipv4_mapped if address.version == 6 and address.ipv4_mapped else address
    assert parsed == expected


@given(st.text(max_size=60))
def test_parse_ip_never_crashes(text: str) -> None:
    parse_ip(text)


_OCTET_SPELLINGS = ["0", "00", "07", "010", "9", "99", "100", "199", "249", "250", "255", "256", "1000", ""]
_OCTET_SPELLINGS += ["+1", "\u0663", "0x1"]


@given(st.lists(st.sampled_from(_OCTET_SPELLINGS), min_size=3, max_size=5))
def test_dotted_quads_are_read_as_ipaddress_reads_them(octets: list[str]) -> None:
    """Leading zeros (octal to inet_aton), values over 255, signs and non-ASCII digits: refused alike."""
    text = ".".join(octets)
    try:
        expected: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(text)
    except ValueError:
        expected = None
    assert parse_ip(text) == expected


untrusted = st.one_of(
    st.ip_addresses(v=4).filter(lambda a: a not in ipaddress.ip_network("10.0.0.0/8")),
    st.ip_addresses(v=6).filter(
        lambda a: a.ipv4_mapped is None and a not in ipaddress.ip_network("2001:db8:ffff::/48")
    ),
)
trusted = st.one_of(
    st.integers(0, 2**24 - 1).map(lambda n: ipaddress.IPv4Address(0x0A000000 + n)),
    st.integers(0, 2**80 - 1).map(lambda n: ipaddress.IPv6Address((0x20010DB8FFFF << 80) + n)),
)
junk = st.text(max_size=20).filter(lambda s: "," not in s)


@given(
    st.lists(st.one_of(untrusted.map(str), junk), max_size=5),
    untrusted,
    st.lists(trusted, max_size=4),
    trusted,
)
def test_spoofed_left_entries_never_become_the_client(
    spoofed: list[str],
    client: ipaddress.IPv4Address,
    hops: list[ipaddress.IPv4Address],
    peer: ipaddress.IPv4Address,
) -> None:
    header = ", ".join([*spoofed, str(client), *(str(h) for h in hops)])
    found = ClientResolver(PROXIES).resolve(None, str(peer), header)
    assert found.ip == client


@given(st.text(max_size=200), st.text(max_size=40))
def test_resolver_never_crashes(header: str, peer: str) -> None:
    ClientResolver(PROXIES).resolve(None, peer, header)


ipv4_networks = st.builds(
    lambda address, length: ipaddress.ip_network(f"{address}/{length}", strict=False),
    ipv4,
    st.integers(0, 32),
)


@given(st.lists(ipv4_networks, max_size=8), ipv4)
def test_network_set_agrees_with_ipaddress(
    networks: list[ipaddress.IPv4Network], address: ipaddress.IPv4Address
) -> None:
    assert (address in NetworkSet(networks)) == any(address in n for n in networks)
