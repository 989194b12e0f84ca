"""The SSRF guard's address classification, as pure functions: nothing here opens a socket."""

from __future__ import annotations

import contextlib
import pickle
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flattrfed.activitypub.addresses import (
    AddressRefused,
    address_allowed,
    is_public_address,
    normalise_address,
    parse_allowed_networks,
    parse_host_literal,
    refusal_reason,
)

# --- classification table -------------------------------------------------------------------

REFUSED_V4 = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.254",
    "100.100.100.200",  # Alibaba Cloud metadata, inside CGNAT space
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "169.254.0.1",
    "169.254.169.254",  # AWS / GCP / Azure metadata
    "172.16.0.1",
    "172.31.255.254",
    "192.0.0.1",
    "192.0.0.192",  # Oracle Cloud metadata, inside 192.0.0.0/24
    "192.0.2.1",
    "192.88.99.1",
    "192.168.0.1",
    "192.168.255.254",
    "198.18.0.1",
    "198.19.255.254",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "233.252.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "250.1.2.3",
    "255.255.255.255",
]

REFUSED_V6 = [
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:8.8.8.8",  # raw mapped form is refused even when the embedded address is public
    "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
    "::127.0.0.1",  # IPv4-compatible
    "::8.8.8.8",
    "64:ff9b::7f00:1",  # NAT64 well-known prefix + loopback
    "64:ff9b::a00:1",  # + 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # + 169.254.169.254
    "64:ff9b:1::7f00:1",  # NAT64 local-use
    "64:ff9b:1::808:808",  # local-use is refused whatever it embeds
    "100::1",  # discard-only
    "2001::1",  # Teredo
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8
    "2001:2::1",  # benchmarking
    "2001:10::1",  # ORCHID
    "2001:20::1",  # ORCHIDv2
    "2001:db8::1",
    "2001:db8:ffff::1",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:808:808::1",  # 6to4 is refused whatever it embeds
    "3fff::1",
    "5f00::1",
    "fc00::1",
    "fd00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fe80::1",
    "fe80::1%eth0",
    "febf::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "4000::1",  # reserved space outside 2000::/3
    "8000::1",
    "1::1",
]

PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "9.9.9.9",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",  # just below 172.16/12
    "172.32.0.0",  # just above
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.254",  # just below multicast
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:80b::200e",
    "64:ff9b::808:808",  # NAT64 of a public address
]


@pytest.mark.parametrize("address", REFUSED_V4 + REFUSED_V6)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)
    assert refusal_reason(address) is not None
    assert not address_allowed(address, ())


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public_address(address)
    assert refusal_reason(address) is None
    assert address_allowed(address, ())


def test_classification_accepts_address_objects() -> None:
    assert not is_public_address(IPv4Address("127.0.0.1"))
    assert not is_public_address(IPv6Address("::ffff:7f00:1"))
    assert is_public_address(IPv4Address("8.8.8.8"))


def test_classification_rejects_non_strict_strings() -> None:
    # The odd spellings belong to parse_host_literal; here they are a programming error.
    with pytest.raises(ValueError, match="does not appear to be"):
        is_public_address("127.1")


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("169.254.169.254", "metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("2002:808:808::1", "6to4"),
        ("4000::1", "2000::/3"),
    ],
)
def test_refusal_reason_names_the_range(address: str, fragment: str) -> None:
    reason = refusal_reason(address)
    assert reason is not None
    assert fragment in reason


# --- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:0:a00:1", "10.0.0.1"),
        ("::127.0.0.1", "127.0.0.1"),
        ("::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b:1::c0a8:1", "192.168.0.1"),
        ("2002:7f00:1::", "127.0.0.1"),
        ("2002:c0a8:101:1::1", "192.168.1.1"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
        ("::", "::"),
        ("::1", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("2606:4700:4700::1111", "2606:4700:4700::1111"),
    ],
)
def test_normalise_unwraps_embedded_ipv4(address: str, expected: str) -> None:
    assert str(normalise_address(address)) == expected


