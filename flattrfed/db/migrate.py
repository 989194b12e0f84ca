"""Runs Alembic programmatically: upgrade, current revision, head, and the schema-drift check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import flattrfed.db.models  # noqa: F401  (registers every table on Base.metadata)
from flattrfed.db.base import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database to `revision` (default: the newest)."""

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def schema_problem(engine: AsyncEngine) -> str | None:
    """None when the database is at head; otherwise what is wrong and which command fixes it."""
    current = await current_revision(engine)
    head = head_revision()
    if current == head:
        return None
    if current is None:
        return "the database has no schema yet; run `flattrfed db upgrade`"
    return (
        f"the database schema is at revision {current} but this version needs {head}; "
        "run `flattrfed db upgrade`"
    )


class SchemaBehind(RuntimeError):
    """The database is not migrated to the version this code needs."""


async def ensure_schema_current(engine: AsyncEngine) -> None:
    problem = await schema_problem(engine)
    if problem is not None:
        raise SchemaBehind(problem)


async def schema_diff(engine: AsyncEngine) -> list[Any]:
    """What differs between the migrated database and the models (empty when they agree)."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(compare)


async def new_revision(engine: AsyncEngine, message: str, revision_id: str) -> None:
    """Write a migration for what the models changed (a developer tool; review the result)."""

    def run(connection: Connection) -> None:
        command.revision(
            alembic_config(connection), message=message, autogenerate=True, rev_id=revision_id
        )

    async with engine.begin() as connection:
        await connection.run_sync(run)
