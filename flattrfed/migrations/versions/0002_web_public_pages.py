"""web public pages: members follow local members and things (local_follows)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 09:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "local_follows",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("member_id", BIG_ID, nullable=False),
        sa.Column("target_id", BIG_ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_local_follows_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["target_id"], ["local_actors.id"], name=op.f("fk_local_follows_target_id_local_actors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_follows")),
        sa.UniqueConstraint(
            "member_id", "target_id", name=op.f("uq_local_follows_member_id_target_id")
        ),
    )
    with op.batch_alter_table("local_follows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_local_follows_target_id"), ["target_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("local_follows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_local_follows_target_id"))
    op.drop_table("local_follows")
