"""Migrations are the only way a schema is made, and they make exactly the models' schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from flattrfed.db import migrate
from flattrfed.db.migrate import SchemaBehind, ensure_schema_current
from flattrfed.db.session import make_engine
from tests.harness.databases import POSTGRES_SKIP_REASON, DatabaseFactory


async def fresh_database_url(backend: str, factory: DatabaseFactory, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
    if factory.postgres_url is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    return await factory.new_empty_postgres("migration")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_migrations_produce_exactly_the_models_schema(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    engine = make_engine(await fresh_database_url(backend, database_factory, tmp_path))
    try:
        await migrate.upgrade(engine)
        assert await migrate.schema_diff(engine) == []
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_schema_drift_is_detected(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    engine = make_engine(await fresh_database_url(backend, database_factory, tmp_path))
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
        assert await migrate.schema_diff(engine) != []
    finally:
        await engine.dispose()


async def test_empty_database_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        with pytest.raises(SchemaBehind, match="flattrfed db upgrade"):
            await ensure_schema_current(engine)
    finally:
        await engine.dispose()


async def test_database_behind_head_is_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'behind.sqlite3'}")
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = 'old'"))
        with pytest.raises(SchemaBehind, match=r"revision old .*flattrfed db upgrade"):
            await ensure_schema_current(engine)
    finally:
        await engine.dispose()


async def test_upgrade_twice_is_a_no_op(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'twice.sqlite3'}")
    try:
        await migrate.upgrade(engine)
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()
