"""statement pages: lines of issued and accepted statements; Likes by peer and month; dashboard

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "statement_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "statement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("like_uri", sa.String(length=2048), nullable=False),
        sa.Column("donor_uri", sa.String(length=2048), nullable=False),
        sa.Column("object_uri", sa.String(length=2048), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["statements.id"],
            name=op.f("fk_statement_lines_statement_id_statements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_lines")),
    )
    with op.batch_alter_table("statement_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_statement_lines_statement_id_position"),
            ["statement_id", "position"],
            unique=True,
        )
        batch_op.create_index(
            batch_op.f("ix_statement_lines_statement_id_page"),
            ["statement_id", "page"],
            unique=False,
        )
    with op.batch_alter_table("received_likes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_received_likes_sender_host_flattr_period"),
            ["sender_host", "flattr_period"],
            unique=False,
        )

    with op.batch_alter_table("flattrs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_flattrs_donor_id_status_counts_in_period_period_undone_at"),
            ["donor_id", "status", "counts_in_period", "period", "undone_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_flattrs_donor_id_period_undone_at"),
            ["donor_id", "period", "undone_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("flattrs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flattrs_donor_id_period_undone_at"))
        batch_op.drop_index(
            batch_op.f("ix_flattrs_donor_id_status_counts_in_period_period_undone_at")
        )
    with op.batch_alter_table("received_likes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_received_likes_sender_host_flattr_period"))
    with op.batch_alter_table("statement_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_statement_lines_statement_id_page"))
        batch_op.drop_index(batch_op.f("ix_statement_lines_statement_id_position"))
    op.drop_table("statement_lines")
