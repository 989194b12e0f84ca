"""The month close: one run per period, each donor's split, and the per-click shares."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from flattrfed.db.base import Base
from flattrfed.db.types import UTCDateTime

BigId = BigInteger().with_variant(Integer, "sqlite")
URI = String(2048)


class ClearingRun(Base):
    """The close of one period: a stage marker that lets a crashed run resume where it stopped.

    `lease_owner`/`lease_expires` are the lock: a second runner finds the lease held and
    leaves; a crashed runner's lease lapses and another resumes the same stages.
    """

    __tablename__ = "clearing_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    period: Mapped[str] = mapped_column(String(7), unique=True)
    stage: Mapped[str] = mapped_column(String(16))  # started snapshot shares posted done
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime())
    fee_bp: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DonorClose(Base):
    """One donor's flattrfed-split/1 for one period, frozen at the snapshot."""

    __tablename__ = "donor_closes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("clearing_runs.id"), index=True)
    donor_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    budget_minor: Mapped[int] = mapped_column(BigInteger)
    wallet_minor: Mapped[int] = mapped_column(BigInteger)
    spent_minor: Mapped[int] = mapped_column(BigInteger)  # B = min(budget, wallet)
    fee_minor: Mapped[int] = mapped_column(BigInteger)
    share_minor: Mapped[int] = mapped_column(BigInteger)  # q
    things: Mapped[int] = mapped_column(Integer)  # n
    carry_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index(None, "run_id", "donor_id", unique=True),)


class Share(Base):
    """One click's money: q for one flattr, traceable to exactly one Like."""

    __tablename__ = "shares"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("clearing_runs.id"))
    donor_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    flattr_id: Mapped[int] = mapped_column(ForeignKey("flattrs.id"), unique=True)
    like_uri: Mapped[str] = mapped_column(URI, unique=True)
    target_uri: Mapped[str] = mapped_column(URI)
    payee_uri: Mapped[str] = mapped_column(URI)
    payee_host: Mapped[str] = mapped_column(String(255), index=True)
    # The local member credited, when the payee is on this instance.
    creator_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    # The close reads and sums shares a range of donors at a time.
    __table_args__ = (Index(None, "run_id", "donor_id"),)


class ProofKey(Base):
    """An Ed25519 key of our instance actor that signs settlement documents (FEP-8b32)."""

    __tablename__ = "proof_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("local_actors.id"), index=True)
    private_key_pem: Mapped[str] = mapped_column(Text)
    multikey: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Statement(Base):
    """A statement we issued to a peer (`out`) or received from one (`in`), as signed."""

    __tablename__ = "statements"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uri: Mapped[str] = mapped_column(URI, unique=True)
    direction: Mapped[str] = mapped_column(String(3))  # out | in
    period: Mapped[str] = mapped_column(String(7))
    peer_host: Mapped[str] = mapped_column(String(255))
    revision: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    line_count: Mapped[int] = mapped_column(Integer)
    # issued | accepted | rejected | superseded (out); received | accepted | rejected (in)
    state: Mapped[str] = mapped_column(String(16))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index(None, "direction", "period", "peer_host", "revision", unique=True),)


class StatementLine(Base):
    """One line of a statement we issued or accepted, in order, with the page it travels on."""

    __tablename__ = "statement_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("statements.id"))
    position: Mapped[int] = mapped_column(Integer)  # 0-based, in like_uri order
    page: Mapped[int] = mapped_column(Integer)  # 1-based
    like_uri: Mapped[str] = mapped_column(URI)
    donor_uri: Mapped[str] = mapped_column(URI)
    object_uri: Mapped[str] = mapped_column(URI)
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index(None, "statement_id", "position", unique=True),
        Index(None, "statement_id", "page"),
    )


class Settlement(Base):
    """The bilateral net of one period with one peer, and where its payment stands."""

    __tablename__ = "settlements"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uri: Mapped[str] = mapped_column(URI, unique=True)
    period: Mapped[str] = mapped_column(String(7))
    peer_host: Mapped[str] = mapped_column(String(255))
    payable_minor: Mapped[int] = mapped_column(BigInteger)  # our accepted statement to them
    receivable_minor: Mapped[int] = mapped_column(BigInteger)  # theirs to us, accepted
    carried_in_minor: Mapped[int] = mapped_column(BigInteger)  # signed: > 0 we owed them
    net_minor: Mapped[int] = mapped_column(BigInteger)  # signed: > 0 we pay, < 0 they pay
    action: Mapped[str] = mapped_column(String(8))  # pay | carry
    payment_reference: Mapped[str] = mapped_column(String(64))
    # agreed | payment_sent | confirmed | investigating | carried
    state: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    bank_reference: Mapped[str | None] = mapped_column(String(200))
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index(None, "period", "peer_host", unique=True),)


class SettlementEvent(Base):
    """Append-only record of every action on a settlement: who, what, when."""

    __tablename__ = "settlement_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    settlement_id: Mapped[int] = mapped_column(ForeignKey("settlements.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
