"""Public profile pages of members and things (/@name), and the HTML side of their posts."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_view, find_local_actor, is_visible
from flattrfed.activitypub.documents import wants_activitypub
from flattrfed.context import SERVICES
from flattrfed.db.models import Flattr, Follow, LocalActor, Member, Post, ReceivedLike, Thing
from flattrfed.periods import Period
from flattrfed.web.labels import web_link
from flattrfed.web.render import render
from flattrfed.web.security import current_member

routes = web.RouteTableDef()


@routes.get("/@{name}")
async def profile(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        actor = await find_local_actor(session, username=request.match_info["name"])
        if actor is None or actor.kind == "instance" or not await is_visible(session, actor):
            raise web.HTTPNotFound()
        if wants_activitypub(request.headers.get("Accept")):
            # Someone pasted the profile URL into Mastodon's (or Fedify's) search: those fetch
            # it asking for ActivityStreams, and follow a redirect to the actor document.
            raise web.HTTPFound(
                services.urls.actor(actor.kind, actor.username), headers={"Vary": "Accept"}
            )
        view = await actor_view(session, services.urls, actor)
        followers = await session.scalar(
            select(func.count()).select_from(Follow).where(Follow.target_id == actor.id)
        )
        posts = (
            await session.scalars(
                select(Post)
                .where(Post.actor_id == actor.id, Post.deleted_at.is_(None))
                .order_by(Post.id.desc())
                .limit(20)
            )
        ).all()
        thing_context = (
            await _thing_context(request, session, actor) if actor.kind == "thing" else {}
        )
    context: dict[str, Any] = {
        "view": view,
        "handle": f"@{actor.username}@{services.settings.host}",
        "followers": followers or 0,
        "posts": posts,
        "kind_label": "thing" if actor.kind == "thing" else "member",
        "payment_link": services.urls.flattr_page(actor.kind, actor.username),
        **thing_context,
    }
    response = await render(request, "profile.html", context)
    response.headers["Vary"] = "Accept"
    return response


async def _thing_context(
    request: web.Request, session: AsyncSession, actor: LocalActor
) -> dict[str, Any]:
    """What a thing's page adds: owner, link, flattr counts, and the visitor's Flattr/Undo."""
    services = request.app[SERVICES]
    thing = await session.get(Thing, actor.thing_id)
    assert thing is not None
    owner = await session.get(Member, thing.owner_id)
    period = str(Period.of(services.clock.now()))
    live = (ReceivedLike.target_id == actor.id) & ReceivedLike.undone_at.is_(None)
    this_month = await session.scalar(
        select(func.count())
        .select_from(ReceivedLike)
        .where(live & (ReceivedLike.flattr_period == period))
    )
    all_time = await session.scalar(
        select(func.count())
        .select_from(ReceivedLike)
        .where(live & ReceivedLike.flattr_period.is_not(None))
    )
    uri = services.urls.actor(actor.kind, actor.username)
    visitor = await current_member(request)
    mine: Flattr | None = None
    if visitor is not None:
        mine = await session.scalar(
            select(Flattr).where(
                Flattr.donor_id == visitor.id,
                Flattr.target_uri == uri,
                Flattr.period == period,
                Flattr.undone_at.is_(None),
            )
        )
    return {
        "thing": thing,
        "owner": owner,
        "external_link": web_link(thing.external_url),
        "flattrs_this_month": int(this_month or 0),
        "flattrs_all_time": int(all_time or 0),
        "thing_uri": uri,
        "my_flattr": mine,
        "is_owner": visitor is not None and visitor.id == thing.owner_id,
        "visitor": visitor,
        "period": period,
    }
