"""Our own actors: creating them with keys, rotating keys, gathering what their documents show."""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub import signatures
from flattrfed.activitypub.documents import ActorView
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.db.models import (
    ActorKey,
    IdentityClaim,
    LocalActor,
    Member,
    ProofKey,
    ReceivedLike,
    Thing,
)


@dataclass(frozen=True)
class LocalKey:
    """The signing key of one of our actors."""

    actor_uri: str
    key_id: str
    private_key_pem: str
    public_key_pem: str


async def new_key_pair() -> tuple[str, str]:
    """A fresh RSA-2048 pair as PEM; generated off the event loop (it takes ~100 ms)."""

    def generate() -> tuple[str, str]:
        key = signatures.generate_rsa_key()
        return signatures.private_key_to_pem(key), signatures.public_key_to_pem(key.public_key())

    return await asyncio.to_thread(generate)


async def create_local_actor(
    session: AsyncSession,
    *,
    kind: str,
    username: str,
    now: datetime,
    member_id: int | None = None,
    thing_id: int | None = None,
) -> LocalActor:
    private_pem, public_pem = await new_key_pair()
    actor = LocalActor(
        kind=kind, username=username, member_id=member_id, thing_id=thing_id, created_at=now
    )
    session.add(actor)
    await session.flush()
    session.add(
        ActorKey(
            actor_id=actor.id,
            private_key_pem=private_pem,
            public_key_pem=public_pem,
            created_at=now,
        )
    )
    await session.flush()
    return actor


async def username_taken(session: AsyncSession, username: str) -> bool:
    found = await session.scalar(select(LocalActor.id).where(LocalActor.username == username))
    return found is not None


def instance_username(urls: LocalUrls) -> str:
    """The instance actor's preferredUsername is its host, as Mastodon does (no member has dots)."""
    return urls.base_url.split("://", 1)[1].split(":", 1)[0]


async def ensure_instance_actor(
    session: AsyncSession, urls: LocalUrls, now: datetime
) -> LocalActor:
    actor = await session.scalar(select(LocalActor).where(LocalActor.kind == "instance"))
    if actor is None:
        actor = await create_local_actor(
            session, kind="instance", username=instance_username(urls), now=now
        )
    return actor


async def current_key(session: AsyncSession, actor_id: int) -> ActorKey:
    key = await session.scalar(
        select(ActorKey)
        .where(ActorKey.actor_id == actor_id, ActorKey.retired_at.is_(None))
        .order_by(ActorKey.id.desc())
        .limit(1)
    )
    if key is None:
        raise LookupError(f"actor {actor_id} has no key")
    return key


async def signing_key(session: AsyncSession, urls: LocalUrls, actor: LocalActor) -> LocalKey:
    key = await current_key(session, actor.id)
    uri = urls.actor(actor.kind, actor.username)
    return LocalKey(uri, urls.key_id(uri), key.private_key_pem, key.public_key_pem)


async def rotate_key(session: AsyncSession, actor: LocalActor, now: datetime) -> ActorKey:
    """Retire the current key and make a new one; the caller delivers an Update of the actor."""
    old = await current_key(session, actor.id)
    old.retired_at = now
    private_pem, public_pem = await new_key_pair()
    key = ActorKey(
        actor_id=actor.id, private_key_pem=private_pem, public_key_pem=public_pem, created_at=now
    )
    session.add(key)
    await session.flush()
    return key


async def find_local_actor(
    session: AsyncSession, *, kind: str | None = None, username: str
) -> LocalActor | None:
    query = select(LocalActor).where(LocalActor.username == username)
    if kind is not None:
        query = query.where(LocalActor.kind == kind)
    return await session.scalar(query)


async def actor_by_uri(session: AsyncSession, urls: LocalUrls, uri: str) -> LocalActor | None:
    """Our actor whose id is `uri`, if any (a visible one: hidden or deleted things are not)."""
    if not urls.owns(uri):
        return None
    if uri == urls.actor("instance", ""):
        return await session.scalar(select(LocalActor).where(LocalActor.kind == "instance"))
    for kind in ("person", "thing"):
        prefix = urls.actor(kind, "")
        if uri.startswith(prefix):
            name = uri[len(prefix) :]
            actor = await find_local_actor(session, kind=kind, username=name)
            if actor is not None and urls.actor(kind, actor.username) == uri:
                return actor if await is_visible(session, actor) else None
    return None


async def is_visible(session: AsyncSession, actor: LocalActor) -> bool:
    if actor.member_id is not None:
        member = await session.get(Member, actor.member_id)
        return member is not None and member.deleted_at is None
    if actor.thing_id is None:
        return True
    thing = await session.get(Thing, actor.thing_id)
    return thing is not None and not thing.hidden and thing.deleted_at is None


async def likes_total(session: AsyncSession, actor_id: int) -> int:
    """Likes of a thing (or its posts) that stand: flattrs and plain appreciations alike."""
    total = await session.scalar(
        select(func.count())
        .select_from(ReceivedLike)
        .where(ReceivedLike.target_id == actor_id, ReceivedLike.undone_at.is_(None))
    )
    return int(total or 0)


async def actor_view(session: AsyncSession, urls: LocalUrls, actor: LocalActor) -> ActorView:
    """What the actor document of `actor` shows."""
    key = await current_key(session, actor.id)
    uri = urls.actor(actor.kind, actor.username)
    name, summary = actor.username, ""
    payment_href: str | None = urls.flattr_page(actor.kind, actor.username)
    icon_url: str | None = None
    also_known_as: tuple[str, ...] = ()
    if actor.member_id is not None:
        member = await session.get(Member, actor.member_id)
        assert member is not None
        name, summary = member.display_name or member.username, member.bio
        # Claimed fediverse identities: one half of the two-way link (flattring/claims.py).
        also_known_as = tuple(
            (
                await session.scalars(
                    select(IdentityClaim.remote_actor_uri)
                    .where(IdentityClaim.member_id == member.id)
                    .order_by(IdentityClaim.id)
                )
            ).all()
        )
    elif actor.thing_id is not None:
        thing = await session.get(Thing, actor.thing_id)
        assert thing is not None
        name, summary = thing.title, thing.description
        icon_url = thing.image_url
    else:
        name, summary, payment_href = "flattrfed instance", "The clearing actor.", None
    return ActorView(
        uri=uri,
        kind=actor.kind,
        username=actor.username,
        name=name,
        # Bios are plain text; ActivityPub summaries are HTML, so escape on the way out.
        summary=f"<p>{html.escape(summary)}</p>" if summary else "",
        profile_url=urls.profile(actor.kind, actor.username),
        shared_inbox=urls.shared_inbox(),
        public_key_pem=key.public_key_pem,
        published=actor.created_at,
        payment_href=payment_href,
        also_known_as=also_known_as,
        icon_url=icon_url,
        likes_total=await likes_total(session, actor.id) if actor.kind == "thing" else None,
        assertion_keys=tuple(
            (
                await session.scalars(
                    select(ProofKey.multikey)
                    .where(ProofKey.actor_id == actor.id, ProofKey.retired_at.is_(None))
                    .order_by(ProofKey.id.desc())
                )
            ).all()
        ),
    )
