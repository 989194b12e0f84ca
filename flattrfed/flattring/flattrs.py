"""Flattring: one click per donor, target and month; delivered as a Like; undone while open."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import find_local_actor
from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.activitypub.documents import like_activity
from flattrfed.activitypub.interactions import undo_like
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.db.models import (
    Flattr,
    IdentityClaim,
    LocalActor,
    Member,
    OutboundLike,
    ReceivedLike,
    Thing,
)
from flattrfed.flattring.resolve import CannotFlattr, Target
from flattrfed.periods import Period

PAYABLE = "payable"
PENDING = "pending"
EXPIRED = "expired"


async def _check_allowed(
    session: AsyncSession, donor: Member, target: Target, receiving_needs_budget: bool
) -> None:
    if donor.monthly_budget_minor is None:
        raise CannotFlattr("set a monthly budget before flattring")
    if target.local_thing_id is not None:
        thing = await session.get(Thing, target.local_thing_id)
        if thing is not None and thing.owner_id == donor.id:
            raise CannotFlattr("you cannot flattr your own thing")
        owner = await session.get(Member, thing.owner_id) if thing is not None else None
        if receiving_needs_budget and owner is not None and owner.monthly_budget_minor is None:
            # Flattr's rule until 2011, optional here: only those who give can receive.
            raise CannotFlattr("this creator takes flattrs only while flattring others")
    own_identity = await session.scalar(
        select(IdentityClaim.id).where(
            IdentityClaim.member_id == donor.id,
            IdentityClaim.remote_actor_uri == target.payee_uri,
            IdentityClaim.state == "verified",
        )
    )
    if own_identity is not None:
        raise CannotFlattr("you cannot flattr your own fediverse identity")
    if not target.same_currency:
        raise CannotFlattr("that creator's instance clears in another currency")


async def flattr(
    session: AsyncSession,
    urls: LocalUrls,
    donor: Member,
    target: Target,
    now: datetime,
    *,
    receiving_needs_budget: bool = False,
) -> Flattr:
    """Record the flattr and its Like (and the Like's delivery) in the caller's transaction."""
    await _check_allowed(session, donor, target, receiving_needs_budget)
    period = str(Period.of(now))
    existing = await session.scalar(
        select(Flattr).where(
            Flattr.donor_id == donor.id,
            Flattr.target_uri == target.target_uri,
            Flattr.period == period,
        )
    )
    if existing is not None and existing.undone_at is None:
        raise CannotFlattr("you already flattred this in this month")
    donor_actor = await find_local_actor(session, kind="person", username=donor.username)
    assert donor_actor is not None
    donor_uri = urls.actor("person", donor.username)
    like_uri = f"{donor_uri}/flattrs/{secrets.token_hex(8)}"
    like = like_activity(
        like_uri=like_uri,
        actor_uri=donor_uri,
        object_uri=target.target_uri,
        recipient=target.payee_uri,
        published=now,
        flattr_period=period,
        clearing_actor=urls.actor("instance", ""),
    )
    status = PAYABLE if target.flattrfed else PENDING
    if existing is not None:
        # Flattred again after an Undo in the same month: the same click, with a new Like.
        row = existing
        row.like_uri, row.undone_at, row.created_at, row.status = like_uri, None, now, status
    else:
        row = Flattr(
            donor_id=donor.id,
            period=period,
            target_uri=target.target_uri,
            payee_uri=target.payee_uri,
            payee_host=target.payee_host,
            thing_id=target.local_thing_id,
            like_uri=like_uri,
            status=status,
            created_at=now,
        )
        session.add(row)
    await session.flush()
    if target.is_local:
        await _receive_locally(session, target, like_uri, donor_uri, period, urls, now)
    else:
        assert target.payee_inbox is not None
        session.add(
            OutboundLike(
                actor_id=donor_actor.id,
                object_uri=target.target_uri,
                like_uri=like_uri,
                activity=like,
                inbox=target.payee_inbox,
                created_at=now,
            )
        )
        await enqueue_delivery(
            session, activity=like, actor_id=donor_actor.id, inboxes=[target.payee_inbox], now=now
        )
    await session.flush()
    return row


async def _receive_locally(
    session: AsyncSession,
    target: Target,
    like_uri: str,
    donor_uri: str,
    period: str,
    urls: LocalUrls,
    now: datetime,
) -> None:
    """A flattr of a thing on this instance is received here directly: no HTTP to ourselves."""
    thing_actor = await session.scalar(
        select(LocalActor).where(LocalActor.thing_id == target.local_thing_id)
    )
    assert thing_actor is not None
    session.add(
        ReceivedLike(
            like_uri=like_uri,
            actor_uri=donor_uri,
            target_id=thing_actor.id,
            post_id=target.local_post_id,
            object_uri=target.target_uri,
            sender_host=urls.base_url.split("://", 1)[1],
            flattr_period=period,
            clearing_actor=urls.actor("instance", ""),
            received_at=now,
        )
    )


async def unflattr(session: AsyncSession, donor: Member, flattr_id: int, now: datetime) -> Flattr:
    """Undo a flattr while its month is open; the Undo (embedding the Like) is delivered."""
    row = await session.get(Flattr, flattr_id)
    if row is None or row.donor_id != donor.id:
        raise CannotFlattr("no such flattr of yours")
    if row.undone_at is not None:
        raise CannotFlattr("this flattr was already undone")
    if row.period != str(Period.of(now)):
        raise CannotFlattr("flattrs of a closed month cannot be undone")
    row.undone_at = now
    sent = await session.scalar(select(OutboundLike).where(OutboundLike.like_uri == row.like_uri))
    if sent is not None:
        await undo_like(session, sent, now)
    else:
        received = await session.scalar(
            select(ReceivedLike).where(ReceivedLike.like_uri == row.like_uri)
        )
        if received is not None and received.undone_at is None:
            received.undone_at = now
    await session.flush()
    return row
