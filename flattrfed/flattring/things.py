"""Things: creator works members own, each a followable actor: create, edit, hide, delete."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_view, create_local_actor, username_taken
from flattrfed.activitypub.delivery import deliver_to_followers
from flattrfed.activitypub.documents import actor_document, delete_activity, update_actor_activity
from flattrfed.activitypub.origins import BadUri, origin_of
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.db.models import LocalActor, Member, Thing
from flattrfed.flattring.members import USERNAME_PATTERN

CATEGORIES = ("text", "audio", "video", "images", "software", "rest", "people", "other")
MAX_TAGS = 10


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
