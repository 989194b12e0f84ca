"""Fixtures shared by every test: the clock, databases, and a federation of real instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flattrfed.clock import ManualClock
from flattrfed.db.session import Database
from tests.harness import network_guard
from tests.harness.databases import DatabaseFactory, postgres_admin_url
from tests.harness.instances import Federation

# Before any test runs: a connection to anything but loopback fails the test instead of leaving.
network_guard.install()

START = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


def pytest_report_header() -> str:
    url = postgres_admin_url()
    return f"flattrfed database backend: {'postgresql' if url else 'sqlite'}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"), postgres_admin_url())
    asyncio.run(factory.prepare())
    yield factory
    asyncio.run(factory.drop_all())


@pytest.fixture
async def federation(
    clock: ManualClock, database_factory: DatabaseFactory, tmp_path: Path
) -> AsyncIterator[Federation]:
    fed = Federation(clock=clock, databases=database_factory, workdir=tmp_path)
    try:
        yield fed
    finally:
        await fed.close()


@pytest.fixture
async def database(database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    """A fresh, migrated database on the run's backend (SQLite, or PostgreSQL when configured)."""
    db = Database(await database_factory.new_database("db"))
    try:
        yield db
    finally:
        await db.dispose()
