"""Reads remote actor documents strictly and keeps what we verified about them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.documents import ACTOR_TYPES, has_activitystreams_context
from flattrfed.activitypub.origins import BadUri, host_of, origin_of
from flattrfed.db.models import RemoteActor

MAX_KEYS_PER_ACTOR = 8


class InvalidActor(ValueError):
    """A remote document that is not an actor we can trust for delivery or keys."""


@dataclass(frozen=True)
class ActorInfo:
    """The parts of a remote actor document we use, all checked to be on the actor's origin."""

    uri: str
    type: str
    preferred_username: str
    name: str
    profile_url: str | None
    inbox: str
    shared_inbox: str | None
    followers_url: str | None
    keys: dict[str, str]  # key id -> PEM, only keys whose owner is this actor
    also_known_as: tuple[str, ...]


def _id_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _same_origin_uri(value: Any, origin: str, what: str, *, allow_http: bool) -> str | None:
    if value is None:
        return None
    uri = _id_of(value)
    if uri is None:
        raise InvalidActor(f"{what} is not a URI")
    try:
        if origin_of(uri, allow_http=allow_http) != origin:
            raise InvalidActor(f"{what} {uri} is not on the actor's origin")
    except BadUri as error:
        raise InvalidActor(f"{what}: {error}") from None
    return uri


def parse_actor(document: dict[str, Any], *, allow_http: bool) -> ActorInfo:
    """Check an actor document as Mastodon would, plus origin checks on every URL we use."""
    if not has_activitystreams_context(document):
        raise InvalidActor("no ActivityStreams @context")
    uri = document.get("id")
    if not isinstance(uri, str):
        raise InvalidActor("no id")
    try:
        origin = origin_of(uri, allow_http=allow_http)
    except BadUri as error:
        raise InvalidActor(f"id: {error}") from None
    kind = document.get("type")
    if not isinstance(kind, str) or kind not in ACTOR_TYPES:
        raise InvalidActor(f"type {kind!r} is not an actor type")
    username = document.get("preferredUsername")
    if not isinstance(username, str) or not 0 < len(username) <= 255:
        raise InvalidActor("preferredUsername missing")
    inbox = _same_origin_uri(document.get("inbox"), origin, "inbox", allow_http=allow_http)
    if inbox is None:
        raise InvalidActor("inbox missing")
    endpoints = document.get("endpoints")
    shared = None
    if isinstance(endpoints, dict):
        shared = _same_origin_uri(
            endpoints.get("sharedInbox"), origin, "sharedInbox", allow_http=allow_http
        )
    followers = _same_origin_uri(
        document.get("followers"), origin, "followers", allow_http=allow_http
    )
    _same_origin_uri(document.get("outbox"), origin, "outbox", allow_http=allow_http)

    raw_keys = document.get("publicKey")
    entries = raw_keys if isinstance(raw_keys, list) else [raw_keys] if raw_keys else []
    keys: dict[str, str] = {}
    for entry in entries[:MAX_KEYS_PER_ACTOR]:
        if not isinstance(entry, dict):
            continue
        key_id, owner, pem = entry.get("id"), entry.get("owner"), entry.get("publicKeyPem")
        # A key listed by the actor must also name the actor as its owner (both directions).
        if isinstance(key_id, str) and owner == uri and isinstance(pem, str):
            keys[key_id] = pem
    name = document.get("name")
    profile = document.get("url")
    aliases = document.get("alsoKnownAs")
    return ActorInfo(
        uri=uri,
        type=kind,
        preferred_username=username,
        name=name[:255] if isinstance(name, str) else "",
        # Only web addresses: a javascript: URL shown on a page would run in our origin.
        profile_url=profile
        if isinstance(profile, str)
        and len(profile) <= 2048
        and profile.lower().startswith(("https://", "http://"))
        else None,
        inbox=inbox,
        shared_inbox=shared,
        followers_url=followers,
        keys=keys,
        also_known_as=tuple(
            alias
            for alias in (aliases if isinstance(aliases, list) else [])[:16]
            if isinstance(alias, str) and len(alias) <= 2048
        ),
    )


async def store_actor(
    session: AsyncSession,
    info: ActorInfo,
    key_id: str,
    document: dict[str, Any],
    now: datetime,
    *,
    allow_http: bool,
) -> RemoteActor:
    """Insert or refresh what we know about a verified remote actor."""
    actor = await session.scalar(select(RemoteActor).where(RemoteActor.uri == info.uri))
    if actor is None:
        actor = RemoteActor(uri=info.uri)
        session.add(actor)
    actor.host = host_of(info.uri, allow_http=allow_http)
    actor.type = info.type
    actor.preferred_username = info.preferred_username
    actor.name = info.name
    actor.profile_url = info.profile_url
    actor.inbox = info.inbox
    actor.shared_inbox = info.shared_inbox
    actor.followers_url = info.followers_url
    actor.key_id = key_id
    actor.public_key_pem = info.keys[key_id]
    actor.also_known_as = list(info.also_known_as)
    actor.document = {k: document[k] for k in ("id", "type", "preferredUsername") if k in document}
    actor.fetched_at = now
    actor.deleted_at = None
    await session.flush()
    return actor
