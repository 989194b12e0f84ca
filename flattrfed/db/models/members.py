"""Members: the people with an account on this instance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from flattrfed.db.base import Base
from flattrfed.db.types import UTCDateTime


class Member(Base):
    """A local account; its username is also its ActivityPub preferredUsername."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    username: Mapped[str] = mapped_column(String(30), unique=True)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    bio: Mapped[str] = mapped_column(Text, default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # None: no budget set, so the member cannot flattr (DESIGN §3).
    monthly_budget_minor: Mapped[int | None] = mapped_column(BigInteger)
    # Registration by approval: None until an admin approves; such members cannot log in.
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    flattrs_public: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when the member deleted the account: the row stays, anonymised, so the username
    # (and so the actor URI) is never given to anyone else (docs/decisions/0007).
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
