"""Publishing: a thing's post (a Note in a Create) and actor Updates, queued to followers."""

from __future__ import annotations

import html
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_view, rotate_key
from flattrfed.activitypub.delivery import deliver_to_followers
from flattrfed.activitypub.documents import (
    actor_document,
    create_activity,
    note_document,
    update_actor_activity,
)
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.db.models import LocalActor, Post

MAX_POST_CHARS = 5000


def text_to_html(text: str) -> str:
    paragraphs = [part.strip() for part in text.strip().split("\n\n") if part.strip()]
    return "".join(
        "<p>" + "<br>".join(html.escape(line) for line in part.split("\n")) + "</p>"
        for part in paragraphs
    )


async def publish_post(
    session: AsyncSession, urls: LocalUrls, actor: LocalActor, text: str, now: datetime
) -> Post:
    """Store a post and queue its Create to every follower in the same transaction."""
    if not text.strip():
        raise ValueError("a post needs some text")
    if len(text) > MAX_POST_CHARS:
        raise ValueError(f"a post has at most {MAX_POST_CHARS} characters")
    actor_uri = urls.actor(actor.kind, actor.username)
    # The uri needs the row's id, so a placeholder goes first. It must be unique: with one
    # shared "" every concurrent publish waited on the unique index until the first
    # transaction ended (PostgreSQL), so posts went out one transaction at a time.
    placeholder = f"urn:uuid:{uuid.uuid4()}"
    post = Post(actor_id=actor.id, uri=placeholder, content=text_to_html(text), published_at=now)
    session.add(post)
    await session.flush()
    post.uri = urls.post(actor_uri, post.id)
    await session.flush()
    note = note_document(
        uri=post.uri,
        actor_uri=actor_uri,
        content=post.content,
        published=now,
        followers=f"{actor_uri}/followers",
    )
    await deliver_to_followers(session, actor=actor, activity=create_activity(note), now=now)
    return post


async def rotate_actor_key(
    session: AsyncSession, urls: LocalUrls, actor: LocalActor, now: datetime
) -> int:
    """A new key for `actor`; its Update goes to followers. Returns how many deliveries queued."""
    key = await rotate_key(session, actor, now)
    view = await actor_view(session, urls, actor)
    update = update_actor_activity(
        actor_document(view),
        activity_uri=f"{view.uri}#updates/keys/{key.id}",
        published=now,
    )
    return await deliver_to_followers(session, actor=actor, activity=update, now=now)
