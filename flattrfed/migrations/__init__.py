"""Alembic migrations: the only way a flattrfed schema is made or changed."""
