"""Things: creator works members own, each a followable actor: create, edit, hide, delete."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_view, create_local_actor, username_taken
from flattrfed.activitypub.delivery import deliver_to_followers
from flattrfed.activitypub.documents import actor_document, delete_activity, update_actor_activity
from flattrfed.activitypub.origins import BadUri, origin_of
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.db.models import LocalActor, Member, Post, ReceivedLike, Thing
from flattrfed.flattring.members import USERNAME_PATTERN

CATEGORIES = ("text", "audio", "video", "images", "software", "rest", "people", "other")
MAX_TAGS = 10
# Handles that would shadow a page under /things/ (the "new thing" form).
RESERVED_HANDLES = frozenset({"new"})


class ThingError(ValueError):
    """A thing cannot be created or changed as asked; the message says why."""


def _clean_url(value: str | None, what: str) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        origin_of(value.strip())
    except BadUri:
        raise ThingError(f"the {what} must be an https:// address") from None
    return value.strip()


def _clean_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Validated values for the editable fields present in `fields`."""
    cleaned: dict[str, Any] = {}
    if "title" in fields:
        title = str(fields["title"]).strip()
        if not 1 <= len(title) <= 200:
            raise ThingError("a thing needs a title of 1-200 characters")
        cleaned["title"] = title
    if "description" in fields:
        description = str(fields["description"] or "")
        if len(description) > 5000:
            raise ThingError("the description has at most 5000 characters")
        cleaned["description"] = description
    if "external_url" in fields:
        cleaned["external_url"] = _clean_url(fields["external_url"], "web address")
    if "image_url" in fields:
        cleaned["image_url"] = _clean_url(fields["image_url"], "image address")
    if "category" in fields:
        if fields["category"] not in CATEGORIES:
            raise ThingError(f"the category must be one of {', '.join(CATEGORIES)}")
        cleaned["category"] = fields["category"]
    if "tags" in fields:
        tags = [str(tag).strip().lower()[:40] for tag in fields["tags"] or [] if str(tag).strip()]
        if len(tags) > MAX_TAGS:
            raise ThingError(f"at most {MAX_TAGS} tags")
        cleaned["tags"] = list(dict.fromkeys(tags))
    if "language" in fields:
        language = (fields["language"] or "").strip().lower() or None
        if language is not None and not (
            2 <= len(language) <= 16 and language.replace("-", "").isalnum()
        ):
            raise ThingError("the language must be a code such as en or pt-br")
        cleaned["language"] = language
    return cleaned


async def create_thing(
    session: AsyncSession,
    *,
    owner: Member,
    handle: str,
    title: str,
    now: datetime,
    description: str = "",
    external_url: str | None = None,
    **extra: Any,
) -> Thing:
    if not USERNAME_PATTERN.fullmatch(handle):
        raise ThingError(f"handle {handle!r} is not valid: use 1-30 lowercase letters, digits or _")
    if handle in RESERVED_HANDLES:
        raise ThingError(f"handle {handle!r} is reserved: choose another")
    fields = _clean_fields(
        {"title": title, "description": description, "external_url": external_url, **extra}
    )
    if await username_taken(session, handle):
        raise ThingError(f"handle {handle!r} is taken")
    thing = Thing(owner_id=owner.id, created_at=now, **fields)
    session.add(thing)
    await session.flush()
    await create_local_actor(session, kind="thing", username=handle, now=now, thing_id=thing.id)
    return thing


async def owned_thing(
    session: AsyncSession, owner: Member, thing_id: int
) -> tuple[Thing, LocalActor]:
    """The owner's thing (not deleted) and its actor, or ThingError for anyone else's."""
    return await _owned(session, owner, thing_id)


async def _owned(session: AsyncSession, owner: Member, thing_id: int) -> tuple[Thing, LocalActor]:
    thing = await session.get(Thing, thing_id)
    if thing is None or thing.owner_id != owner.id or thing.deleted_at is not None:
        raise ThingError("no such thing of yours")
    actor = await session.scalar(select(LocalActor).where(LocalActor.thing_id == thing.id))
    assert actor is not None
    return thing, actor


async def edit_thing(
    session: AsyncSession,
    urls: LocalUrls,
    owner: Member,
    thing_id: int,
    now: datetime,
    **fields: Any,
) -> Thing:
    """Change a thing's fields; followers get an Update of its actor."""
    thing, actor = await _owned(session, owner, thing_id)
    for name, value in _clean_fields(fields).items():
        setattr(thing, name, value)
    await session.flush()
    if not thing.hidden:
        view = await actor_view(session, urls, actor)
        update = update_actor_activity(
            actor_document(view),
            activity_uri=f"{view.uri}#updates/{secrets.token_hex(8)}",
            published=now,
        )
        await deliver_to_followers(session, actor=actor, activity=update, now=now)
    return thing


async def set_hidden(session: AsyncSession, owner: Member, thing_id: int, hidden: bool) -> Thing:
    """Hidden things vanish from pages and federation (404) and cannot be flattred."""
    thing, _actor = await _owned(session, owner, thing_id)
    thing.hidden = hidden
    await session.flush()
    return thing


async def delete_thing(
    session: AsyncSession, urls: LocalUrls, owner: Member, thing_id: int, now: datetime
) -> Thing:
    """Delete a thing; its followers are told with a Delete of the actor. Money already
    flattred to it stays in the ledger (flattrs of the open month are still paid at close)."""
    thing, actor = await _owned(session, owner, thing_id)
    actor_uri = urls.actor(actor.kind, actor.username)
    await deliver_to_followers(
        session,
        actor=actor,
        activity=delete_activity(
            actor_uri=actor_uri, object_uri=actor_uri, activity_uri=f"{actor_uri}#delete"
        ),
        now=now,
    )
    thing.deleted_at = now
    await session.flush()
    return thing


async def thing_actor(session: AsyncSession, handle: str) -> LocalActor | None:
    return await session.scalar(
        select(LocalActor).where(LocalActor.kind == "thing", LocalActor.username == handle)
    )


@dataclass(frozen=True)
class ThingSummary:
    """One of a member's things with its handle and how many flattrs it received."""

    thing: Thing
    handle: str
    flattrs_this_month: int
    flattrs_all_time: int


async def things_of(session: AsyncSession, owner: Member, period: str) -> list[ThingSummary]:
    """The owner's things that are not deleted, newest first, with flattr counts (in SQL)."""
    counted = ReceivedLike.flattr_period.is_not(None) & ReceivedLike.undone_at.is_(None)
    this_month = func.sum(case((counted & (ReceivedLike.flattr_period == period), 1), else_=0))
    all_time = func.sum(case((counted, 1), else_=0))
    rows = await session.execute(
        select(Thing, LocalActor.username, this_month, all_time)
        .join(LocalActor, LocalActor.thing_id == Thing.id)
        .outerjoin(ReceivedLike, ReceivedLike.target_id == LocalActor.id)
        .where(Thing.owner_id == owner.id, Thing.deleted_at.is_(None))
        .group_by(Thing.id, LocalActor.username)
        .order_by(Thing.id.desc())
    )
    return [
        ThingSummary(thing, handle, int(month or 0), int(total or 0))
        for thing, handle, month, total in rows
    ]


async def recent_posts(session: AsyncSession, actor_id: int, limit: int = 10) -> list[Post]:
    """An actor's newest posts that are not deleted."""
    rows = await session.scalars(
        select(Post)
        .where(Post.actor_id == actor_id, Post.deleted_at.is_(None))
        .order_by(Post.id.desc())
        .limit(limit)
    )
    return list(rows.all())
