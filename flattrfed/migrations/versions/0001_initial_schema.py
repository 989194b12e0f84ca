"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-12-02 06:32:13.493909
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clearing_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fee_bp", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clearing_runs")),
        sa.UniqueConstraint("period", name=op.f("uq_clearing_runs_period")),
    )
    op.create_table(
        "domain_blocks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_blocks")),
        sa.UniqueConstraint("domain", name=op.f("uq_domain_blocks_domain")),
    )
    op.create_table(
        "federation_hosts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("failure_days", sa.Integer(), nullable=False),
        sa.Column("last_failure_day", sa.String(length=10), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("unavailable_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_hosts")),
        sa.UniqueConstraint("host", name=op.f("uq_federation_hosts_host")),
    )
    with op.batch_alter_table("federation_hosts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_federation_hosts_last_failure_at"), ["last_failure_at"], unique=False
        )

    op.create_table(
        "inbound_activities",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("activity_uri", sa.String(length=2048), nullable=False),
        sa.Column("actor_uri", sa.String(length=2048), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=255), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_activities")),
        sa.UniqueConstraint("activity_uri", name=op.f("uq_inbound_activities_activity_uri")),
    )
    with op.batch_alter_table("inbound_activities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_activities_actor_uri"), ["actor_uri"], unique=False
        )

    op.create_table(
        "instance_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("registration", sa.String(length=16), nullable=False),
        sa.Column("fee_bp", sa.Integer(), nullable=False),
        sa.Column("budget_min_minor", sa.BigInteger(), nullable=False),
        sa.Column("budget_max_minor", sa.BigInteger(), nullable=False),
        sa.Column("min_payout_minor", sa.BigInteger(), nullable=False),
        sa.Column("receiving_needs_budget", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_policy")),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("txid", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("memo", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("txid", name=op.f("uq_ledger_transactions_txid")),
    )
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_transactions_kind"), ["kind"], unique=False)

    op.create_table(
        "members",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(length=30), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("bio", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("monthly_budget_minor", sa.BigInteger(), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("flattrs_public", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        sa.UniqueConstraint("username", name=op.f("uq_members_username")),
    )
    op.create_table(
        "peers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("clearing_actor", sa.String(length=2048), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("credit_limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("peered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peers")),
        sa.UniqueConstraint("host", name=op.f("uq_peers_host")),
    )
    op.create_table(
        "remote_actors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("preferred_username", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("profile_url", sa.String(length=2048), nullable=True),
        sa.Column("inbox", sa.String(length=2048), nullable=False),
        sa.Column("shared_inbox", sa.String(length=2048), nullable=True),
        sa.Column("followers_url", sa.String(length=2048), nullable=True),
        sa.Column("key_id", sa.String(length=2048), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("also_known_as", sa.JSON(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_actors")),
        sa.UniqueConstraint("uri", name=op.f("uq_remote_actors_uri")),
    )
    with op.batch_alter_table("remote_actors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_remote_actors_host"), ["host"], unique=False)
        batch_op.create_index(batch_op.f("ix_remote_actors_key_id"), ["key_id"], unique=False)

    op.create_table(
        "remote_objects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("attributed_to", sa.String(length=2048), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_objects")),
        sa.UniqueConstraint("uri", name=op.f("uq_remote_objects_uri")),
    )
    with op.batch_alter_table("remote_objects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_remote_objects_attributed_to"), ["attributed_to"], unique=False
        )

    op.create_table(
        "settlements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("peer_host", sa.String(length=255), nullable=False),
        sa.Column("payable_minor", sa.BigInteger(), nullable=False),
        sa.Column("receivable_minor", sa.BigInteger(), nullable=False),
        sa.Column("carried_in_minor", sa.BigInteger(), nullable=False),
        sa.Column("net_minor", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("payment_reference", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("bank_reference", sa.String(length=200), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlements")),
        sa.UniqueConstraint("uri", name=op.f("uq_settlements_uri")),
    )
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_settlements_period_peer_host"), ["period", "peer_host"], unique=True
        )

    op.create_table(
        "statements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("peer_host", sa.String(length=255), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("responded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statements")),
        sa.UniqueConstraint("uri", name=op.f("uq_statements_uri")),
    )
    with op.batch_alter_table("statements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_statements_direction_period_peer_host_revision"),
            ["direction", "period", "peer_host", "revision"],
            unique=True,
        )

    op.create_table(
        "work_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=512), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_items")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_work_items_dedupe_key")),
    )
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_work_items_state_run_after"), ["state", "run_after"], unique=False
        )

    op.create_table(
        "deposit_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("bank_reference", sa.String(length=200), nullable=True),
        sa.Column(
            "recorded_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("credited_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_deposit_requests_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["members.id"], name=op.f("fk_deposit_requests_recorded_by_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deposit_requests")),
        sa.UniqueConstraint("reference", name=op.f("uq_deposit_requests_reference")),
    )
    with op.batch_alter_table("deposit_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deposit_requests_member_id"), ["member_id"], unique=False
        )

    op.create_table(
        "donor_closes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("donor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("budget_minor", sa.BigInteger(), nullable=False),
        sa.Column("wallet_minor", sa.BigInteger(), nullable=False),
        sa.Column("spent_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("share_minor", sa.BigInteger(), nullable=False),
        sa.Column("things", sa.Integer(), nullable=False),
        sa.Column("carry_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["donor_id"], ["members.id"], name=op.f("fk_donor_closes_donor_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["clearing_runs.id"], name=op.f("fk_donor_closes_run_id_clearing_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donor_closes")),
    )
    with op.batch_alter_table("donor_closes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_donor_closes_run_id"), ["run_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_donor_closes_run_id_donor_id"), ["run_id", "donor_id"], unique=True
        )

    op.create_table(
        "identity_claims",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("remote_actor_uri", sa.String(length=2048), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_check_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_identity_claims_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_claims")),
        sa.UniqueConstraint("remote_actor_uri", name=op.f("uq_identity_claims_remote_actor_uri")),
    )
    with op.batch_alter_table("identity_claims", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_claims_member_id"), ["member_id"], unique=False
        )

    op.create_table(
        "invites",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column(
            "created_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("used_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["members.id"], name=op.f("fk_invites_created_by_members")
        ),
        sa.ForeignKeyConstraint(
            ["used_by"], ["members.id"], name=op.f("fk_invites_used_by_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invites")),
        sa.UniqueConstraint("code", name=op.f("uq_invites_code")),
    )
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_ledger_accounts_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_ledger_accounts_code")),
    )
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_accounts_member_id"), ["member_id"], unique=False
        )

    op.create_table(
        "payout_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("bank_reference", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_payout_requests_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_requests")),
    )
    with op.batch_alter_table("payout_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payout_requests_member_id"), ["member_id"], unique=False
        )

    op.create_table(
        "settlement_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "settlement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["settlement_id"],
            ["settlements.id"],
            name=op.f("fk_settlement_events_settlement_id_settlements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_events")),
    )
    with op.batch_alter_table("settlement_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_settlement_events_settlement_id"), ["settlement_id"], unique=False
        )

    op.create_table(
        "things",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("external_url", sa.String(length=2048), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("image_url", sa.String(length=2048), nullable=True),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["members.id"], name=op.f("fk_things_owner_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_things")),
    )
    with op.batch_alter_table("things", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_things_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "flattrs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("donor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("target_uri", sa.String(length=2048), nullable=False),
        sa.Column("payee_uri", sa.String(length=2048), nullable=False),
        sa.Column("payee_host", sa.String(length=255), nullable=False),
        sa.Column("thing_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("like_uri", sa.String(length=2048), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts_in_period", sa.String(length=7), nullable=True),
        sa.ForeignKeyConstraint(
            ["donor_id"], ["members.id"], name=op.f("fk_flattrs_donor_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["thing_id"], ["things.id"], name=op.f("fk_flattrs_thing_id_things")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flattrs")),
        sa.UniqueConstraint("like_uri", name=op.f("uq_flattrs_like_uri")),
    )
    with op.batch_alter_table("flattrs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flattrs_donor_id"), ["donor_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_flattrs_donor_id_target_uri_period"),
            ["donor_id", "target_uri", "period"],
            unique=True,
        )
        batch_op.create_index(batch_op.f("ix_flattrs_payee_uri"), ["payee_uri"], unique=False)
        batch_op.create_index(batch_op.f("ix_flattrs_thing_id"), ["thing_id"], unique=False)

    op.create_table(
        "ledger_postings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_postings_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_postings_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_postings")),
    )
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_postings_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_postings_transaction_id"), ["transaction_id"], unique=False
        )

    op.create_table(
        "local_actors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("thing_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_local_actors_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["thing_id"], ["things.id"], name=op.f("fk_local_actors_thing_id_things")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_actors")),
        sa.UniqueConstraint("member_id", name=op.f("uq_local_actors_member_id")),
        sa.UniqueConstraint("thing_id", name=op.f("uq_local_actors_thing_id")),
        sa.UniqueConstraint("username", name=op.f("uq_local_actors_username")),
    )
    op.create_table(
        "actor_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["local_actors.id"], name=op.f("fk_actor_keys_actor_id_local_actors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actor_keys")),
    )
    with op.batch_alter_table("actor_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_actor_keys_actor_id"), ["actor_id"], unique=False)

    op.create_table(
        "follows",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "follower_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "target_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("follow_uri", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["follower_id"], ["remote_actors.id"], name=op.f("fk_follows_follower_id_remote_actors")
        ),
        sa.ForeignKeyConstraint(
            ["target_id"], ["local_actors.id"], name=op.f("fk_follows_target_id_local_actors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_follows")),
        sa.UniqueConstraint(
            "follower_id", "target_id", name=op.f("uq_follows_follower_id_target_id")
        ),
    )
    with op.batch_alter_table("follows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_follows_target_id"), ["target_id"], unique=False)

    op.create_table(
        "outbound_follows",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "remote_actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("follow_uri", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["local_actors.id"],
            name=op.f("fk_outbound_follows_actor_id_local_actors"),
        ),
        sa.ForeignKeyConstraint(
            ["remote_actor_id"],
            ["remote_actors.id"],
            name=op.f("fk_outbound_follows_remote_actor_id_remote_actors"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_follows")),
        sa.UniqueConstraint(
            "actor_id", "remote_actor_id", name=op.f("uq_outbound_follows_actor_id_remote_actor_id")
        ),
        sa.UniqueConstraint("follow_uri", name=op.f("uq_outbound_follows_follow_uri")),
    )
    with op.batch_alter_table("outbound_follows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbound_follows_actor_id"), ["actor_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_outbound_follows_remote_actor_id"), ["remote_actor_id"], unique=False
        )

    op.create_table(
        "outbound_likes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("object_uri", sa.String(length=2048), nullable=False),
        sa.Column("like_uri", sa.String(length=2048), nullable=False),
        sa.Column("activity", sa.JSON(), nullable=False),
        sa.Column("inbox", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["local_actors.id"], name=op.f("fk_outbound_likes_actor_id_local_actors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_likes")),
        sa.UniqueConstraint("like_uri", name=op.f("uq_outbound_likes_like_uri")),
    )
    with op.batch_alter_table("outbound_likes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbound_likes_actor_id"), ["actor_id"], unique=False)

    op.create_table(
        "posts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["local_actors.id"], name=op.f("fk_posts_actor_id_local_actors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_posts")),
        sa.UniqueConstraint("uri", name=op.f("uq_posts_uri")),
    )
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_posts_actor_id"), ["actor_id"], unique=False)

    op.create_table(
        "proof_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("multikey", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["local_actors.id"], name=op.f("fk_proof_keys_actor_id_local_actors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proof_keys")),
    )
    with op.batch_alter_table("proof_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_proof_keys_actor_id"), ["actor_id"], unique=False)

    op.create_table(
        "shares",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("donor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "flattr_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("like_uri", sa.String(length=2048), nullable=False),
        sa.Column("target_uri", sa.String(length=2048), nullable=False),
        sa.Column("payee_uri", sa.String(length=2048), nullable=False),
        sa.Column("payee_host", sa.String(length=255), nullable=False),
        sa.Column(
            "creator_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["creator_id"], ["members.id"], name=op.f("fk_shares_creator_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["donor_id"], ["members.id"], name=op.f("fk_shares_donor_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["flattr_id"], ["flattrs.id"], name=op.f("fk_shares_flattr_id_flattrs")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["clearing_runs.id"], name=op.f("fk_shares_run_id_clearing_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shares")),
        sa.UniqueConstraint("flattr_id", name=op.f("uq_shares_flattr_id")),
        sa.UniqueConstraint("like_uri", name=op.f("uq_shares_like_uri")),
    )
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shares_payee_host"), ["payee_host"], unique=False)
        batch_op.create_index(batch_op.f("ix_shares_run_id"), ["run_id"], unique=False)

    op.create_table(
        "received_likes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("like_uri", sa.String(length=2048), nullable=False),
        sa.Column("actor_uri", sa.String(length=2048), nullable=False),
        sa.Column(
            "target_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("post_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("object_uri", sa.String(length=2048), nullable=False),
        sa.Column("sender_host", sa.String(length=255), nullable=False),
        sa.Column("flattr_period", sa.String(length=7), nullable=True),
        sa.Column("clearing_actor", sa.String(length=2048), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["post_id"], ["posts.id"], name=op.f("fk_received_likes_post_id_posts")
        ),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["local_actors.id"],
            name=op.f("fk_received_likes_target_id_local_actors"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_received_likes")),
        sa.UniqueConstraint("like_uri", name=op.f("uq_received_likes_like_uri")),
    )
    with op.batch_alter_table("received_likes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_received_likes_actor_uri"), ["actor_uri"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_received_likes_sender_host"), ["sender_host"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_received_likes_target_id"), ["target_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("received_likes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_received_likes_target_id"))
        batch_op.drop_index(batch_op.f("ix_received_likes_sender_host"))
        batch_op.drop_index(batch_op.f("ix_received_likes_actor_uri"))

    op.drop_table("received_likes")
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shares_run_id"))
        batch_op.drop_index(batch_op.f("ix_shares_payee_host"))

    op.drop_table("shares")
    with op.batch_alter_table("proof_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_proof_keys_actor_id"))

    op.drop_table("proof_keys")
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_posts_actor_id"))

    op.drop_table("posts")
    with op.batch_alter_table("outbound_likes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_likes_actor_id"))

    op.drop_table("outbound_likes")
    with op.batch_alter_table("outbound_follows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_follows_remote_actor_id"))
        batch_op.drop_index(batch_op.f("ix_outbound_follows_actor_id"))

    op.drop_table("outbound_follows")
    with op.batch_alter_table("follows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_follows_target_id"))

    op.drop_table("follows")
    with op.batch_alter_table("actor_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_actor_keys_actor_id"))

    op.drop_table("actor_keys")
    op.drop_table("local_actors")
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_postings_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_postings_account_id"))

    op.drop_table("ledger_postings")
    with op.batch_alter_table("flattrs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flattrs_thing_id"))
        batch_op.drop_index(batch_op.f("ix_flattrs_payee_uri"))
        batch_op.drop_index(batch_op.f("ix_flattrs_donor_id_target_uri_period"))
        batch_op.drop_index(batch_op.f("ix_flattrs_donor_id"))

    op.drop_table("flattrs")
    with op.batch_alter_table("things", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_things_owner_id"))

    op.drop_table("things")
    with op.batch_alter_table("settlement_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlement_events_settlement_id"))

    op.drop_table("settlement_events")
    with op.batch_alter_table("payout_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payout_requests_member_id"))

    op.drop_table("payout_requests")
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_accounts_member_id"))

    op.drop_table("ledger_accounts")
    op.drop_table("invites")
    with op.batch_alter_table("identity_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_claims_member_id"))

    op.drop_table("identity_claims")
    with op.batch_alter_table("donor_closes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_donor_closes_run_id_donor_id"))
        batch_op.drop_index(batch_op.f("ix_donor_closes_run_id"))

    op.drop_table("donor_closes")
    with op.batch_alter_table("deposit_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deposit_requests_member_id"))

    op.drop_table("deposit_requests")
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_items_state_run_after"))

    op.drop_table("work_items")
    with op.batch_alter_table("statements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_statements_direction_period_peer_host_revision"))

    op.drop_table("statements")
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlements_period_peer_host"))

    op.drop_table("settlements")
    with op.batch_alter_table("remote_objects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remote_objects_attributed_to"))

    op.drop_table("remote_objects")
    with op.batch_alter_table("remote_actors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remote_actors_key_id"))
        batch_op.drop_index(batch_op.f("ix_remote_actors_host"))

    op.drop_table("remote_actors")
    op.drop_table("peers")
    op.drop_table("members")
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_kind"))

    op.drop_table("ledger_transactions")
    op.drop_table("instance_policy")
    with op.batch_alter_table("inbound_activities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_activities_actor_uri"))

    op.drop_table("inbound_activities")
    with op.batch_alter_table("federation_hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_federation_hosts_last_failure_at"))

    op.drop_table("federation_hosts")
    op.drop_table("domain_blocks")
    op.drop_table("clearing_runs")
