"""The month close: one run per period, each donor's split, and the per-click shares."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
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
    run_id: Mapped[int] = mapped_column(ForeignKey("clearing_runs.id"), index=True)
    donor_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    flattr_id: Mapped[int] = mapped_column(ForeignKey("flattrs.id"), unique=True)
    like_uri: Mapped[str] = mapped_column(URI, unique=True)
    target_uri: Mapped[str] = mapped_column(URI)
    payee_uri: Mapped[str] = mapped_column(URI)
    payee_host: Mapped[str] = mapped_column(String(255), index=True)
    # The local member credited, when the payee is on this instance.
    creator_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
