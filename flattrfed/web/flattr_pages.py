"""Flattr anything: look up a fediverse URL or handle, show what it is, flattr it on confirm.

Also the payment link every actor document carries (`/@name/flattr`), which leads here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from yarl import URL

from flattrfed.activitypub.actors import find_local_actor, is_visible
from flattrfed.context import SERVICES
from flattrfed.db.models import Flattr, Member, Thing
from flattrfed.flattring.flattrs import PAYABLE, flattr
from flattrfed.flattring.policy import current_policy
from flattrfed.flattring.resolve import CannotFlattr, Target, resolve_target
from flattrfed.periods import Period
from flattrfed.web.labels import web_link
from flattrfed.web.render import render, sentence
from flattrfed.web.security import login_url, require_member, safe_next

routes = web.RouteTableDef()

MAX_INPUT = 2048


def flattr_url(uri: str) -> str:
    return str(URL("/flattr").with_query(uri=uri))


async def _existing(request: web.Request, member: Member, target: Target) -> Flattr | None:
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        return await session.scalar(
            select(Flattr).where(
                Flattr.donor_id == member.id,
                Flattr.target_uri == target.target_uri,
                Flattr.period == str(Period.of(services.clock.now())),
                Flattr.undone_at.is_(None),
            )
        )


async def _own_thing(request: web.Request, member: Member, target: Target) -> bool:
    if target.local_thing_id is None:
        return False
    async with request.app[SERVICES].database.sessions() as session:
        thing = await session.get(Thing, target.local_thing_id)
    return thing is not None and thing.owner_id == member.id


async def _page(
    request: web.Request,
    member: Member,
    uri: str,
    *,
    target: Target | None = None,
    error: str | None = None,
    next_path: str = "/dashboard",
) -> web.Response:
    context: dict[str, Any] = {
        "uri": uri,
        "target": target,
        "error": error,
        "next": next_path,
        "existing": None,
        "own": False,
        "budget_missing": member.monthly_budget_minor is None,
        "period": str(Period.of(request.app[SERVICES].clock.now())),
    }
    if target is not None:
        context["existing"] = await _existing(request, member, target)
        context["own"] = await _own_thing(request, member, target)
        context["target_link"] = web_link(target.target_uri)
        context["payable"] = target.flattrfed
    return await render(request, "flattr.html", context, status=400 if error else 200)


@routes.get("/flattr")
async def flattr_page(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    uri = request.query.get("uri", "").strip()[:MAX_INPUT]
    next_path = safe_next(request.query.get("next"))
    if not uri:
        return await _page(request, member, "", next_path=next_path)
    try:
        # Network lookups happen here, before (and outside) any database transaction.
        target = await resolve_target(request.app[SERVICES], uri)
    except CannotFlattr as error:
        return await _page(request, member, uri, error=sentence(error), next_path=next_path)
    return await _page(request, member, uri, target=target, next_path=next_path)


@routes.post("/flattr")
async def flattr_confirm(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    form = await request.post()
    raw = form.get("uri")
    uri = raw.strip()[:MAX_INPUT] if isinstance(raw, str) else ""
    next_path = safe_next(form.get("next"))
    member = await require_member_for(request, flattr_url(uri) if uri else "/flattr")
    if not uri:
        return await _page(request, member, "", error="Give a fediverse URL or handle.")
    try:
        target = await resolve_target(services, uri)
    except CannotFlattr as error:
        return await _page(request, member, uri, error=sentence(error), next_path=next_path)
    now = services.clock.now()
    try:
        async with services.database.transaction() as session:
            donor = await session.get(Member, member.id)
            assert donor is not None
            policy = await current_policy(session, services.settings, now)
            row = await flattr(
                session,
                services.urls,
                donor,
                target,
                now,
                receiving_needs_budget=policy.receiving_needs_budget,
            )
            status = row.status
    except CannotFlattr as error:
        return await _page(
            request, member, uri, target=target, error=sentence(error), next_path=next_path
        )
    except IntegrityError:
        # Two clicks at once: the unique (donor, target, month) index let only one through.
        return await _page(
            request,
            member,
            uri,
            target=target,
            error="You already flattred this in this month.",
            next_path=next_path,
        )
    msg = "flattred" if status == PAYABLE else "flattred-pending"
    raise web.HTTPSeeOther(str(URL(next_path).update_query(msg=msg)))


async def require_member_for(request: web.Request, after_login: str) -> Member:
    """Like require_member, for a POST: after logging in, the visitor lands on `after_login`."""
    try:
        return await require_member(request)
    except web.HTTPSeeOther:
        raise web.HTTPSeeOther(login_url(request, after_login)) from None


@routes.get("/@{name}/flattr")
async def payment_link(request: web.Request) -> web.StreamResponse:
    """The payment link of an actor (its `url` of rel payment): the flattr page for it."""
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        actor = await find_local_actor(session, username=request.match_info["name"])
        if actor is None or actor.kind == "instance" or not await is_visible(session, actor):
            raise web.HTTPNotFound()
    raise web.HTTPFound(flattr_url(services.urls.actor(actor.kind, actor.username)))
