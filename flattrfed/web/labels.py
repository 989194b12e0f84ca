"""Human names for what a member flattred: a local thing's title and page, or a remote author."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_by_uri
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.db.models import RemoteActor, Thing


def web_link(uri: str | None) -> str | None:
    """`uri` if it is safe to link to (http or https), else None (never javascript: etc.)."""
    if uri and uri.lower().startswith(("https://", "http://")):
        return uri
    return None


@dataclass(frozen=True)
class Label:
    title: str
    href: str | None  # a page to open: the thing's page here, or the remote address (http/s)
    where: str  # "here" or the remote host


async def label_targets(
    session: AsyncSession, urls: LocalUrls, pairs: Iterable[tuple[str, str]]
) -> dict[str, Label]:
    """Labels by target URI, for (target_uri, payee_uri) pairs (remote names as last fetched)."""
    labels: dict[str, Label] = {}
    remote: dict[str, str] = {}
    for target_uri, payee_uri in pairs:
        if target_uri in labels or target_uri in remote:
            continue
        if urls.owns(target_uri):
            actor = await actor_by_uri(session, urls, target_uri)
            thing = await session.get(Thing, actor.thing_id) if actor and actor.thing_id else None
            if actor is not None and thing is not None:
                labels[target_uri] = Label(
                    thing.title, urls.profile(actor.kind, actor.username), "here"
                )
                continue
            labels[target_uri] = Label(target_uri, web_link(target_uri), "here")
        else:
            remote[target_uri] = payee_uri
    if remote:
        found = {
            row.uri: row
            for row in await session.scalars(
                select(RemoteActor).where(RemoteActor.uri.in_(set(remote.values())))
            )
        }
        for target_uri, payee_uri in remote.items():
            author = found.get(payee_uri)
            if author is None:
                labels[target_uri] = Label(target_uri, web_link(target_uri), "")
                continue
            name = author.name or author.preferred_username
            if target_uri != payee_uri:
                name = f"a post by {name}"
            page = target_uri if target_uri != payee_uri else author.profile_url or author.uri
            labels[target_uri] = Label(name, web_link(page), author.host)
    return labels
