"""Resolves what a member wants to flattr (a URL or a handle) to a target and who gets the money."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from flattrfed.activitypub.actors import actor_by_uri, find_local_actor
from flattrfed.activitypub.client import FetchError
from flattrfed.activitypub.documents import ACTOR_TYPES
from flattrfed.activitypub.hosts import is_blocked
from flattrfed.activitypub.interactions import LookupFailed, parse_handle, webfinger
from flattrfed.activitypub.keys import KeyUnavailable
from flattrfed.activitypub.nodeinfo import flattrfed_metadata
from flattrfed.activitypub.origins import BadUri, domain_of, host_of, origin_of, same_origin
from flattrfed.activitypub.reading import activity_type, id_of
from flattrfed.context import Services
from flattrfed.db.models import LocalActor, Post, Thing


class CannotFlattr(ValueError):
    """The target cannot be flattred; the message says why, for the member."""


@dataclass(frozen=True)
class Target:
    """What a flattr is for: the liked object, the payee, and whether money can reach them now."""

    target_uri: str
    payee_uri: str
    payee_host: str
    title: str
    payee_name: str
    local_thing_id: int | None = None
    local_post_id: int | None = None
    payee_inbox: str | None = None
    flattrfed: bool = False  # the payee's server advertises flattrfed: money can move now
    same_currency: bool = True

    @property
    def is_local(self) -> bool:
        return self.local_thing_id is not None


async def _local_target(services: Services, actor: LocalActor, post: Post | None) -> Target:
    urls = services.urls
    async with services.database.sessions() as session:
        if actor.kind != "thing" or actor.thing_id is None:
            raise CannotFlattr("only things can be flattred here, not members")
        thing = await session.get(Thing, actor.thing_id)
    if thing is None or thing.hidden or thing.deleted_at is not None:
        raise CannotFlattr("this thing is not available")
    thing_uri = urls.actor("thing", actor.username)
    return Target(
        # A post's flattr is its thing's: one flattr per donor, thing and month (DESIGN §3).
        target_uri=thing_uri,
        payee_uri=thing_uri,
        payee_host=services.settings.host,
        title=thing.title,
        payee_name=thing.title,
        local_thing_id=thing.id,
        local_post_id=post.id if post is not None else None,
        flattrfed=True,
    )


async def resolve_target(services: Services, text: str) -> Target:
    """Look up `text` (an ActivityPub URL or @name@host). Network fetches happen here, before
    any database transaction of the flattr itself."""
    text = text.strip()
    handle = parse_handle(text)
    if handle is not None:
        if handle.host == services.settings.host:
            async with services.database.sessions() as session:
                actor = await find_local_actor(session, username=handle.name)
            if actor is None:
                raise CannotFlattr(f"{handle} does not exist here")
            return await _local_target(services, actor, None)
        try:
            text = await webfinger(services.client, handle, allow_http=services.settings.allow_http)
        except LookupFailed as error:
            raise CannotFlattr(str(error)) from None
    try:
        origin_of(text, allow_http=services.settings.allow_http)
    except BadUri:
        raise CannotFlattr("give a fediverse URL (https://…) or a handle (@name@server)") from None

    if services.urls.owns(text):
        async with services.database.sessions() as session:
            actor = await actor_by_uri(session, services.urls, text)
            post = None
            if actor is None:
                post = await session.scalar(
                    select(Post).where(Post.uri == text, Post.deleted_at.is_(None))
                )
                if post is not None:
                    actor = await session.get(LocalActor, post.actor_id)
        if actor is None:
            raise CannotFlattr("nothing on this instance has that address")
        return await _local_target(services, actor, post)
    return await _remote_target(services, text)


async def _remote_target(services: Services, url: str) -> Target:
    async with services.database.sessions() as session:
        if await is_blocked(session, domain_of(url, allow_http=services.settings.allow_http)):
            raise CannotFlattr("this instance does not federate with that server")
    signer = await services.keys.instance_signer()
    try:
        document = await services.client.fetch_activitypub(
            url, signer=signer, refetch_unknown_id=True
        )
    except FetchError as error:
        raise CannotFlattr(f"could not fetch {url} ({error.reason})") from None
    object_uri = str(document["id"])
    kind = activity_type(document.get("type"))
    if kind in ACTOR_TYPES:
        author_uri, title = object_uri, ""
    else:
        author_uri = id_of(document.get("attributedTo")) or ""
        if not author_uri:
            raise CannotFlattr("that object names no author to flattr")
        if not same_origin(author_uri, object_uri, allow_http=services.settings.allow_http):
            raise CannotFlattr("that object's author is on another server than the object")
        name = document.get("name") or document.get("summary") or ""
        title = name[:200] if isinstance(name, str) else ""
    try:
        author = await services.keys.actor(author_uri)
    except KeyUnavailable as error:
        raise CannotFlattr(f"could not fetch the author ({error.reason})") from None
    host = host_of(author.uri, allow_http=services.settings.allow_http)
    advertised = flattrfed_metadata(await services.nodeinfo.get(host, services.clock.now()))
    if advertised is not None and author.type == "Person":
        # On flattrfed, people are flattred through their things, as here (DESIGN §1).
        raise CannotFlattr("that is a member of a flattrfed instance: flattr one of their things")
    # On a flattrfed instance the author is the thing, and a post's flattr is the thing's; a
    # post of a plain fediverse author is a thing of its own (as a blog post was on Flattr).
    target_uri = author.uri if advertised is not None else object_uri
    return Target(
        target_uri=target_uri,
        payee_uri=author.uri,
        payee_host=host,
        title=title or author.name or author.preferred_username,
        payee_name=author.name or author.preferred_username,
        payee_inbox=author.inbox,
        flattrfed=advertised is not None,
        same_currency=advertised is None
        or advertised.get("currency") == services.settings.currency,
    )
