"""Classifies IP addresses for the federation client's SSRF guard."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

__all__ = [
    "AddressRefused",
    "IPAddress",
    "IPNetwork",
    "address_allowed",
    "is_public_address",
    "normalise_address",
    "parse_allowed_networks",
    "parse_host_literal",
    "refusal_reason",
]


class AddressRefused(Exception):
    """The federation client will not connect to `host`, for `reason`."""

    def __init__(self, host: str, reason: str) -> None:
        # Both go to Exception.args so the exception pickles (it may cross a worker boundary).
        super().__init__(host, reason)
        self.host = host
        self.reason = reason

    def __str__(self) -> str:
        return f"refusing to connect to {self.host!r}: {self.reason}"


# Special-purpose IPv4 ranges (IANA registry, RFC 6890 and successors) that a federation peer
# can never legitimately live in. More specific entries come first so the reason names them.
_REFUSED_V4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8): connects to the local host on many systems"),
        ("10.0.0.0/8", "private (10.0.0.0/8)"),
        ("100.64.0.0/10", "carrier-grade NAT shared space (100.64.0.0/10)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("169.254.169.254/32", "cloud metadata service (169.254.169.254)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
        ("172.16.0.0/12", "private (172.16.0.0/12)"),
        ("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
        ("192.0.2.0/24", "documentation (192.0.2.0/24)"),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast (192.88.99.0/24)"),
        ("192.168.0.0/16", "private (192.168.0.0/16)"),
        ("198.18.0.0/15", "benchmarking (198.18.0.0/15)"),
        ("198.51.100.0/24", "documentation (198.51.100.0/24)"),
        ("203.0.113.0/24", "documentation (203.0.113.0/24)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("255.255.255.255/32", "limited broadcast (255.255.255.255)"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    )
)

# The same for IPv6. Every prefix that embeds an IPv4 address is refused in its raw form too
# (except the NAT64 well-known prefix, see _V6_GLOBAL): the embedded address is classified
# separately, and a genuine peer is never reached through these spellings.
_REFUSED_V6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified address (::): connects to the local host"),
        ("::1/128", "loopback (::1)"),
        ("::ffff:0:0/96", "IPv4-mapped IPv6 (::ffff:0:0/96)"),
        ("::ffff:0:0:0/96", "IPv4-translated IPv6 (::ffff:0:0:0/96)"),
        ("::/96", "IPv4-compatible IPv6 (::/96, deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64 prefix (64:ff9b:1::/48)"),
        ("100::/64", "discard-only (100::/64)"),
        ("2001::/32", "Teredo (2001::/32)"),
        ("2001:2::/48", "benchmarking (2001:2::/48)"),
        ("2001:10::/28", "ORCHID (2001:10::/28)"),
        ("2001:20::/28", "ORCHIDv2 (2001:20::/28)"),
        ("2001::/23", "IETF protocol assignments (2001::/23)"),
        ("2001:db8::/32", "documentation (2001:db8::/32)"),
        ("2002::/16", "6to4 (2002::/16)"),
        ("3fff::/20", "documentation (3fff::/20)"),
        ("5f00::/16", "SRv6 SIDs (5f00::/16)"),
        ("fc00::/7", "unique local (fc00::/7)"),
        ("fe80::/10", "link-local (fe80::/10)"),
        ("fec0::/10", "site-local (fec0::/10, deprecated)"),
        ("ff00::/8", "multicast (ff00::/8)"),
    )
)

# Only 2000::/3 is allocated as global unicast; everything else in the IPv6 space is reserved or
# special. The NAT64 well-known prefix is the one exception: IANA marks it globally reachable,
# and RFC 6052 forbids using it with non-global IPv4, which the embedded check enforces.
_V6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = IPv6Network("64:ff9b:1::/48")
_V4_MAPPED = IPv6Network("::ffff:0:0/96")
_V4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_V4_COMPATIBLE = IPv6Network("::/96")
_SIX_TO_FOUR = IPv6Network("2002::/16")
_TEREDO = IPv6Network("2001::/32")
_LOW_32 = 0xFFFFFFFF


def _as_address(addr: IPAddress | str) -> IPAddress:
    # Strict parsing only: the odd spellings belong to parse_host_literal. The zone of a scoped
    # IPv6 address (fe80::1%eth0) does not change where it points, so it is dropped.
    parsed = ip_address(addr) if isinstance(addr, str) else addr
    if isinstance(parsed, IPv6Address) and parsed.scope_id is not None:
        return IPv6Address(int(parsed))
    return parsed


def normalise_address(addr: IPAddress | str) -> IPAddress:
    """The address a connection to `addr` really reaches, for classification.

    IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64
    well-known and local-use prefixes, 6to4, Teredo's client) give the embedded IPv4 address;
    `::` and `::1` stay themselves, as does every other address. A zone id is dropped.
    """
    address = _as_address(addr)
    if isinstance(address, IPv4Address):
        return address
    value = int(address)
    if address in _V4_MAPPED or address in _V4_TRANSLATED:
        return IPv4Address(value & _LOW_32)
    if address in _V4_COMPATIBLE:
        # :: and ::1 are the unspecified and loopback addresses, not 0.0.0.0 and 0.0.0.1.
        return address if value <= 1 else IPv4Address(value & _LOW_32)
    if address in _NAT64_WELL_KNOWN or address in _NAT64_LOCAL_USE:
        # The local-use prefix may be deployed with any RFC 6052 length; the /96 layout is the
        # common one. The whole /48 is refused in raw form anyway.
        return IPv4Address(value & _LOW_32)
    if address in _SIX_TO_FOUR:
        return IPv4Address((value >> 80) & _LOW_32)
    if address in _TEREDO:
        # RFC 4380: the client's IPv4 address is stored bit-inverted in the low 32 bits.
        return IPv4Address(~value & _LOW_32)
    return address


def _raw_refusal(address: IPAddress) -> str | None:
    if isinstance(address, IPv4Address):
        for net, why in _REFUSED_V4:
            if address in net:
                return why
    else:
        for net6, why in _REFUSED_V6:
            if address in net6:
                return why
        if address not in _V6_GLOBAL_UNICAST and address not in _NAT64_WELL_KNOWN:
            return "outside IPv6 global unicast space (2000::/3)"
    # Belt and braces for ranges added to the registry after the tables above were written.
    # Python's own view differs between versions, so it can only add refusals, never lift one.
    if address.is_multicast or address.is_loopback or address.is_link_local:
        return "multicast, loopback or link-local according to Python's ipaddress"
    if address.is_unspecified or not address.is_global:
        return "not globally routable according to Python's ipaddress"
    return None


def refusal_reason(addr: IPAddress | str, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why the client must not connect to `addr`, or None if it may.

    `addr` may connect if both it and its normalised form are globally routable unicast, or if
    its normalised form lies inside one of the admin-`allowed` networks.
    """
    address = _as_address(addr)
    normal = normalise_address(address)
    # The allow-list only sees the normalised form, so ::ffff:127.0.0.3 is judged as 127.0.0.3
    # and cannot slip past an entry written for a different IPv4 address.
    if any(normal in net for net in allowed):
        return None
    if normal != address:
        why = _raw_refusal(normal)
        if why is not None:
            return f"{why}, embedded in {address}"
    return _raw_refusal(address)


