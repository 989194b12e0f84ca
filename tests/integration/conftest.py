"""Fixtures the integration tests share: web visitors and a plain (non-flattrfed) server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.plain import PlainServer
from tests.harness.instances import Federation
from tests.integration.test_web_support import Visitors, visitors_of


@pytest.fixture
async def visitors(federation: Federation) -> AsyncIterator[Visitors]:
    async for made in visitors_of(federation):
        yield made


@pytest.fixture
async def plain(federation: Federation) -> AsyncIterator[PlainServer]:
    """A plain fediverse server at plain.test: accounts and posts without flattrfed."""
    server = PlainServer()
    await server.start("plain.test")
    federation.resolver.add("plain.test")
    try:
        yield server
    finally:
        await server.close()
