"""Public profile pages of members and things (/@name), and the HTML side of their posts."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import func, select

from flattrfed.activitypub.actors import actor_view, find_local_actor, is_visible
from flattrfed.activitypub.documents import wants_activitypub
from flattrfed.context import SERVICES
from flattrfed.db.models import Follow, Post

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
    context: dict[str, Any] = {
        "settings": services.settings,
        "view": view,
        "handle": f"@{actor.username}@{services.settings.host}",
        "followers": followers or 0,
        "posts": posts,
        "kind_label": "thing" if actor.kind == "thing" else "member",
    }
    response = aiohttp_jinja2.render_template("profile.html", request, context)
    response.headers["Vary"] = "Accept"
    return response
