"""Who is the client: X-Forwarded-For walked right to left past trusted proxies, subnets, IP lists, geo."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SUBNET_PREFIX = {4: 24, 6: 64}
MAX_FORWARDED_HOPS = 32  # header elements walked, more than any real chain; past them: bad_forwarded_for

# An IPv4 address as ipaddress reads it: four decimal octets up to 255, without leading zeros (which
# inet_aton would read as octal).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


def _v4_range(cidr: str) -> tuple[int, int]:
    network = ipaddress.IPv4Network(cidr)
    return int(network.network_address), int(network.broadcast_address)


# The IPv4 ranges no client can be in, by the name `impossible_client` gives them, in the order it tries
# them: ipaddress's `is_*` properties cost ~2.5 µs an address, and every new client address is asked.
_IMPOSSIBLE_V4 = (
    ("unspecified", _v4_range("0.0.0.0/8")),  # "this network" (RFC 791), 0.0.0.0 itself included
    ("loopback", _v4_range("127.0.0.0/8")),
    ("multicast", _v4_range("224.0.0.0/4")),
    ("broadcast", _v4_range("255.255.255.255/32")),
    ("link_local", _v4_range("169.254.0.0/16")),
    ("reserved", _v4_range("240.0.0.0/4")),
)


def impossible_client(address: IPAddress) -> str | None:
    """Why `address` cannot be the source of a client's request, or None when it can.

    Private ranges can (offices, CGNAT behind your own proxies); documentation ranges are left alone too.
    """
    if address.version == 4:
        value = int(address)
        for reason, (first, last) in _IMPOSSIBLE_V4:
            if first <= value <= last:
                return reason
        return None
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_multicast:
        return "multicast"
    if address.is_link_local:
        return "link_local"
    if address.is_reserved:
        return "reserved"
    return None


def parse_ip(text: str) -> IPAddress | None:
    """One address as proxies write it: optional port, brackets, spaces; IPv4-mapped IPv6 becomes IPv4."""
    if _DOTTED_QUAD.fullmatch(text):  # most addresses: read without ipaddress's parser, 5x slower
        return ipaddress.IPv4Address(socket.inet_aton(text))
    value = text.strip().strip('"')
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    if "%" in value:
        value = value.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class NetworkSet:
    """CIDR membership in O(number of distinct prefix lengths), for lists of any size."""

    def __init__(self, cidrs: Iterable[str | IPNetwork]) -> None:
        self._by_length: dict[tuple[int, int], set[int]] = {}
        self.size = 0
        for cidr in cidrs:
            network = cidr if not isinstance(cidr, str) else ipaddress.ip_network(cidr.strip(), strict=False)
            if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
                mapped = network.network_address.ipv4_mapped
                network = ipaddress.ip_network(f"{mapped}/{max(network.prefixlen - 96, 0)}", strict=False)
            key = (network.version, network.prefixlen)
            self._by_length.setdefault(key, set()).add(int(network.network_address))
            self.size += 1
        self._lengths = sorted(self._by_length, key=lambda k: -k[1])

    def __contains__(self, address: IPAddress) -> bool:
        if not self.size:  # most lists are empty: every new client address asks four of them
            return False
        value = int(address)
        bits = 32 if address.version == 4 else 128
        for version, length in self._lengths:
            if version == address.version:
                mask = ((1 << length) - 1) << (bits - length) if length else 0
                if value & mask in self._by_length[(version, length)]:
                    return True
        return False

    def __bool__(self) -> bool:
        return self.size > 0


class ClientAddress(msgspec.Struct, frozen=True):
    ip: IPAddress | None
    problem: str | None = None


class ClientResolver:
    """The client's address from the socket peer and X-Forwarded-For, trusting only configured proxies.

    The header is walked right to left (the right-most entry was written by our own proxy); trusted
    proxies are skipped and the first untrusted address is the client. A spoofed left-most entry is
    therefore never reached while an untrusted hop stands to its right. With no trusted proxies the
    header is ignored. A garbage element stops the walk: what lies left of it cannot be trusted, so the
    last hop we could trust is reported, with a problem code.
    """

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted = NetworkSet(trusted_proxies)

    def resolve(
        self, client_ip: str | None, remote_addr: str | None, forwarded_for: str | None
    ) -> ClientAddress:
        if client_ip is not None:
            address = parse_ip(client_ip)
            return ClientAddress(address, None if address else "bad_client_ip")
        return self._walk(remote_addr, forwarded_for)

    def _walk(self, remote_addr: str | None, forwarded_for: str | None) -> ClientAddress:
        peer = parse_ip(remote_addr) if remote_addr else None
        if peer is None:
            return ClientAddress(None, "bad_remote_addr")
        if not self._trusted or peer not in self._trusted or not forwarded_for:
            return ClientAddress(peer)
        nearest_trusted = peer
        elements = forwarded_for.rsplit(",", MAX_FORWARDED_HOPS)
        too_many = len(elements) > MAX_FORWARDED_HOPS
        for element in reversed(elements[1:] if too_many else elements):
            if not element.strip():
                continue
            hop = parse_ip(element)
            if hop is None:
                return ClientAddress(nearest_trusted, "bad_forwarded_for")
            if hop not in self._trusted:
                return ClientAddress(hop)
            nearest_trusted = hop
        return ClientAddress(nearest_trusted, "bad_forwarded_for" if too_many else None)


def subnet_of(address: IPAddress) -> str:
    """The address's /24 or /64, spelled as `ipaddress` spells the network (integer masks, no objects)."""
    prefix = SUBNET_PREFIX[address.version]
    if address.version == 4:
        return f"{_dotted(int(address) >> (32 - prefix) << (32 - prefix))}/{prefix}"
    return f"{ipaddress.IPv6Address(int(address) >> (128 - prefix) << (128 - prefix))}/{prefix}"


