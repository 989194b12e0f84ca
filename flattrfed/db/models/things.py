"""Things: creator works (a blog, a podcast, a project) that members own and others flattr."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from flattrfed.db.base import Base
from flattrfed.db.types import UTCDateTime


class Thing(Base):
    """A creator work; it is also a followable ActivityPub actor under its own handle."""

    __tablename__ = "things"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    external_url: Mapped[str | None] = mapped_column(String(2048))
    category: Mapped[str] = mapped_column(String(32), default="other")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    language: Mapped[str | None] = mapped_column(String(16))
    # A link to an image elsewhere, never an upload: serving uploaded bytes from our origin is
    # how AP JSON disguised as an image impersonated users (research/ap-interop.md A2/A3).
    image_url: Mapped[str | None] = mapped_column(String(2048))
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
