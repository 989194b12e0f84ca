"""Alembic environment: runs on the connection flattrfed.db.migrate hands in."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

import flattrfed.db.models  # noqa: F401  (registers every table on Base.metadata)
from flattrfed.db.base import Base
from flattrfed.db.types import UTCDateTime

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through `flattrfed db upgrade`, not the alembic command")


def render_item(kind: str, item: Any, _context: AutogenContext) -> str | Literal[False]:
    # Migrations must not import our Python types: a migration stays valid when the code moves.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=Base.metadata,
        # Batch mode lets later ALTERs work on SQLite, which cannot alter most constraints.
        render_as_batch=conn.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


run(connection)
