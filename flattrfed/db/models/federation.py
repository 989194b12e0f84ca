"""Federation state: our actors and keys, remote actors, follows, inbound activities, hosts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from flattrfed.db.base import Base
from flattrfed.db.types import UTCDateTime

BigId = BigInteger().with_variant(Integer, "sqlite")
URI = String(2048)


class LocalActor(Base):
    """An actor this instance hosts: a member (Person), a thing (Service) or the instance itself.

    Members and things share one handle namespace, because WebFinger's acct:NAME@host must
    name exactly one actor.
    """

    __tablename__ = "local_actors"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # person | thing | instance
    username: Mapped[str] = mapped_column(String(255), unique=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), unique=True)
    thing_id: Mapped[int | None] = mapped_column(ForeignKey("things.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ActorKey(Base):
    """An RSA key pair of a local actor; the newest unretired one signs, older ones are history."""

    __tablename__ = "actor_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("local_actors.id"), index=True)
    private_key_pem: Mapped[str] = mapped_column(Text)
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RemoteActor(Base):
    """What we verified about an actor on another server: where to deliver and its key."""

    __tablename__ = "remote_actors"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uri: Mapped[str] = mapped_column(URI, unique=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    type: Mapped[str] = mapped_column(String(32))
    preferred_username: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), default="")
    profile_url: Mapped[str | None] = mapped_column(URI)
    inbox: Mapped[str] = mapped_column(URI)
    shared_inbox: Mapped[str | None] = mapped_column(URI)
    followers_url: Mapped[str | None] = mapped_column(URI)
    key_id: Mapped[str] = mapped_column(URI, index=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    also_known_as: Mapped[list[str]] = mapped_column(JSON, default=list)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Follow(Base):
    """A remote actor following one of our actors (we auto-accept)."""

    __tablename__ = "follows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    follower_id: Mapped[int] = mapped_column(ForeignKey("remote_actors.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("local_actors.id"), index=True)
    follow_uri: Mapped[str] = mapped_column(URI)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("follower_id", "target_id"),)


class LocalFollow(Base):
    """A member following a member or thing of this same instance (their Discover feed).

    Local only: no activity is sent, since both sides live in this database.
    """

    __tablename__ = "local_follows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("local_actors.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("member_id", "target_id"),)


class InboundActivity(Base):
    """A verified activity as it arrived, stored once by its id before the 202 is sent."""

    __tablename__ = "inbound_activities"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    activity_uri: Mapped[str] = mapped_column(URI, unique=True)
    actor_uri: Mapped[str] = mapped_column(URI, index=True)
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # What the worker concluded: done, ignored (with why) or failed.
    outcome: Mapped[str | None] = mapped_column(String(255))
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Post(Base):
    """An update a thing published to its followers (a Note delivered in a Create)."""

    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("local_actors.id"), index=True)
    uri: Mapped[str] = mapped_column(URI, unique=True)
    content: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ReceivedLike(Base):
    """A Like of one of our actors or posts, as received (flattr or plain appreciation)."""

    __tablename__ = "received_likes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    like_uri: Mapped[str] = mapped_column(URI, unique=True)
    actor_uri: Mapped[str] = mapped_column(URI, index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("local_actors.id"), index=True)
    post_id: Mapped[int | None] = mapped_column(ForeignKey("posts.id"))
    object_uri: Mapped[str] = mapped_column(URI)
    sender_host: Mapped[str] = mapped_column(String(255), index=True)
    # Set only when the Like carried our Flattr instrument: the month it counts in.
    flattr_period: Mapped[str | None] = mapped_column(String(7))
    clearing_actor: Mapped[str | None] = mapped_column(URI)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # A received statement is checked against one peer's Likes of one month.
    __table_args__ = (Index(None, "sender_host", "flattr_period"),)


class RemoteObject(Base):
    """A remote object (e.g. a post someone flattred) fetched from its origin and kept."""

    __tablename__ = "remote_objects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uri: Mapped[str] = mapped_column(URI, unique=True)
    type: Mapped[str] = mapped_column(String(32))
    attributed_to: Mapped[str | None] = mapped_column(URI, index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class FederationHost(Base):
    """Delivery health of one remote host; a host failing on many distinct days is paused."""

    __tablename__ = "federation_hosts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    failure_days: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_day: Mapped[str | None] = mapped_column(String(10))
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    unavailable_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index(None, "last_failure_at"),)


class DomainBlock(Base):
    """A domain whose activities are accepted with 202 and dropped, and which we never contact."""

    __tablename__ = "domain_blocks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OutboundFollow(Base):
    """One of our actors following a remote actor; `accepted_at` is set by their Accept."""

    __tablename__ = "outbound_follows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("local_actors.id"), index=True)
    remote_actor_id: Mapped[int] = mapped_column(ForeignKey("remote_actors.id"), index=True)
    follow_uri: Mapped[str] = mapped_column(URI, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("actor_id", "remote_actor_id"),)


class OutboundLike(Base):
    """A Like one of our actors sent (a flattr or a plain appreciation), kept to Undo it later."""

    __tablename__ = "outbound_likes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("local_actors.id"), index=True)
    object_uri: Mapped[str] = mapped_column(URI)
    like_uri: Mapped[str] = mapped_column(URI, unique=True)
    activity: Mapped[dict[str, Any]] = mapped_column(JSON)
    inbox: Mapped[str] = mapped_column(URI)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
