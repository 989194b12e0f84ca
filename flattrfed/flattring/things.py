"""Things: creating and finding the creator works members own (each one a followable actor)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import create_local_actor, username_taken
from flattrfed.db.models import LocalActor, Member, Thing
from flattrfed.flattring.members import USERNAME_PATTERN


class ThingError(ValueError):
    """A thing cannot be created or changed as asked; the message says why."""


async def create_thing(
    session: AsyncSession,
    *,
    owner: Member,
    handle: str,
    title: str,
    now: datetime,
    description: str = "",
    external_url: str | None = None,
) -> Thing:
    if not USERNAME_PATTERN.fullmatch(handle):
        raise ThingError(f"handle {handle!r} is not valid: use 1-30 lowercase letters, digits or _")
    title = title.strip()
    if not 1 <= len(title) <= 200:
        raise ThingError("a thing needs a title of 1-200 characters")
    if await username_taken(session, handle):
        raise ThingError(f"handle {handle!r} is taken")
    thing = Thing(
        owner_id=owner.id,
        title=title,
        description=description,
        external_url=external_url,
        created_at=now,
    )
    session.add(thing)
    await session.flush()
    await create_local_actor(session, kind="thing", username=handle, now=now, thing_id=thing.id)
    return thing


async def thing_actor(session: AsyncSession, handle: str) -> LocalActor | None:
    return await session.scalar(
        select(LocalActor).where(LocalActor.kind == "thing", LocalActor.username == handle)
    )