@st.composite
def embeddings(draw: st.DrawFn) -> tuple[IPv4Address, IPv6Address]:
    v4 = IPv4Address(draw(st.integers(0, 2**32 - 1)))
    n = int(v4)
    form = draw(st.sampled_from(["mapped", "translated", "nat64", "local", "6to4", "teredo"]))
    if form == "mapped":
        v6 = (0xFFFF << 32) | n
    elif form == "translated":
        v6 = (0xFFFF << 48) | n
    elif form == "nat64":
        v6 = (0x64FF9B << 96) | n
    elif form == "local":
        v6 = (0x64FF9B0001 << 80) | draw(st.integers(0, 2**48 - 1)) << 32 | n
    elif form == "6to4":
        v6 = (0x2002 << 112) | (n << 80) | draw(st.integers(0, 2**80 - 1))
    else:
        server = draw(st.integers(0, 2**32 - 1))
        flags_port = draw(st.integers(0, 2**32 - 1))
        v6 = (0x20010000 << 96) | (server << 64) | (flags_port << 32) | (~n & 0xFFFFFFFF)
    return v4, IPv6Address(v6)


@given(embeddings())
def test_embedding_never_makes_an_address_more_public(
    pair: tuple[IPv4Address, IPv6Address],
) -> None:
    v4, v6 = pair
    assert normalise_address(v6) == v4
    if is_public_address(v6):
        assert is_public_address(v4)


# --- allow-list -------------------------------------------------------------------------------

ALLOW_ONE = (IPv4Network("127.0.0.2/32"),)


def _literal(host: str) -> IPv4Address | IPv6Address:
    address = parse_host_literal(host)
    assert address is not None
    return address


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        (IPv4Address("127.0.0.2"), True),
        (IPv6Address("::ffff:127.0.0.2"), True),  # judged by its normalised form
        (IPv6Address("64:ff9b::7f00:2"), True),
        (IPv4Address("127.0.0.3"), False),
        (IPv6Address("::ffff:127.0.0.3"), False),
        (IPv6Address("::1"), False),
        (IPv4Address("10.0.0.1"), False),
        (IPv4Address("169.254.169.254"), False),
        (IPv4Address("8.8.8.8"), True),  # public needs no allow-list entry
    ],
)
def test_allow_list_membership(address: IPv4Address | IPv6Address, allowed: bool) -> None:
    assert address_allowed(address, ALLOW_ONE) is allowed


@pytest.mark.parametrize(
    "host", ["2130706435", "127.3", "0177.0.0.3", "0x7f000003", "[::ffff:7f00:3]"]
)
def test_allow_list_refuses_other_spellings_of_another_address(host: str) -> None:
    assert not address_allowed(_literal(host), ALLOW_ONE)


@pytest.mark.parametrize("host", ["2130706434", "127.2", "0x7f.0.0.2", "127.0.0.2."])
def test_allow_list_accepts_other_spellings_of_the_allowed_address(host: str) -> None:
    assert address_allowed(_literal(host), ALLOW_ONE)


def test_allow_list_matches_ipv6_networks() -> None:
    allowed = parse_allowed_networks("fd00::/8, ::1/128")
    assert address_allowed("fd12::5", allowed)
    assert address_allowed("::1", allowed)
    assert not address_allowed("fe80::1", allowed)
    # An IPv4 address never matches an IPv6 network with the same bits, and vice versa.
    assert not address_allowed("0.0.0.1", allowed)


def test_allow_list_does_not_widen_public_check() -> None:
    assert refusal_reason("10.1.2.3", parse_allowed_networks("10.0.0.0/8")) is None
    assert refusal_reason("10.1.2.3") is not None


# --- parse_allowed_networks -----------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_parse_allowed_networks_empty(text: str) -> None:
    assert parse_allowed_networks(text) == ()


def test_parse_allowed_networks_valid() -> None:
    assert parse_allowed_networks(" 127.0.0.2/32 , 10.0.0.0/8,fd00::/8,192.168.1.7") == (
        IPv4Network("127.0.0.2/32"),
        IPv4Network("10.0.0.0/8"),
        IPv6Network("fd00::/8"),
        IPv4Network("192.168.1.7/32"),
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("10.0.0.1/8", "'10.0.0.1/8'"),  # host bits set
        ("10.0.0.0/8, nonsense", "'nonsense'"),
        ("10.0.0.0/33", "'10.0.0.0/33'"),
        ("010.0.0.0/8", "'010.0.0.0/8'"),
        ("10.0.0.0/8,,127.0.0.1", "entry 2 is empty"),
        ("10.0.0.0/8,", "entry 2 is empty"),
        ("::ffff:7f00:0/104", "'::ffff:7f00:0/104'"),  # would never match a normalised address
        ("64:ff9b::/96", "'64:ff9b::/96'"),
    ],
)
def test_parse_allowed_networks_names_bad_entry(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="allowed networks") as info:
        parse_allowed_networks(text)
    assert named in str(info.value)


