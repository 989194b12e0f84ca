"""Discover: a member's feed (who and what they follow or flattred), new things, and follows.

Following here is local: a member follows members and things of this same instance, recorded in
`local_follows` (no activity is sent). Remote accounts follow our actors over ActivityPub.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from aiohttp import web
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from flattrfed.context import SERVICES
from flattrfed.db.models import Flattr, LocalActor, LocalFollow, Member, Post, Thing
from flattrfed.periods import Period
from flattrfed.web.flattr_pages import require_member_for
from flattrfed.web.pages import ThingCard, new_things, things_needing_support
from flattrfed.web.profiles import is_following, visible_actor
from flattrfed.web.render import message_page, render
from flattrfed.web.security import current_member

routes = web.RouteTableDef()

POSTS_SHOWN: Final = 30


@dataclass(frozen=True)
class FeedPost:
    """A post of a visible local member or thing, with who posted it."""

    id: int
    content: str
    published_at: datetime
    username: str
    title: str


async def recent_posts(
    session: AsyncSession, *, for_member: int | None, limit: int = POSTS_SHOWN
) -> list[FeedPost]:
    """Newest posts of visible actors: all of them, or those `for_member` follows or flattred."""
    visible_thing = Thing.id.is_(None) | (Thing.hidden.is_(False) & Thing.deleted_at.is_(None))
    query = (
        select(
            Post.id,
            Post.content,
            Post.published_at,
            LocalActor.username,
            func.coalesce(Thing.title, func.nullif(Member.display_name, ""), LocalActor.username),
        )
        .join(LocalActor, LocalActor.id == Post.actor_id)
        .outerjoin(Thing, Thing.id == LocalActor.thing_id)
        .outerjoin(Member, Member.id == LocalActor.member_id)
        .where(Post.deleted_at.is_(None), visible_thing)
    )
    if for_member is not None:
        followed = select(LocalFollow.target_id).where(LocalFollow.member_id == for_member)
        flattred = select(Flattr.thing_id).where(
            Flattr.donor_id == for_member,
            Flattr.undone_at.is_(None),
            Flattr.thing_id.is_not(None),
        )
        query = query.where(or_(LocalActor.id.in_(followed), Thing.id.in_(flattred)))
    rows = await session.execute(query.order_by(Post.id.desc()).limit(limit))
    return [FeedPost(*row) for row in rows.all()]


async def things_of_followed_members(
    session: AsyncSession, member_id: int, period: str
) -> list[ThingCard]:
    """New things whose owners the member follows (their things are news to them)."""
    owners = (
        select(LocalActor.member_id)
        .join(LocalFollow, LocalFollow.target_id == LocalActor.id)
        .where(LocalFollow.member_id == member_id, LocalActor.member_id.is_not(None))
    )
    cards = await new_things(session, period, owned_by=owners)
    return cards


@routes.get("/discover")
async def discover(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    member = await current_member(request)
    period = str(Period.of(services.clock.now()))
    async with services.database.sessions() as session:
        mine: list[FeedPost] = []
        followed_things: list[ThingCard] = []
        if member is not None:
            mine = await recent_posts(session, for_member=member.id)
            followed_things = await things_of_followed_members(session, member.id, period)
        everyone = await recent_posts(session, for_member=None, limit=10)
        fresh = await new_things(session, period)
        needing = await things_needing_support(session, period)
    return await render(
        request,
        "discover.html",
        {
            "my_posts": mine,
            "followed_things": followed_things,
            "all_posts": everyone,
            "new_things": fresh,
            "needing_support": needing,
        },
    )


def _back(name: str, msg: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(str(URL(f"/@{name}").with_query(msg=msg)))


@routes.post("/@{name}/follow")
async def follow(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    actor = await visible_actor(request)
    member = await require_member_for(request, f"/@{actor.username}")
    if actor.member_id == member.id:
        return await message_page(
            request, "Not possible", "You cannot follow yourself.", back=f"/@{actor.username}"
        )
    try:
        async with services.database.transaction() as session:
            if not await is_following(session, member.id, actor.id):
                session.add(
                    LocalFollow(
                        member_id=member.id, target_id=actor.id, created_at=services.clock.now()
                    )
                )
    except IntegrityError:
        pass  # Two clicks at once: the unique (member, target) pair let one through; fine.
    raise _back(actor.username, "followed")


@routes.post("/@{name}/unfollow")
async def unfollow(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    actor = await visible_actor(request)
    member = await require_member_for(request, f"/@{actor.username}")
    async with services.database.transaction() as session:
        await session.execute(
            delete(LocalFollow).where(
                LocalFollow.member_id == member.id, LocalFollow.target_id == actor.id
            )
        )
    raise _back(actor.username, "unfollowed")