def spelled(address: IPAddress) -> str:
    """`str(address)`, an IPv4 one in half the time."""
    return _dotted(int(address)) if address.version == 4 else str(address)


def _dotted(value: int) -> str:
    """An IPv4 address's integer in dotted quads, as ipaddress spells it (by socket's C code)."""
    return socket.inet_ntoa(value.to_bytes(4, "big"))


class IpFacts(msgspec.Struct, frozen=True):
    ip: str
    subnet: str
    allowed: bool
    denied: bool
    datacenter: bool
    anonymizer: bool
    country: str | None
    impossible: str | None = None


class GeoReader(Protocol):
    """A country database (maxminddb's `Reader` has this shape): a record for an address, or None."""

    def get(self, address: str) -> object: ...


class IpClassifier:
    """Facts about one client address: lists, subnet, country. It is given its lists; it opens no file
    (`detector.wiring.open_ip_classifier` reads the policy's list files and GeoIP database)."""

    def __init__(
        self,
        allow: NetworkSet | None = None,
        deny: NetworkSet | None = None,
        datacenter: NetworkSet | None = None,
        anonymizer: NetworkSet | None = None,
        geo: GeoReader | None = None,
    ) -> None:
        empty = NetworkSet(())
        self._allow = allow or empty
        self._deny = deny or empty
        self._datacenter = datacenter or empty
        self._anonymizer = anonymizer or empty
        self._geo = geo

    def facts(self, address: IPAddress) -> IpFacts:
        return IpFacts(
            ip=spelled(address),
            subnet=subnet_of(address),
            allowed=address in self._allow,
            denied=address in self._deny,
            datacenter=address in self._datacenter,
            anonymizer=address in self._anonymizer,
            country=self._country(address),
            impossible=impossible_client(address),
        )

    def _country(self, address: IPAddress) -> str | None:
        if self._geo is None:
            return None
        record = self._geo.get(str(address))
        if not isinstance(record, dict):
            return None
        country = record.get("country") or record.get("registered_country") or {}
        code = country.get("iso_code") if isinstance(country, dict) else None
        return code if isinstance(code, str) else None
