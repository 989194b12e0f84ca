"""Creator pages: the member's things (list, create, edit, hide, delete) and their posts."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from yarl import URL

from flattrfed.activitypub.actors import find_local_actor
from flattrfed.activitypub.outbox import MAX_POST_CHARS, publish_post
from flattrfed.context import SERVICES
from flattrfed.db.models import Member, Thing
from flattrfed.flattring.things import (
    CATEGORIES,
    MAX_TAGS,
    ThingError,
    create_thing,
    delete_thing,
    edit_thing,
    owned_thing,
    recent_posts,
    set_hidden,
    things_of,
)
from flattrfed.periods import Period
from flattrfed.web.render import message_page, render, sentence
from flattrfed.web.security import require_member

routes = web.RouteTableDef()

THING_ID = r"{thing_id:[0-9]{1,18}}"
# Caps on what a form field may hold before validation (the domain checks the real limits).
FIELD_LIMITS = {
    "handle": 64,
    "title": 400,
    "description": 10_000,
    "external_url": 2048,
    "image_url": 2048,
    "category": 32,
    "tags": 1000,
    "language": 32,
}


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value[: FIELD_LIMITS[name]] if isinstance(value, str) else ""


def _values_from_form(form: Any) -> dict[str, str]:
    return {name: _field(form, name) for name in FIELD_LIMITS}


def _values_of(thing: Thing, handle: str) -> dict[str, str]:
    return {
        "handle": handle,
        "title": thing.title,
        "description": thing.description,
        "external_url": thing.external_url or "",
        "image_url": thing.image_url or "",
        "category": thing.category,
        "tags": ", ".join(thing.tags or []),
        "language": thing.language or "",
    }


def _editable(values: dict[str, str]) -> dict[str, Any]:
    """The domain's keyword arguments from the form's text (tags are comma-separated)."""
    return {
        "title": values["title"],
        "description": values["description"].replace("\r\n", "\n"),
        "external_url": values["external_url"],
        "image_url": values["image_url"],
        "category": values["category"],
        "tags": [tag for tag in values["tags"].split(",") if tag.strip()],
        "language": values["language"],
    }


def _thing_id(request: web.Request) -> int:
    return int(request.match_info["thing_id"])


async def _not_yours(request: web.Request) -> web.Response:
    # The same answer whether the thing is someone else's or does not exist: no probing.
    return await message_page(
        request, "No such thing", "No such thing of yours.", status=404, back="/things"
    )


async def _form_page(
    request: web.Request,
    *,
    values: dict[str, str],
    thing_id: int | None = None,
    status: int = 200,
    error: str | None = None,
    post_error: str | None = None,
    post_text: str = "",
) -> web.Response:
    services = request.app[SERVICES]
    posts: list[Any] = []
    hidden = False
    if thing_id is not None:
        member = await require_member(request)
        async with services.database.sessions() as session:
            owner = await session.get(Member, member.id)
            assert owner is not None
            thing, actor = await owned_thing(session, owner, thing_id)
            posts = await recent_posts(session, actor.id)
            hidden = thing.hidden
    return await render(
        request,
        "thing_form.html",
        {
            "values": values,
            "thing_id": thing_id,
            "hidden": hidden,
            "categories": CATEGORIES,
            "max_tags": MAX_TAGS,
            "error": error,
            "posts": posts,
            "post_error": post_error,
            "post_text": post_text,
            "max_post": MAX_POST_CHARS,
            "actor_uri": services.urls.actor("thing", values["handle"]) if thing_id else None,
        },
        status=status,
    )


@routes.get("/things")
async def things_list(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    period = str(Period.of(services.clock.now()))
    async with services.database.sessions() as session:
        owner = await session.get(Member, member.id)
        assert owner is not None
        things = await things_of(session, owner, period)
        actor = await find_local_actor(session, kind="person", username=owner.username)
        assert actor is not None
        posts = await recent_posts(session, actor.id, limit=5)
    return await render(
        request,
        "things_list.html",
        {
            "things": things,
            "period": period,
            "posts": posts,
            "max_post": MAX_POST_CHARS,
            "urls": services.urls,
        },
    )


@routes.get("/things/new")
async def new_form(request: web.Request) -> web.StreamResponse:
    await require_member(request)
    empty = dict.fromkeys(FIELD_LIMITS, "")
    empty["category"] = "other"
    return await _form_page(request, values=empty)


@routes.post("/things/new")
async def create(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    values = _values_from_form(await request.post())
    handle = values["handle"].strip().lower()
    try:
        async with services.database.transaction() as session:
            owner = await session.get(Member, member.id)
            assert owner is not None
            fields = _editable(values)
            thing = await create_thing(
                session,
                owner=owner,
                handle=handle,
                title=fields.pop("title"),
                description=fields.pop("description"),
                external_url=fields.pop("external_url"),
                now=services.clock.now(),
                **fields,
            )
            thing_id = thing.id
    except ThingError as error:
        return await _form_page(request, values=values, status=400, error=sentence(error))
    raise web.HTTPSeeOther(f"/things/{thing_id}/edit?msg=thing-created")


@routes.get(f"/things/{THING_ID}/edit")
async def edit_form(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        owner = await session.get(Member, member.id)
        assert owner is not None
        try:
            thing, actor = await owned_thing(session, owner, _thing_id(request))
        except ThingError:
            return await _not_yours(request)
        values = _values_of(thing, actor.username)
    return await _form_page(request, values=values, thing_id=thing.id)


@routes.post(f"/things/{THING_ID}/edit")
async def edit(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    thing_id = _thing_id(request)
    values = _values_from_form(await request.post())
    async with services.database.sessions() as session:
        owner = await session.get(Member, member.id)
        assert owner is not None
        try:
            _thing, actor = await owned_thing(session, owner, thing_id)
        except ThingError:
            return await _not_yours(request)
    values["handle"] = actor.username  # a handle never changes: it is the actor's URI
    try:
        async with services.database.transaction() as session:
            owner = await session.get(Member, member.id)
            assert owner is not None
            # edit_thing delivers an Update of the thing's actor to its followers.
            await edit_thing(
                session,
                services.urls,
                owner,
                thing_id,
                services.clock.now(),
                **_editable(values),
            )
    except ThingError as error:
        return await _form_page(
            request, values=values, thing_id=thing_id, status=400, error=sentence(error)
        )
    raise web.HTTPSeeOther(f"/things/{thing_id}/edit?msg=thing-saved")


async def _set_hidden(request: web.Request, hidden: bool) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    try:
        async with services.database.transaction() as session:
            owner = await session.get(Member, member.id)
            assert owner is not None
            await set_hidden(session, owner, _thing_id(request), hidden)
    except ThingError:
        return await _not_yours(request)
    raise web.HTTPSeeOther(
        str(URL("/things").with_query(msg="thing-hidden" if hidden else "thing-shown"))
    )


@routes.post(f"/things/{THING_ID}/hide")
async def hide(request: web.Request) -> web.StreamResponse:
    return await _set_hidden(request, True)


@routes.post(f"/things/{THING_ID}/unhide")
async def unhide(request: web.Request) -> web.StreamResponse:
    return await _set_hidden(request, False)


async def _delete_page(
    request: web.Request, thing_id: int, *, status: int = 200, error: str | None = None
) -> web.Response:
    member = await require_member(request)
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        owner = await session.get(Member, member.id)
        assert owner is not None
        try:
            thing, actor = await owned_thing(session, owner, thing_id)
        except ThingError:
            return await _not_yours(request)
        summary = next(
            (
                row
                for row in await things_of(session, owner, str(Period.of(services.clock.now())))
                if row.thing.id == thing_id
            ),
            None,
        )
    return await render(
        request,
        "thing_delete.html",
        {
            "thing": thing,
            "handle": actor.username,
            "summary": summary,
            "error": error,
            "actor_uri": services.urls.actor("thing", actor.username),
        },
        status=status,
    )


@routes.get(f"/things/{THING_ID}/delete")
async def delete_form(request: web.Request) -> web.StreamResponse:
    return await _delete_page(request, _thing_id(request))


@routes.post(f"/things/{THING_ID}/delete")
async def delete(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    thing_id = _thing_id(request)
    form = await request.post()
    if form.get("confirm") != "yes":
        async with services.database.sessions() as session:
            owner = await session.get(Member, member.id)
            assert owner is not None
            try:
                await owned_thing(session, owner, thing_id)
            except ThingError:
                return await _not_yours(request)
        return await _delete_page(
            request,
            thing_id,
            status=400,
            error="Tick the box to confirm that you want to delete this thing.",
        )
    try:
        async with services.database.transaction() as session:
            owner = await session.get(Member, member.id)
            assert owner is not None
            # Followers get a Delete of the thing's actor; flattrs already made are still paid.
            await delete_thing(session, services.urls, owner, thing_id, services.clock.now())
    except ThingError:
        return await _not_yours(request)
    raise web.HTTPSeeOther("/things?msg=thing-deleted")


def _post_text(form: Any) -> str:
    value = form.get("text")
    # One character over the cap is kept, so the domain's own length check reports it.
    return value.replace("\r\n", "\n")[: MAX_POST_CHARS + 1] if isinstance(value, str) else ""


@routes.post(f"/things/{THING_ID}/posts")
async def post_as_thing(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    thing_id = _thing_id(request)
    text = _post_text(await request.post())
    try:
        async with services.database.transaction() as session:
            owner = await session.get(Member, member.id)
            assert owner is not None
            thing, actor = await owned_thing(session, owner, thing_id)
            if thing.hidden:
                raise ValueError("a hidden thing cannot post: show it first")
            # The Create(Note) is queued to every follower in this same transaction.
            await publish_post(session, services.urls, actor, text, services.clock.now())
    except ThingError:
        return await _not_yours(request)
    except ValueError as error:
        async with services.database.sessions() as session:
            owner = await session.get(Member, member.id)
            assert owner is not None
            thing, actor = await owned_thing(session, owner, thing_id)
            values = _values_of(thing, actor.username)
        return await _form_page(
            request,
            values=values,
            thing_id=thing_id,
            status=400,
            post_error=sentence(error),
            post_text=text,
        )
    raise web.HTTPSeeOther(f"/things/{thing_id}/edit?msg=posted#posts-heading")


@routes.post("/posts")
async def post_as_member(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    text = _post_text(await request.post())
    try:
        async with services.database.transaction() as session:
            actor = await find_local_actor(session, kind="person", username=member.username)
            assert actor is not None
            await publish_post(session, services.urls, actor, text, services.clock.now())
    except ValueError as error:
        return await message_page(
            request, "Not posted", sentence(error), status=400, back="/things#post-heading"
        )
    raise web.HTTPSeeOther("/things?msg=posted#post-heading")
