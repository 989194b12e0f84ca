"""Serves discovery (WebFinger, host-meta, NodeInfo), actor documents, collections and posts."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from sqlalchemy import func, select

from flattrfed import __version__
from flattrfed.activitypub.actors import actor_view, find_local_actor, is_visible, likes_total
from flattrfed.activitypub.documents import (
    ACTIVITY_JSON,
    AS_CONTEXT,
    PROTOCOL_VERSION,
    actor_document,
    context_document,
    note_document,
    ordered_collection,
    wants_activitypub,
)
from flattrfed.activitypub.inbox import Refused, verify_request
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.context import SERVICES
from flattrfed.db.models import Follow, InstancePolicy, LocalActor, Member, Post

routes = web.RouteTableDef()

JRD = "application/jrd+json"
NODEINFO_SCHEMAS = {
    "2.0": "http://nodeinfo.diaspora.software/ns/schema/2.0",
    "2.1": "http://nodeinfo.diaspora.software/ns/schema/2.1",
}
APPLICATION_ACTOR_REL = "https://www.w3.org/ns/activitystreams#Application"


def activity_json(document: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(document, ensure_ascii=False).encode(),
        status=status,
        content_type=ACTIVITY_JSON,
        headers={"Vary": "Accept"},
    )


def urls_of(request: web.Request) -> LocalUrls:
    return LocalUrls(request.app[SERVICES].settings.base_url)


def _cors(response: web.Response) -> web.Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@routes.get("/.well-known/webfinger")
async def webfinger(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    urls = LocalUrls(services.settings.base_url)
    resource = request.query.get("resource", "")
    if not resource:
        return _cors(web.json_response({"error": "resource parameter required"}, status=400))
    actor: LocalActor | None = None
    async with services.database.sessions() as session:
        if resource.startswith("acct:"):
            name, _, host = resource[5:].rpartition("@")
            if host.lower() == services.settings.host and name:
                actor = await find_local_actor(session, username=name.lower())
        elif resource.rstrip("/") == services.settings.base_url:
            actor = await session.scalar(select(LocalActor).where(LocalActor.kind == "instance"))
        else:
            for kind in ("person", "thing"):
                prefix = urls.actor(kind, "")
                if resource.startswith(prefix):
                    actor = await find_local_actor(
                        session, kind=kind, username=unquote(resource[len(prefix) :])
                    )
            if resource == urls.actor("instance", ""):
                actor = await session.scalar(
                    select(LocalActor).where(LocalActor.kind == "instance")
                )
            # The profile URL is one of the aliases we publish, so it must resolve too (as on
            # Mastodon); members and things share one namespace, the instance has no profile.
            profile_prefix = urls.profile("person", "")
            if resource.startswith(profile_prefix):
                found = await find_local_actor(
                    session, username=unquote(resource[len(profile_prefix) :])
                )
                actor = found if found is not None and found.kind != "instance" else None
        if actor is not None and not await is_visible(session, actor):
            actor = None
    if actor is None:
        return _cors(web.json_response({"error": "not found"}, status=404))
    uri = urls.actor(actor.kind, actor.username)
    document = {
        "subject": f"acct:{actor.username}@{services.settings.host}",
        "aliases": [uri, urls.profile(actor.kind, actor.username)],
        "links": [
            {"rel": "self", "type": ACTIVITY_JSON, "href": uri},
            {
                "rel": "http://webfinger.net/rel/profile-page",
                "type": "text/html",
                "href": urls.profile(actor.kind, actor.username),
            },
            {
                "rel": "http://ostatus.org/schema/1.0/subscribe",
                "template": f"{services.settings.base_url}/authorize_interaction?uri={{uri}}",
            },
        ],
    }
    return _cors(web.json_response(document, content_type=JRD))


@routes.get("/.well-known/host-meta")
async def host_meta(request: web.Request) -> web.Response:
    base = request.app[SERVICES].settings.base_url
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n'
        f'  <Link rel="lrdd" template="{base}/.well-known/webfinger?resource={{uri}}"/>\n'
        "</XRD>\n"
    )
    return _cors(web.Response(text=body, content_type="application/xrd+xml"))


@routes.get("/.well-known/nodeinfo")
async def nodeinfo_links(request: web.Request) -> web.Response:
    base = request.app[SERVICES].settings.base_url
    links: list[dict[str, str]] = [
        {"rel": schema, "href": f"{base}/nodeinfo/{version}"}
        for version, schema in NODEINFO_SCHEMAS.items()
    ]
    # FEP-2677: where to find the instance (clearing) actor.
    links.append({"rel": APPLICATION_ACTOR_REL, "href": f"{base}/actor"})
    return _cors(web.json_response({"links": links}))


@routes.get(r"/nodeinfo/{version:2\.[01]}")
async def nodeinfo(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    version = request.match_info["version"]
    async with services.database.sessions() as session:
        users = await session.scalar(select(func.count()).select_from(Member)) or 0
        posts = await session.scalar(
            select(func.count()).select_from(Post).where(Post.deleted_at.is_(None))
        )
        # The admin-set policy, once it exists, wins over the settings that only seed it.
        policy = await session.scalar(select(InstancePolicy).where(InstancePolicy.id == 1))
    registration = policy.registration if policy else services.settings.registration
    fee_bp = policy.fee_bp if policy else services.settings.fee_bp
    software: dict[str, Any] = {"name": "flattrfed", "version": __version__}
    if version == "2.1":
        software["repository"] = "https://flattrfed.org/source"
    document = {
        "version": version,
        "software": software,
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": registration == "open",
        "usage": {"users": {"total": users}, "localPosts": posts or 0},
        "metadata": {
            "nodeName": services.settings.instance_name,
            "flattrfed": {
                "protocolVersion": PROTOCOL_VERSION,
                "clearingActor": f"{services.settings.base_url}/actor",
                "currency": services.settings.currency,
                "feeBasisPoints": fee_bp,
                # The rest of the public policy (issue: "admin-settable and shown publicly").
                "registration": registration,
                "budgetMinMinor": str(
                    policy.budget_min_minor if policy else services.settings.budget_min_minor
                ),
                "budgetMaxMinor": str(
                    policy.budget_max_minor if policy else services.settings.budget_max_minor
                ),
                "receivingNeedsBudget": bool(policy and policy.receiving_needs_budget),
            },
        },
    }
    profile = f'application/json; profile="{NODEINFO_SCHEMAS[version]}#"'
    return _cors(
        web.Response(body=json.dumps(document).encode(), headers={"Content-Type": profile})
    )


@routes.get("/ns")
async def flattr_context(request: web.Request) -> web.Response:
    return _cors(
        web.Response(
            body=json.dumps(context_document(), indent=2).encode(),
            content_type="application/ld+json",
        )
    )


def _page_redirect(location: str) -> web.HTTPFound:
    # The same URL answers JSON to ActivityPub clients: without Vary, a cache could hand this
    # redirect to a peer (or the JSON to a browser).
    return web.HTTPFound(location, headers={"Vary": "Accept"})


async def _actor_or_404(request: web.Request, kind: str) -> LocalActor:
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        if kind == "instance":
            actor = await session.scalar(select(LocalActor).where(LocalActor.kind == "instance"))
        else:
            actor = await find_local_actor(session, kind=kind, username=request.match_info["name"])
        if actor is None or not await is_visible(session, actor):
            raise web.HTTPNotFound()
    return actor


async def _serve_actor(request: web.Request, kind: str) -> web.StreamResponse:
    actor = await _actor_or_404(request, kind)
    urls = urls_of(request)
    # The instance actor answers unsigned GETs always: two servers that both require signed
    # fetches would otherwise deadlock fetching each other's keys.
    if not wants_activitypub(request.headers.get("Accept")):
        raise _page_redirect(urls.profile(actor.kind, actor.username))
    async with request.app[SERVICES].database.sessions() as session:
        view = await actor_view(session, urls, actor)
    return activity_json(actor_document(view))


@routes.get("/actor")
async def instance_actor(request: web.Request) -> web.StreamResponse:
    return await _serve_actor(request, "instance")


@routes.get("/users/{name}")
async def member_actor(request: web.Request) -> web.StreamResponse:
    return await _serve_actor(request, "person")


@routes.get("/things/{name}")
async def thing_actor(request: web.Request) -> web.StreamResponse:
    return await _serve_actor(request, "thing")


def _kind_from_path(request: web.Request) -> str:
    owner = request.match_info.get("collection_owner")
    # /actor/outbox and friends: the instance actor lists them, so they must answer too.
    return {"users": "person", "things": "thing", None: "instance"}[owner]


def _collection_id(request: web.Request, actor: LocalActor, name: str) -> str:
    # From the base URL, never request.url: behind a proxy that is http://127.0.0.1:8080/…,
    # and a peer checks that a fetched document's id is the URL it asked for.
    return f"{urls_of(request).actor(actor.kind, actor.username)}/{name}"


@routes.get("/actor/followers")
@routes.get(r"/{collection_owner:users|things}/{name}/followers")
async def followers(request: web.Request) -> web.Response:
    actor = await _actor_or_404(request, _kind_from_path(request))
    async with request.app[SERVICES].database.sessions() as session:
        total = await session.scalar(
            select(func.count()).select_from(Follow).where(Follow.target_id == actor.id)
        )
    # The count is public, the list is not: follower lists are personal data.
    return activity_json(
        ordered_collection(_collection_id(request, actor, "followers"), total or 0)
    )


@routes.get("/actor/following")
@routes.get(r"/{collection_owner:users|things}/{name}/following")
async def following(request: web.Request) -> web.Response:
    actor = await _actor_or_404(request, _kind_from_path(request))
    return activity_json(ordered_collection(_collection_id(request, actor, "following"), 0, []))


@routes.get("/actor/outbox")
@routes.get(r"/{collection_owner:users|things}/{name}/outbox")
async def outbox(request: web.Request) -> web.Response:
    actor = await _actor_or_404(request, _kind_from_path(request))
    urls = urls_of(request)
    actor_uri = urls.actor(actor.kind, actor.username)
    async with request.app[SERVICES].database.sessions() as session:
        posts = (
            await session.scalars(
                select(Post)
                .where(Post.actor_id == actor.id, Post.deleted_at.is_(None))
                .order_by(Post.id.desc())
                .limit(20)
            )
        ).all()
        total = await session.scalar(
            select(func.count())
            .select_from(Post)
            .where(Post.actor_id == actor.id, Post.deleted_at.is_(None))
        )
    items = [
        {
            "id": f"{post.uri}/activity",
            "type": "Create",
            "actor": actor_uri,
            "object": post.uri,
        }
        for post in posts
    ]
    return activity_json(ordered_collection(f"{actor_uri}/outbox", total or 0, items))


@routes.get("/things/{name}/likes")
async def thing_likes(request: web.Request) -> web.Response:
    """A thing's public count of Likes (flattrs and appreciations), as Mastodon shows for posts."""
    actor = await _actor_or_404(request, "thing")
    async with request.app[SERVICES].database.sessions() as session:
        total = await likes_total(session, actor.id)
    return activity_json(
        {
            "@context": AS_CONTEXT,
            "id": _collection_id(request, actor, "likes"),
            "type": "Collection",
            "totalItems": total,
        }
    )


