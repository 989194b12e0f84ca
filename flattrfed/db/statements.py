"""Statements both backends need in their own dialect: INSERT ... ON CONFLICT DO NOTHING."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def table_of(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


def insert_ignoring_duplicates(dialect: str, model: type[Any], **values: Any) -> Insert:
    """An INSERT that silently does nothing when a unique key already exists (idempotent writes)."""
    table = table_of(model)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).values(**values).on_conflict_do_nothing()
