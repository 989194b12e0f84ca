"""Refuses, inside the test process, every socket connection that is not to loopback."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class NonLoopbackConnection(AssertionError):
    """A test tried to reach an address outside 127.0.0.0/8 and ::1."""


def check(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets (e.g. PostgreSQL's) never leave the machine.
    host = address[0]
    try:
        parsed = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise NonLoopbackConnection(f"connect to unresolved name {host!r}") from None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if not parsed.is_loopback:
        raise NonLoopbackConnection(f"test tried to connect to {host}; only loopback is allowed")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    check(self, address)
    _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    check(self, address)
    return _original_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign, assignment]
