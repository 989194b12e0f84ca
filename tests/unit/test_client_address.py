"""The visitor's address: X-Forwarded-For counts only from trusted proxies, read from the right."""

from __future__ import annotations

import ipaddress

import pytest

from flattrfed.config import Network
from flattrfed.web.security import forwarded_client


def nets(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


LOCAL_PROXY = nets("127.0.0.1/32", "::1/128")


def test_an_untrusted_peer_is_the_client_whatever_header_it_forges() -> None:
    assert forwarded_client("198.51.100.9", ["203.0.113.7"], LOCAL_PROXY) == "198.51.100.9"
    assert forwarded_client("198.51.100.9", ["127.0.0.1"], LOCAL_PROXY) == "198.51.100.9"


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert forwarded_client("127.0.0.1", ["203.0.113.7"], ()) == "127.0.0.1"


def test_behind_a_trusted_proxy_the_rightmost_address_is_the_client() -> None:
    # The visitor wrote 192.0.2.1 themselves; the proxy appended the address it saw.
    forwarded = ["192.0.2.1, 203.0.113.7"]
    assert forwarded_client("127.0.0.1", forwarded, LOCAL_PROXY) == "203.0.113.7"


def test_a_chain_of_trusted_proxies_is_skipped_to_the_first_untrusted_address() -> None:
    trusted = nets("127.0.0.1/32", "10.0.0.0/8")
    forwarded = ["192.0.2.1, 203.0.113.7, 10.1.2.3,10.0.0.5"]
    assert forwarded_client("127.0.0.1", forwarded, trusted) == "203.0.113.7"


def test_several_header_lines_are_read_as_one_list_in_order() -> None:
    forwarded = ["192.0.2.1", "203.0.113.7"]
    assert forwarded_client("127.0.0.1", forwarded, LOCAL_PROXY) == "203.0.113.7"


def test_when_every_forwarded_address_is_a_proxy_the_furthest_one_is_the_client() -> None:
    trusted = nets("127.0.0.1/32", "10.0.0.0/8")
    assert forwarded_client("127.0.0.1", ["10.0.0.9, 10.0.0.5"], trusted) == "10.0.0.9"


@pytest.mark.parametrize(
    "forwarded",
    [
        [],
        [""],
        [" , ,"],
        ["203.0.113.7, not-an-address"],
        ["203.0.113.7:51234"],  # a port is not part of the format nginx and Caddy write
        ["unknown"],
        ["203.0.113.7/32"],
        ["192.0.2.1, 203.0.113.7, 10.0.0.5, garbage, 10.0.0.4"],
    ],
)
def test_a_missing_empty_or_malformed_header_falls_back_to_the_peer(
    forwarded: list[str],
) -> None:
    trusted = nets("127.0.0.1/32", "10.0.0.0/8")
    assert forwarded_client("127.0.0.1", forwarded, trusted) == "127.0.0.1"


def test_malformed_entries_left_of_the_client_are_never_read() -> None:
    # Only the visitor could have written them; their address is already known.
    forwarded = ["garbage, 203.0.113.7"]
    assert forwarded_client("127.0.0.1", forwarded, LOCAL_PROXY) == "203.0.113.7"


def test_ipv6_proxies_and_clients_are_matched_and_written_canonically() -> None:
    trusted = nets("::1/128", "2001:db8:ffff::/48")
    forwarded = ["2001:DB8:0:0::1, 2001:db8:ffff::2"]
    assert forwarded_client("::1", forwarded, trusted) == "2001:db8::1"
    assert forwarded_client("2001:db8::5", ["2001:db8::1"], trusted) == "2001:db8::5"


def test_an_ipv4_peer_on_a_dual_stack_socket_matches_ipv4_networks() -> None:
    assert forwarded_client("::ffff:127.0.0.1", ["203.0.113.7"], LOCAL_PROXY) == "203.0.113.7"
    assert forwarded_client("127.0.0.1", ["::ffff:203.0.113.7"], LOCAL_PROXY) == "203.0.113.7"


def test_a_peer_that_is_not_an_address_is_kept_as_it_is() -> None:
    assert forwarded_client("unknown", ["203.0.113.7"], nets("0.0.0.0/0")) == "unknown"
