"""Fresh, migrated databases for test instances: SQLite files or PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from flattrfed.db import migrate
from flattrfed.db.session import make_engine

POSTGRES_URL_VARIABLE = "FLATTRFED_TEST_POSTGRES_URL"
POSTGRES_SKIP_REASON = (
    f"PostgreSQL tests need {POSTGRES_URL_VARIABLE} "
    "(e.g. postgresql://postgres@127.0.0.1:5432/test); not set, so they are skipped"
)
DATABASE_PREFIX = "fft_"


def postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_URL_VARIABLE) or None


def asyncpg_dsn(url: str) -> str:
    """A plain DSN asyncpg understands, from a SQLAlchemy-style URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(url: str, database: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql+asyncpg", database=database)
        .render_as_string(hide_password=False)
    )


async def migrated(url: str) -> None:
    engine = make_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


class DatabaseFactory:
    """Makes one fresh database per test instance by copying a template migrated once per run."""

    def __init__(self, workdir: Path, postgres_url: str | None) -> None:
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.run_id = f"{DATABASE_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template: str | None = None
        self.created: list[str] = []

    @property
    def backend(self) -> str:
        return "postgresql" if self.postgres_url else "sqlite"

    async def _admin(self) -> asyncpg.Connection:
        assert self.postgres_url is not None
        return await asyncpg.connect(asyncpg_dsn(self.postgres_url))

    async def prepare(self) -> None:
        if self.postgres_url is None:
            path = self.workdir / "template.sqlite3"
            await migrated(f"sqlite+aiosqlite:///{path}")
            self.template = str(path)
            return
        connection = await self._admin()
        try:
            await self._drop_stale(connection)
            name = f"{self.run_id}_template"
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self.template = name
        await migrated(sqlalchemy_url(self.postgres_url, name))

    async def _drop_stale(self, connection: asyncpg.Connection) -> None:
        """Drop databases left by earlier runs whose process is gone (a killed test run)."""
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", DATABASE_PREFIX + "%"
        )
        for row in rows:
            pid_text = row["datname"][len(DATABASE_PREFIX) :].split("_", 1)[0]
            if pid_text.isdigit() and not _process_alive(int(pid_text)):
                await connection.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')

    async def new_database(self, label: str) -> str:
        """The URL of a new, migrated, empty database."""
        assert self.template is not None, "prepare() first"
        unique = f"{self.run_id}_{label}_{uuid.uuid4().hex[:6]}"
        if self.postgres_url is None:
            path = self.workdir / f"{unique}.sqlite3"
            await asyncio.to_thread(shutil.copyfile, self.template, path)
            return f"sqlite+aiosqlite:///{path}"
        connection = await self._admin()
        try:
            await connection.execute(f'CREATE DATABASE "{unique}" TEMPLATE "{self.template}"')
        finally:
            await connection.close()
        self.created.append(unique)
        return sqlalchemy_url(self.postgres_url, unique)

    async def new_empty_postgres(self, label: str) -> str:
        """An unmigrated PostgreSQL database (for the migration tests)."""
        unique = f"{self.run_id}_{label}_{uuid.uuid4().hex[:6]}"
        connection = await self._admin()
        try:
            await connection.execute(f'CREATE DATABASE "{unique}"')
        finally:
            await connection.close()
        self.created.append(unique)
        assert self.postgres_url is not None
        return sqlalchemy_url(self.postgres_url, unique)

    async def drop_all(self) -> None:
        if self.postgres_url is None:
            return
        connection = await self._admin()
        try:
            for name in [*self.created, f"{self.run_id}_template"]:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
