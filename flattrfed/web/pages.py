"""Public pages that need no login: the front page and the health endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed import __version__
from flattrfed.context import SERVICES
from flattrfed.db.models import LocalActor, Member, ReceivedLike, Thing
from flattrfed.flattring.policy import current_policy
from flattrfed.periods import Period
from flattrfed.web.render import render

routes = web.RouteTableDef()

LIST_LENGTH: Final = 10
# "Needs support": fewer flattrs than this in the current month.
FEW_FLATTRS: Final = 3


@dataclass(frozen=True)
class ThingCard:
    """A thing as the lists of the front page and Discover show it."""

    username: str
    title: str
    description: str
    owner: str
    flattrs_this_month: int


def _month_counts(period: str) -> Any:
    """Standing flattrs per local actor in `period`, aggregated in SQL."""
    return (
        select(ReceivedLike.target_id.label("actor_id"), func.count().label("n"))
        .where(ReceivedLike.flattr_period == period, ReceivedLike.undone_at.is_(None))
        .group_by(ReceivedLike.target_id)
        .subquery()
    )


def _cards_query(counts: Any) -> Select[Any]:
    flattrs = func.coalesce(counts.c.n, 0)
    return (
        select(
            LocalActor.username,
            Thing.title,
            Thing.description,
            func.coalesce(func.nullif(Member.display_name, ""), Member.username),
            flattrs,
        )
        .join(Thing, Thing.id == LocalActor.thing_id)
        .join(Member, Member.id == Thing.owner_id)
        .outerjoin(counts, counts.c.actor_id == LocalActor.id)
        .where(Thing.hidden.is_(False), Thing.deleted_at.is_(None))
    )


def _cards(rows: Any) -> list[ThingCard]:
    return [
        ThingCard(username, title, description, owner, int(flattrs))
        for username, title, description, owner, flattrs in rows
    ]


async def popular_things(
    session: AsyncSession, period: str, limit: int = LIST_LENGTH
) -> list[ThingCard]:
    """The things with the most flattrs this month (only things flattred at all)."""
    counts = _month_counts(period)
    query = _cards_query(counts).where(counts.c.n > 0)
    rows = await session.execute(query.order_by(counts.c.n.desc(), Thing.id.desc()).limit(limit))
    return _cards(rows.all())


async def things_needing_support(
    session: AsyncSession, period: str, limit: int = LIST_LENGTH
) -> list[ThingCard]:
    """Recent things with few flattrs this month, newest first."""
    counts = _month_counts(period)
    query = _cards_query(counts).where(func.coalesce(counts.c.n, 0) < FEW_FLATTRS)
    rows = await session.execute(query.order_by(Thing.id.desc()).limit(limit))
    return _cards(rows.all())


async def new_things(
    session: AsyncSession, period: str, limit: int = LIST_LENGTH, *, owned_by: Any = None
) -> list[ThingCard]:
    """The newest visible things, whatever their counts (of owners in `owned_by`, if given)."""
    query = _cards_query(_month_counts(period))
    if owned_by is not None:
        query = query.where(Thing.owner_id.in_(owned_by))
    rows = await session.execute(query.order_by(Thing.id.desc()).limit(limit))
    return _cards(rows.all())


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness and database reachability, for load balancers and `make run` users."""
    services = request.app[SERVICES]
    try:
        async with services.database.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as error:
        body = {"status": "error", "database": type(error).__name__}
        return web.json_response(body, status=503)
    return web.json_response({"status": "ok", "version": __version__, "database": "ok"})


@routes.get("/")
async def front_page(request: web.Request) -> web.Response:
    """What this instance is, its live fee, and things to flattr."""
    services = request.app[SERVICES]
    now = services.clock.now()
    period = str(Period.of(now))
    async with services.database.transaction() as session:
        # A transaction: the policy row is created from the settings on first use.
        policy = await current_policy(session, services.settings, now)
        popular = await popular_things(session, period)
        needing = await things_needing_support(session, period)
    return await render(
        request,
        "index.html",
        {
            "policy": policy,
            "period": period,
            "popular": popular,
            "needing_support": needing,
        },
    )