def is_public_address(addr: IPAddress | str) -> bool:
    """True only for a globally routable unicast address, in raw and in normalised form."""
    return refusal_reason(addr) is None


def address_allowed(addr: IPAddress | str, allowed: Sequence[IPNetwork]) -> bool:
    """True if `addr` is public, or its normalised form lies in one of the `allowed` networks."""
    return refusal_reason(addr, allowed) is None


def parse_allowed_networks(text: str) -> tuple[IPNetwork, ...]:
    """The comma-separated CIDR allow-list setting; an empty or blank string gives ().

    Entries are strict (no host bits set). Raises ValueError naming the first bad entry.
    """
    if not text.strip():
        return ()
    networks: list[IPNetwork] = []
    for position, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            raise ValueError(f"allowed networks: entry {position} is empty in {text!r}")
        try:
            network = ip_network(entry, strict=True)
        except ValueError as exc:
            raise ValueError(f"allowed networks: bad entry {entry!r}: {exc}") from None
        if isinstance(network, IPv6Network):
            first = normalise_address(network.network_address)
            last = normalise_address(network.broadcast_address)
            if isinstance(first, IPv4Address) and isinstance(last, IPv4Address):
                # Matching happens on the unwrapped IPv4 address, so such an entry would never
                # match anything; say so rather than silently allowing nothing.
                raise ValueError(
                    f"allowed networks: entry {entry!r} embeds IPv4 addresses and would never "
                    f"match; write the IPv4 network covering {first} to {last} instead"
                )
        networks.append(network)
    return tuple(networks)


