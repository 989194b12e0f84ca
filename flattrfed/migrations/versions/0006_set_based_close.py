"""set based close: shares indexed by (run, donor) for the chunked close

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02 09:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shares_run_id"))
        batch_op.create_index(
            batch_op.f("ix_shares_run_id_donor_id"), ["run_id", "donor_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shares_run_id_donor_id"))
        batch_op.create_index(batch_op.f("ix_shares_run_id"), ["run_id"], unique=False)
