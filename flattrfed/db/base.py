"""The declarative base all models share, with constraint naming conventions for Alembic."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Explicit names make migrations reproducible on both SQLite and PostgreSQL: without them
# PostgreSQL invents names that a later ALTER (or a batch migration on SQLite) cannot refer to.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Every table of flattrfed."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
