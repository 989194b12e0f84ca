"""Flattring state: instance policy, invites, deposits, payouts, flattrs, peers and claims."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from flattrfed.db.base import Base
from flattrfed.db.types import UTCDateTime

BigId = BigInteger().with_variant(Integer, "sqlite")
URI = String(2048)


class InstancePolicy(Base):
    """The admin-settable rules of this instance (one row), shown publicly on its pages."""

    __tablename__ = "instance_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registration: Mapped[str] = mapped_column(String(16))  # open | approval | invite | closed
    fee_bp: Mapped[int] = mapped_column(Integer)
    budget_min_minor: Mapped[int] = mapped_column(BigInteger)
    budget_max_minor: Mapped[int] = mapped_column(BigInteger)
    min_payout_minor: Mapped[int] = mapped_column(BigInteger)
    # Flattr required an active budget to receive until 2011; off by default here.
    receiving_needs_budget: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PolicyChange(Base):
    """One change of one policy setting: from what to what, when, by whom (append-only)."""

    __tablename__ = "policy_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    setting: Mapped[str] = mapped_column(String(32))
    old_value: Mapped[str] = mapped_column(String(64))
    new_value: Mapped[str] = mapped_column(String(64))
    changed_by: Mapped[str] = mapped_column(String(255), default="")
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Invite(Base):
    """A single-use sign-up code, for instances whose registration is by invite."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    used_by: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DepositRequest(Base):
    """A member's intent to top up by bank transfer; `reference` goes in the transfer's text."""

    __tablename__ = "deposit_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16))  # open | credited | cancelled
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    bank_reference: Mapped[str | None] = mapped_column(String(200))
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    credited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PayoutRequest(Base):
    """A creator asking for available earnings; an admin marks it paid with a bank reference."""

    __tablename__ = "payout_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))  # requested | paid | cancelled
    bank_reference: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Flattr(Base):
    """One click: a donor's flattr of one target in one period (the Like that carries it).

    `target_uri` is what was liked (a thing actor or a post); `payee_uri` the actor the money
    is for (the thing, or a post's author). `status` is payable (the payee is on a flattrfed
    instance), pending (not yet: no money moves until claimed) or expired.
    """

    __tablename__ = "flattrs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    donor_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    period: Mapped[str] = mapped_column(String(7))
    target_uri: Mapped[str] = mapped_column(URI)
    payee_uri: Mapped[str] = mapped_column(URI, index=True)
    payee_host: Mapped[str] = mapped_column(String(255))
    thing_id: Mapped[int | None] = mapped_column(ForeignKey("things.id"), index=True)
    like_uri: Mapped[str] = mapped_column(URI, unique=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # For a pending flattr claimed later: the period it counts in (the month of the claim).
    counts_in_period: Mapped[str | None] = mapped_column(String(7))

    __table_args__ = (
        Index(None, "donor_id", "target_uri", "period", unique=True),
        # The dashboard counts and pages a member's flattrs of one month, and groups by month.
        Index(None, "donor_id", "status", "counts_in_period", "period", "undone_at"),
        Index(None, "donor_id", "period", "undone_at"),
    )


class Peer(Base):
    """Another flattrfed instance we clear with; flattrs from unpeered instances wait."""

    __tablename__ = "peers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    clearing_actor: Mapped[str] = mapped_column(URI)
    currency: Mapped[str] = mapped_column(String(3))
    credit_limit_minor: Mapped[int] = mapped_column(BigInteger)
    peered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str] = mapped_column(Text, default="")


class IdentityClaim(Base):
    """A member's claim to a remote fediverse identity, verified in both directions."""

    __tablename__ = "identity_claims"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    remote_actor_uri: Mapped[str] = mapped_column(URI, unique=True)
    state: Mapped[str] = mapped_column(String(16))  # unverified | verified
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_check_error: Mapped[str | None] = mapped_column(Text)