# --- parse_host_literal ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("2130706435", "127.0.0.3"),
        ("2130706433.", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.3", "127.0.0.3"),
        ("127.0.1", "127.0.0.1"),
        ("10.1.65535", "10.1.255.255"),
        ("10.16777215", "10.255.255.255"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F.0X0.0X0.0X1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("00", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("8.8.8.8", "8.8.8.8"),
        ("\uff11\uff12\uff17\u3002\uff10\uff0e\uff10\uff61\uff11", "127.0.0.1"),  # fullwidth
        ("[::1]", "::1"),
        ("[::]", "::"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
        ("[::FFFF:7F00:1]", "127.0.0.1"),
        ("[64:ff9b::7f00:1]", "127.0.0.1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("::1", "::1"),
        ("[2606:4700:4700::1111]", "2606:4700:4700::1111"),
    ],
)
def test_parse_host_literal_recognises_ip_spellings(host: str, expected: str) -> None:
    address = parse_host_literal(host)
    assert address is not None
    assert str(normalise_address(address)) == expected


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0",
        "127.0.0.1.",
    ],
)
def test_literal_spellings_of_loopback_are_not_public(host: str) -> None:
    assert not is_public_address(_literal(host))


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "example.com.",
        "localhost",
        "social.example",
        "xn--bcher-kva.example",
        "bücher.example",
        "a-b_c.example",
        "127.0.0.1.example.com",
        "0x7f.example",
        "1e3.example",
        "123abc",
        "0x7g",
    ],
)
def test_parse_host_literal_leaves_host_names_alone(host: str) -> None:
    assert parse_host_literal(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "",
        "[]",
        "[127.0.0.1]",
        "[::1",
        "::1]",
        "[not-ipv6]",
        "::ffff:127.1",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.256.0.1",
        "1.2.65536",
        "1.16777216",
        "4294967296",
        "08.0.0.1",
        "0x1g.0.0.1",
        "127..1",
        "127.0.0.1..",
        ".127.0.0.1",
        "127.0.0.1 ",
        " 127.0.0.1",
        "127.0.0.1\tx",
        "127%2E0%2E0%2E1",
        "user@127.0.0.1",
        "example.com/evil",
        "example.123",
        "a" * 300,
    ],
)
def test_parse_host_literal_rejects_malformed_hosts(host: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages vary by case
        parse_host_literal(host)


@given(st.integers(0, 2**32 - 1))
def test_every_ipv4_spelling_round_trips(value: int) -> None:
    address = IPv4Address(value)
    a, b, c, d = address.packed
    assert parse_host_literal(str(value)) == address
    assert parse_host_literal(hex(value)) == address
    assert parse_host_literal(f"0{value:o}") == address
    assert parse_host_literal(f"{a}.{(b << 16) | (c << 8) | d}") == address
    assert parse_host_literal(f"{a}.{b}.{(c << 8) | d}") == address
    assert parse_host_literal(f"{a:#o}.{b:#x}.{c}.{d}.".replace("0o", "0")) == address


@given(st.text(max_size=60))
def test_parse_host_literal_only_raises_value_error(host: str) -> None:
    with contextlib.suppress(ValueError):
        parse_host_literal(host)


# --- AddressRefused ---------------------------------------------------------------------------


def test_address_refused_carries_host_and_reason() -> None:
    error = AddressRefused("evil.example", "loopback (127.0.0.0/8)")
    assert error.host == "evil.example"
    assert error.reason == "loopback (127.0.0.0/8)"
    assert "evil.example" in str(error)
    assert "loopback" in str(error)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (copy.host, copy.reason) == (error.host, error.reason)
