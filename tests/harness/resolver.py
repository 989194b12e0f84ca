"""Resolves the test federation's host names to loopback and refuses every other name."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult


class LoopbackResolver(AbstractResolver):
    """`alpha.test` -> 127.0.0.1 (or another loopback address); anything unknown is refused.

    Refusing unknown names keeps a test from ever reaching a real host through DNS.
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.lookups: list[str] = []

    def add(self, name: str, address: str = "127.0.0.1") -> None:
        self.names[name.lower()] = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        address = self.names.get(host.lower().rstrip("."))
        if address is None:
            raise OSError(f"{host} is not a host of the test federation")
        is_v6 = ":" in address
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if is_v6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None
