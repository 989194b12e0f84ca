"""Public profile pages of members and things (/@name), and the HTML side of their posts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_view, find_local_actor, is_visible
from flattrfed.activitypub.documents import wants_activitypub
from flattrfed.context import SERVICES
from flattrfed.db.models import (
    Flattr,
    Follow,
    LocalActor,
    LocalFollow,
    Member,
    Post,
    ReceivedLike,
    Thing,
)
from flattrfed.periods import Period
from flattrfed.web.labels import Label, label_targets, web_link
from flattrfed.web.render import render
from flattrfed.web.security import current_member

routes = web.RouteTableDef()

# A member page lists this many public flattrs and things (newest first); the rest are older.
MEMBER_FLATTRS_SHOWN: Final = 20
MEMBER_THINGS_SHOWN: Final = 50
# The iframe snippet's size: room for the button and the count, in CSS pixels.
WIDGET_WIDTH: Final = 220
WIDGET_HEIGHT: Final = 64


@dataclass(frozen=True)
class Counts:
    """Flattrs of one thing that stand (not undone): in the current month and ever."""

    this_month: int
    all_time: int


async def flattr_counts(session: AsyncSession, actor_id: int, period: str) -> Counts:
    """Both counts in one SQL aggregate over the received Likes that carried a flattr."""
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(case((ReceivedLike.flattr_period == period, 1), else_=0)), 0
                ),
            ).where(
                ReceivedLike.target_id == actor_id,
                ReceivedLike.undone_at.is_(None),
                ReceivedLike.flattr_period.is_not(None),
            )
        )
    ).one()
    return Counts(this_month=int(row[1]), all_time=int(row[0]))


async def visible_actor(request: web.Request) -> LocalActor:
    """The member or visible thing named in the URL, or 404 (hidden and deleted things too)."""
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        actor = await find_local_actor(session, username=request.match_info["name"])
        if actor is None or actor.kind == "instance" or not await is_visible(session, actor):
            raise web.HTTPNotFound()
    return actor


async def is_following(session: AsyncSession, member_id: int, actor_id: int) -> bool:
    """Whether the member follows the local actor (a local follow, see web/discover.py)."""
    found = await session.scalar(
        select(LocalFollow.id).where(
            LocalFollow.member_id == member_id, LocalFollow.target_id == actor_id
        )
    )
    return found is not None


async def local_followers(session: AsyncSession, actor_id: int) -> int:
    """Members of this instance following the actor."""
    count = await session.scalar(
        select(func.count()).select_from(LocalFollow).where(LocalFollow.target_id == actor_id)
    )
    return int(count or 0)


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
        followers = int(followers or 0) + await local_followers(session, actor.id)
        visitor = await current_member(request)
        can_follow = visitor is not None and actor.member_id != visitor.id
        following = (
            can_follow and visitor is not None and await is_following(session, visitor.id, actor.id)
        )
        posts = (
            await session.scalars(
                select(Post)
                .where(Post.actor_id == actor.id, Post.deleted_at.is_(None))
                .order_by(Post.id.desc())
                .limit(20)
            )
        ).all()
        if actor.kind == "thing":
            extra = await _thing_context(request, session, actor)
        else:
            extra = await _member_context(request, session, actor)
    context: dict[str, Any] = {
        "view": view,
        "handle": f"@{actor.username}@{services.settings.host}",
        "followers": followers,
        "can_follow": can_follow,
        "following": following,
        "posts": posts,
        "kind_label": "thing" if actor.kind == "thing" else "member",
        "payment_link": services.urls.flattr_page(actor.kind, actor.username),
        **extra,
    }
    response = await render(request, "profile.html", context)
    response.headers["Vary"] = "Accept"
    return response


def embed_snippets(base_url: str, username: str, title: str) -> dict[str, str]:
    """The copy-ready HTML of the two embeds (escaped again when shown on the page)."""
    page = f"{base_url}/@{username}"
    safe_title = (
        title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )
    return {
        "iframe": (
            f'<iframe src="{page}/widget" title="Flattr {safe_title}" '
            f'width="{WIDGET_WIDTH}" height="{WIDGET_HEIGHT}" style="border:0"></iframe>'
        ),
        "image": (f'<a href="{page}/interact"><img src="{page}/button.svg" alt="Flattr this"></a>'),
    }


async def _thing_context(
    request: web.Request, session: AsyncSession, actor: LocalActor
) -> dict[str, Any]:
    """What a thing's page adds: owner, link, flattr counts, the visitor's Flattr/Undo, embeds."""
    services = request.app[SERVICES]
    thing = await session.get(Thing, actor.thing_id)
    assert thing is not None
    owner = await session.get(Member, thing.owner_id)
    period = str(Period.of(services.clock.now()))
    counts = await flattr_counts(session, actor.id, period)
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
        "flattrs_this_month": counts.this_month,
        "flattrs_all_time": counts.all_time,
        "thing_uri": uri,
        "my_flattr": mine,
        "is_owner": visitor is not None and visitor.id == thing.owner_id,
        "visitor": visitor,
        "period": period,
        "snippets": embed_snippets(services.settings.base_url, actor.username, thing.title),
    }


@dataclass(frozen=True)
class PublicFlattr:
    """One flattr a member made, as their public page shows it."""

    period: str
    label: Label


async def _member_context(
    request: web.Request, session: AsyncSession, actor: LocalActor
) -> dict[str, Any]:
    """What a member's page adds: their visible things and, if they allow it, their flattrs."""
    services = request.app[SERVICES]
    member = await session.get(Member, actor.member_id)
    assert member is not None
    period = str(Period.of(services.clock.now()))
    things = (
        await session.execute(
            select(Thing, LocalActor.username)
            .join(LocalActor, LocalActor.thing_id == Thing.id)
            .where(
                Thing.owner_id == member.id,
                Thing.hidden.is_(False),
                Thing.deleted_at.is_(None),
            )
            .order_by(Thing.id.desc())
            .limit(MEMBER_THINGS_SHOWN)
        )
    ).all()
    flattrs: list[PublicFlattr] = []
    if member.flattrs_public:
        rows = (
            await session.scalars(
                select(Flattr)
                .where(Flattr.donor_id == member.id, Flattr.undone_at.is_(None))
                .order_by(Flattr.created_at.desc(), Flattr.id.desc())
                .limit(MEMBER_FLATTRS_SHOWN)
            )
        ).all()
        labels = await label_targets(
            session, services.urls, [(row.target_uri, row.payee_uri) for row in rows]
        )
        # A local thing since hidden or deleted has no title label: leave it out.
        flattrs = [
            PublicFlattr(row.period, labels[row.target_uri])
            for row in rows
            if row.target_uri in labels
            and not (
                labels[row.target_uri].where == "here"
                and labels[row.target_uri].title == row.target_uri
            )
        ]
    return {
        "member": member,
        "member_things": [(thing, username) for thing, username in things],
        "public_flattrs": flattrs,
        "flattrs_shown_max": MEMBER_FLATTRS_SHOWN,
        "period": period,
    }
