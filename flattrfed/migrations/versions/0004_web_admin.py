"""web admin: the history of policy changes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("setting", sa.String(length=32), nullable=False),
        sa.Column("old_value", sa.String(length=64), nullable=False),
        sa.Column("new_value", sa.String(length=64), nullable=False),
        sa.Column("changed_by", sa.String(length=255), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_changes")),
    )
    with op.batch_alter_table("policy_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_policy_changes_changed_at"), ["changed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("policy_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_changes_changed_at"))
    op.drop_table("policy_changes")