@routes.get(r"/{collection_owner:users|things}/{name}/posts/{post_id:\d+}")
async def post_object(request: web.Request) -> web.StreamResponse:
    actor = await _actor_or_404(request, _kind_from_path(request))
    urls = urls_of(request)
    actor_uri = urls.actor(actor.kind, actor.username)
    async with request.app[SERVICES].database.sessions() as session:
        post = await session.get(Post, int(request.match_info["post_id"]))
    if post is None or post.actor_id != actor.id:
        raise web.HTTPNotFound()
    if post.deleted_at is not None:
        raise web.HTTPGone()
    note = note_document(
        uri=post.uri,
        actor_uri=actor_uri,
        content=post.content,
        published=post.published_at,
        followers=f"{actor_uri}/followers",
    )
    if not wants_activitypub(request.headers.get("Accept")):
        raise _page_redirect(f"{urls.profile(actor.kind, actor.username)}#post-{post.id}")
    return activity_json(note)


@routes.get(r"/settlement/{period:\d{4}-\d{2}}/{host}/r{revision:\d{1,4}}/lines")
async def statement_lines(request: web.Request) -> web.StreamResponse:
    """A page of a statement we issued (docs/protocol.md), only to its counterparty's signed GET."""
    services = request.app[SERVICES]
    number = request.query.get("page", "")
    if not number.isascii() or not number.isdigit() or len(number) > 6:
        raise web.HTTPBadRequest(text="page must be a number")
    statement_uri = services.settings.base_url + request.path.removesuffix("/lines")
    found = await services.exchange.statement_page(statement_uri, int(number))
    if found is None:
        raise web.HTTPNotFound()
    reader, document = found
    try:
        await verify_request(services, request, b"", reader, "Get")
    except Refused as refused:
        # Lines name donors and what they liked: nobody but the counterparty may read them.
        if refused.status == 401:
            raise web.HTTPUnauthorized(text=refused.reason) from None
        raise web.HTTPForbidden(text=refused.reason) from None
    return activity_json(document)
