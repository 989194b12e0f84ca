"""Work rows: the database-backed queue the worker claims (deliveries, inbound activities, runs)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from flattrfed.db.base import Base
from flattrfed.db.types import UTCDateTime


class WorkState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class WorkItem(Base):
    """One unit of background work, claimed by a worker under a lease.

    A row is written in the same transaction as the change that needs it (transactional
    outbox), so work is never lost between commit and send; the lease lets a crashed
    worker's rows be taken over once it expires.
    """

    __tablename__ = "work_items"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Enqueueing twice with the same key is a no-op: a retried request must not double the work.
    dedupe_key: Mapped[str | None] = mapped_column(String(512), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=WorkState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=16)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index(None, "state", "run_after"),)
