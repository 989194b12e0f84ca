"""The harness starts real instances that reach each other by name over loopback HTTP."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from tests.harness import network_guard
from tests.harness.instances import Federation
from tests.harness.network_guard import NonLoopbackConnection


async def test_instances_answer_health_by_their_test_host_names(federation: Federation) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta", currency="SEK")
    assert alpha.host.startswith("alpha.test:")
    client = federation.client()
    for instance in (alpha, beta):
        async with client.get(instance.url("/health")) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
    assert beta.settings.currency == "SEK"
    assert alpha.services.database.url != beta.services.database.url


async def test_front_page_renders_the_instance_name_and_fee(federation: Federation) -> None:
    alpha = await federation.start("alpha", fee_bp=250)
    async with federation.client().get(alpha.url("/")) as response:
        page = await response.text()
    assert response.status == 200
    assert "alpha" in page
    assert '<dd id="instance-fee">2.50 %</dd>' in page


async def test_resolver_refuses_names_outside_the_federation(federation: Federation) -> None:
    await federation.start("alpha")
    with pytest.raises(aiohttp.ClientConnectorError):
        async with federation.client().get("http://example.com/"):
            pass
    assert "example.com" in federation.resolver.lookups


def test_network_guard_refuses_non_loopback_addresses() -> None:
    # The check is called directly: a test must never attempt a real non-loopback connect,
    # not even one that is expected to be refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        for address in [("192.0.2.1", 80), ("10.0.0.1", 443), ("example.com", 80)]:
            with pytest.raises(NonLoopbackConnection):
                network_guard.check(sock, address)
        network_guard.check(sock, ("127.0.0.5", 80))
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock6:
        network_guard.check(sock6, ("::1", 80, 0, 0))
        network_guard.check(sock6, ("::ffff:127.0.0.1", 80, 0, 0))
        with pytest.raises(NonLoopbackConnection):
            network_guard.check(sock6, ("::ffff:10.0.0.1", 80, 0, 0))
