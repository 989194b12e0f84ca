"""The member's own settings besides the password: profile, and claimed fediverse identities."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from flattrfed.activitypub.actors import actor_view, find_local_actor
from flattrfed.activitypub.delivery import deliver_to_followers
from flattrfed.activitypub.documents import actor_document, update_actor_activity
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.context import SERVICES
from flattrfed.db.models import IdentityClaim, Member
from flattrfed.flattring.accounts import (
    AccountError,
    delete_account,
    deletion_blockers,
    owed,
    request_closing_payout,
)
from flattrfed.flattring.claims import ClaimError, add_claim, verify_claim
from flattrfed.flattring.members import MIN_PASSWORD_LENGTH
from flattrfed.web.render import render, sentence
from flattrfed.web.security import log_out, require_member

routes = web.RouteTableDef()

MAX_DISPLAY_NAME = 100
MAX_BIO = 2000


class ProfileError(ValueError):
    """A profile change that cannot be made; the message says why."""


async def update_profile(
    session: AsyncSession,
    urls: LocalUrls,
    member: Member,
    *,
    display_name: str,
    bio: str,
    now: datetime,
) -> None:
    """Change the member's name and bio; followers get an Update of the member's actor.

    (A web-layer helper: flattring.members has no profile edit yet.)
    """
    display_name = " ".join(display_name.split())
    if len(display_name) > MAX_DISPLAY_NAME:
        raise ProfileError(f"the name has at most {MAX_DISPLAY_NAME} characters")
    bio = bio.replace("\r\n", "\n").strip()
    if len(bio) > MAX_BIO:
        raise ProfileError(f"the bio has at most {MAX_BIO} characters")
    if any(ord(char) < 0x20 and char != "\n" for char in display_name + bio):
        raise ProfileError("the name and bio cannot hold control characters")
    member.display_name = display_name or member.username
    member.bio = bio
    await session.flush()
    await announce_actor(session, urls, member, now)


async def announce_actor(
    session: AsyncSession, urls: LocalUrls, member: Member, now: datetime
) -> None:
    """Followers get an Update of the member's actor (name, bio, alsoKnownAs)."""
    actor = await find_local_actor(session, kind="person", username=member.username)
    assert actor is not None
    view = await actor_view(session, urls, actor)
    update = update_actor_activity(
        actor_document(view),
        activity_uri=f"{view.uri}#updates/{secrets.token_hex(8)}",
        published=now,
    )
    await deliver_to_followers(session, actor=actor, activity=update, now=now)


async def settings_page(
    request: web.Request, member: Member, *, status: int = 200, **extra: Any
) -> web.Response:
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        claims = (
            await session.scalars(
                select(IdentityClaim)
                .where(IdentityClaim.member_id == member.id)
                .order_by(IdentityClaim.id)
            )
        ).all()
    return await render(
        request,
        "settings.html",
        {
            "member": row,
            "claims": claims,
            "actor_uri": services.urls.actor("person", row.username),
            "min_password": MIN_PASSWORD_LENGTH,
            **extra,
        },
        status=status,
    )


def _text(form: Any, name: str, limit: int) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _done(msg: str, fragment: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(str(URL("/settings").with_query(msg=msg).with_fragment(fragment)))


@routes.get("/settings")
async def settings(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    return await settings_page(request, member)


@routes.post("/settings/profile")
async def profile(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    form = await request.post()
    try:
        async with services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            await update_profile(
                session,
                services.urls,
                row,
                display_name=_text(form, "display_name", MAX_DISPLAY_NAME * 2),
                bio=_text(form, "bio", MAX_BIO * 2),
                now=services.clock.now(),
            )
            if "flattrs_public_shown" in form:
                # An unticked checkbox sends nothing: the hidden marker says the box was there.
                row.flattrs_public = form.get("flattrs_public") == "on"
    except ProfileError as error:
        return await settings_page(request, member, status=400, profile_error=sentence(error))
    raise _done("profile", "profile-heading")


async def _verify(request: web.Request, member: Member, claim_id: int) -> web.StreamResponse:
    services = request.app[SERVICES]
    try:
        await verify_claim(services, claim_id)
    except ClaimError as error:
        return await settings_page(request, member, status=400, claim_error=sentence(error))
    # The member's actor now lists the identity (alsoKnownAs): tell the followers.
    async with services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        await announce_actor(session, services.urls, row, services.clock.now())
    raise _done("claim-verified", "claims-heading")


@routes.post("/settings/claims")
async def claim(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    form = await request.post()
    remote = _text(form, "remote", 2048).strip()
    try:
        async with services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            claim_id = (await add_claim(session, services, row, remote, services.clock.now())).id
    except ClaimError as error:
        return await settings_page(request, member, status=400, claim_error=sentence(error))
    return await _verify(request, member, claim_id)


@routes.post("/settings/claims/{claim_id:[0-9]{1,18}}/verify")
async def verify(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    claim_id = int(request.match_info["claim_id"])
    async with request.app[SERVICES].database.sessions() as session:
        row = await session.get(IdentityClaim, claim_id)
    if row is None or row.member_id != member.id:
        return await settings_page(
            request, member, status=404, claim_error="No such claim of yours."
        )
    return await _verify(request, member, claim_id)


async def _delete_page(
    request: web.Request, member: Member, *, status: int = 200, error: str | None = None
) -> web.Response:
    services = request.app[SERVICES]
    now = services.clock.now()
    async with services.database.sessions() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        money = await owed(session, member.id)
        blockers = await deletion_blockers(
            session, services.urls, row, services.settings.currency, now
        )
    return await render(
        request,
        "account_delete.html",
        {"member": row, "owed": money, "blockers": blockers, "error": error},
        status=status,
    )


@routes.get("/settings/delete")
async def delete_form(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    return await _delete_page(request, member)


@routes.post("/settings/delete/payout")
async def closing_payout(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    try:
        async with services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            await request_closing_payout(
                session, row, services.settings.currency, services.clock.now()
            )
    except AccountError as error:
        return await _delete_page(request, member, status=400, error=sentence(error))
    raise web.HTTPSeeOther("/settings/delete?msg=closing-payout")


@routes.post("/settings/delete")
async def delete(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    form = await request.post()
    if form.get("confirm") != "yes":
        return await _delete_page(
            request,
            member,
            status=400,
            error="Tick the box to confirm that you want to delete your account.",
        )
    try:
        async with services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            await delete_account(
                session,
                services.urls,
                row,
                password=_text(form, "password", 1024),
                currency=services.settings.currency,
                now=services.clock.now(),
            )
    except AccountError as error:
        return await _delete_page(request, member, status=400, error=sentence(error))
    log_out(request)
    raise web.HTTPSeeOther("/?msg=account-deleted")