# UTS #46 maps these to '.', and URL libraries apply that mapping before resolving a host.
_IDEOGRAPHIC_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.ASCII)
_MAX_HOST_LENGTH = 253  # RFC 1035; also bounds the work of int() below


def _parse_ipv6_literal(inner: str, host: str) -> IPv6Address:
    # A zone id ("%eth0", or "%25eth0" as written in a URL) does not change the classification.
    bare = inner.split("%", 1)[0]
    try:
        return IPv6Address(bare)
    except ValueError:
        raise ValueError(f"invalid IPv6 literal in host {host!r}") from None


def _inet_aton_part(part: str, host: str) -> int:
    # inet_aton() reads each part with strtoul(base=0): 0x… is hex, a leading 0 is octal.
    if part.startswith("0x"):
        digits = part[2:]
        # A bare "0x" is 0 for the WHATWG URL parser; classifying it as an address is the safe side.
        return int(digits, 16) if digits else 0
    if len(part) > 1 and part.startswith("0"):
        if not set(part) <= set("01234567"):
            raise ValueError(f"invalid octal part {part!r} in IPv4 literal {host!r}")
        return int(part, 8)
    return int(part)


def _inet_aton(labels: list[str], host: str) -> IPv4Address:
    if len(labels) > 4 or not all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"host {host!r} ends in a number but is not a valid IPv4 literal")
    values = [_inet_aton_part(label, host) for label in labels]
    # a, a.b, a.b.c, a.b.c.d: leading parts are single bytes; the last fills the remaining bytes.
    last_bits = 8 * (5 - len(values))
    if any(value > 0xFF for value in values[:-1]) or values[-1] >= 1 << last_bits:
        raise ValueError(f"IPv4 literal {host!r} has a part out of range")
    number = values[-1]
    for index, value in enumerate(values[:-1]):
        number |= value << (24 - 8 * index)
    return IPv4Address(number)


def parse_host_literal(host: str) -> IPAddress | None:
    """The IP address a URL host (without port) denotes, or None for a real host name.

    Recognises bracketed or bare IPv6 (a zone id is dropped) and every IPv4 spelling libc's
    inet_aton or a browser accepts: a, a.b, a.b.c and a.b.c.d parts, each decimal, octal (0…) or
    hex (0x…), with an optional trailing dot. Fullwidth digits and dots are folded as IDNA does.
    Raises ValueError for a host that is neither: a malformed literal (anything whose last
    label is numeric, as real host names never are), an empty label, or a stray character.
    """
    if not host:
        raise ValueError("empty host")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"unbalanced brackets in host {host!r}")
        return _parse_ipv6_literal(host[1:-1], host)
    if ":" in host:
        return _parse_ipv6_literal(host, host)
    folded = unicodedata.normalize("NFKC", host).translate(_IDEOGRAPHIC_DOTS).lower()
    if len(folded) > _MAX_HOST_LENGTH + 1:
        raise ValueError(f"host {host!r} is longer than {_MAX_HOST_LENGTH} characters")
    if not all(char.isalnum() or char in "-._" for char in folded):
        # Whitespace, '%', '@', '/' and the like: inet_aton ignores trailing junk after a space,
        # and a URL parser may percent-decode; neither belongs in a host name.
        raise ValueError(f"unexpected character in host {host!r}")
    labels = folded.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # the root label of a fully qualified name
    if "" in labels:
        raise ValueError(f"empty label in host {host!r}")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    return _inet_aton(labels, host)
