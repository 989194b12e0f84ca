"""What our actors do to remote ones: look up handles, follow, like and undo, all via the outbox."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.client import FederationClient, FetchError
from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.activitypub.documents import (
    ACTIVITY_JSON,
    follow_activity,
    like_activity,
    undo_activity,
)
from flattrfed.activitypub.origins import BadUri, origin_of
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.db.models import LocalActor, OutboundFollow, OutboundLike, RemoteActor

HANDLE = re.compile(r"@?(?P<name>[^@\s/]{1,255})@(?P<host>[A-Za-z0-9.\-]{1,253}(:\d{1,5})?)")
JRD_TYPES = ("application/jrd+json", "application/json")
SELF_TYPES = (ACTIVITY_JSON, 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"')


class LookupFailed(Exception):
    """A handle or URL could not be resolved to an actor; the message says why, for people."""


@dataclass(frozen=True)
class Handle:
    name: str
    host: str

    def __str__(self) -> str:
        return f"@{self.name}@{self.host}"


def parse_handle(text: str) -> Handle | None:
    match = HANDLE.fullmatch(text.strip())
    if match is None:
        return None
    return Handle(match["name"], match["host"].lower())


async def webfinger(client: FederationClient, handle: Handle, *, allow_http: bool) -> str:
    """The actor URI of `handle`, from its server's WebFinger (https; http only in development)."""
    scheme = "http" if allow_http else "https"
    resource = quote(f"acct:{handle.name}@{handle.host}", safe=":@")
    url = f"{scheme}://{handle.host}/.well-known/webfinger?resource={resource}"
    try:
        document = await client.fetch_json(url, accept=JRD_TYPES[0], allowed_types=JRD_TYPES)
    except FetchError as error:
        raise LookupFailed(f"{handle} could not be looked up ({error.reason})") from None
    links = document.get("links")
    for link in links if isinstance(links, list) else []:
        if (
            isinstance(link, dict)
            and link.get("rel") == "self"
            and link.get("type") in SELF_TYPES
            and isinstance(link.get("href"), str)
        ):
            href = str(link["href"])
            try:
                origin_of(href, allow_http=allow_http)
            except BadUri:
                raise LookupFailed(f"{handle} points to an unusable actor URL") from None
            return href
    raise LookupFailed(f"{handle} has no ActivityPub actor")


def _new_uri(actor_uri: str, what: str) -> str:
    return f"{actor_uri}/{what}/{secrets.token_hex(8)}"


async def follow(
    session: AsyncSession, urls: LocalUrls, actor: LocalActor, remote: RemoteActor, now: datetime
) -> OutboundFollow:
    existing = await session.scalar(
        select(OutboundFollow).where(
            OutboundFollow.actor_id == actor.id, OutboundFollow.remote_actor_id == remote.id
        )
    )
    if existing is not None:
        return existing
    actor_uri = urls.actor(actor.kind, actor.username)
    follow_uri = _new_uri(actor_uri, "follows")
    row = OutboundFollow(
        actor_id=actor.id, remote_actor_id=remote.id, follow_uri=follow_uri, created_at=now
    )
    session.add(row)
    await session.flush()
    activity = follow_activity(follow_uri=follow_uri, actor_uri=actor_uri, object_uri=remote.uri)
    await enqueue_delivery(
        session, activity=activity, actor_id=actor.id, inboxes=[remote.inbox], now=now
    )
    return row


async def like(
    session: AsyncSession,
    urls: LocalUrls,
    actor: LocalActor,
    *,
    object_uri: str,
    author: RemoteActor,
    now: datetime,
    flattr_period: str | None = None,
) -> OutboundLike:
    """Send a Like of `object_uri` to its author's own inbox (as Mastodon does for favourites)."""
    actor_uri = urls.actor(actor.kind, actor.username)
    like_uri = _new_uri(actor_uri, "likes")
    activity = like_activity(
        like_uri=like_uri,
        actor_uri=actor_uri,
        object_uri=object_uri,
        recipient=author.uri,
        published=now,
        flattr_period=flattr_period,
        clearing_actor=urls.actor("instance", "") if flattr_period else None,
    )
    row = OutboundLike(
        actor_id=actor.id,
        object_uri=object_uri,
        like_uri=like_uri,
        activity=activity,
        inbox=author.inbox,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await enqueue_delivery(
        session, activity=activity, actor_id=actor.id, inboxes=[author.inbox], now=now
    )
    return row


async def undo_like(session: AsyncSession, sent: OutboundLike, now: datetime) -> dict[str, Any]:
    """Undo a Like we sent, embedding the whole Like (Mastodon finds what to undo by it)."""
    if sent.undone_at is not None:
        raise ValueError("this Like was already undone")
    sent.undone_at = now
    undo = undo_activity(sent.activity, undo_uri=f"{sent.like_uri}/undo")
    await enqueue_delivery(
        session, activity=undo, actor_id=sent.actor_id, inboxes=[sent.inbox], now=now
    )
    return undo
