"""All models, imported here so Base.metadata knows every table (Alembic compares against it)."""

from flattrfed.db.models.members import Member
from flattrfed.db.models.work import WorkItem, WorkState

__all__ = ["Member", "WorkItem", "WorkState"]
