"""Behind a trusted proxy over real HTTP: the log-in rate limit counts each forwarded visitor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import PASSWORD, Visitor, Visitors, visitors_of

WRONG = "guess guess guess"


@pytest.fixture
async def visitors(federation: Federation) -> AsyncIterator[Visitors]:
    async for made in visitors_of(federation):
        yield made


async def log_in_via(visitor: Visitor, forwarded_for: str, username: str, password: str) -> int:
    """POST the log-in form as a proxy would pass it on: with X-Forwarded-For set."""
    fields = {"csrf_token": await visitor.token(), "username": username, "password": password}
    async with visitor.session.post(
        visitor.instance.url("/login"),
        data=fields,
        headers={"X-Forwarded-For": forwarded_for},
        allow_redirects=False,
    ) as response:
        return response.status


async def lock_out(visitor: Visitor, forwarded_for: str, username: str) -> None:
    for _ in range(5):
        assert await log_in_via(visitor, forwarded_for, username, WRONG) == 401
    assert await log_in_via(visitor, forwarded_for, username, PASSWORD) == 429


async def ann_on(federation: Federation, **overrides: str) -> Instance:
    alpha = await federation.start("alpha", **overrides)
    await alpha.create_member("ann")
    return alpha


async def test_behind_a_trusted_proxy_failures_lock_out_only_the_forwarded_address(
    federation: Federation, visitors: Visitors
) -> None:
    # The test client connects from 127.0.0.1, so it plays the proxy here.
    alpha = await ann_on(federation, trusted_proxies="127.0.0.1/32")
    await lock_out(visitors(alpha), "203.0.113.1", "ann")

    # Another visitor through the same proxy logs in as ann at once ...
    assert await log_in_via(visitors(alpha), "203.0.113.2", "ann", PASSWORD) == 303
    # ... and the attacker cannot pass as them by writing their address further left:
    # the proxy appends the address it really saw, and only the rightmost untrusted one counts.
    forged = "203.0.113.2, 203.0.113.1"
    assert await log_in_via(visitors(alpha), forged, "ann", PASSWORD) == 429


async def test_without_trusted_proxies_the_header_is_ignored(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await ann_on(federation)
    await lock_out(visitors(alpha), "203.0.113.1", "ann")
    # Everyone comes from 127.0.0.1: a different header does not get around the lock.
    assert await log_in_via(visitors(alpha), "203.0.113.2", "ann", PASSWORD) == 429


async def test_a_peer_outside_the_trusted_networks_cannot_forward_addresses(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await ann_on(federation, trusted_proxies="10.0.0.0/8,::1/128")
    await lock_out(visitors(alpha), "203.0.113.1", "ann")
    assert await log_in_via(visitors(alpha), "203.0.113.2", "ann", PASSWORD) == 429
