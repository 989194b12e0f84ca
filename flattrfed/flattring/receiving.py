"""Receiving Likes of our things and their posts: recorded once each; a Flattr instrument kept."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_by_uri, is_visible
from flattrfed.activitypub.dispatch import Dispatcher, Ignored, Inbound
from flattrfed.activitypub.origins import host_of, same_origin
from flattrfed.activitypub.reading import activity_type, id_of
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.db.models import IdentityClaim, LocalActor, Post, ReceivedLike
from flattrfed.db.session import Database
from flattrfed.db.statements import insert_ignoring_duplicates, table_of
from flattrfed.periods import Period

received_likes = table_of(ReceivedLike)
# What a Like's object resolved to within one batch: (target id, post id), or why it is ignored.
Resolved = tuple[int, int | None] | str


@functools.lru_cache(maxsize=4096)
def _sender_host(actor_uri: str) -> str:
    # Parsing an origin walks the URI character by character, and a batch holds many Likes of
    # few senders: parse each sender once.
    return host_of(actor_uri, allow_http=True)


def flattr_instrument(like: dict[str, Any]) -> tuple[str | None, str | None]:
    """(period, clearing actor) when the Like carries our Flattr instrument, else (None, None)."""
    instrument = like.get("instrument")
    if not isinstance(instrument, dict) or instrument.get("type") != "Flattr":
        return None, None
    period_text = instrument.get("flattrPeriod")
    clearing = instrument.get("flattrClearing")
    try:
        period = str(Period.parse(period_text)) if isinstance(period_text, str) else None
    except ValueError:
        period = None
    if period is None:
        return None, None
    return period, clearing if isinstance(clearing, str) and len(clearing) <= 2048 else None


class LikeReceiver:
    """Turns verified Like and Undo activities into received_likes rows."""

    def __init__(self, database: Database, clock: Clock, urls: LocalUrls) -> None:
        self.database = database
        self.clock = clock
        self.urls = urls

    def register(self, dispatcher: Dispatcher) -> None:
        dispatcher.register("Like", self.on_like, bulk=self.on_likes)
        dispatcher.register("Undo:Like", self.on_undo_like, bulk=self.on_undo_likes)

    async def _target(
        self, session: AsyncSession, object_uri: str, *, is_flattr: bool
    ) -> tuple[LocalActor, Post | None]:
        """The thing a Like is for: the thing itself, or the thing that published the post.

        A member can be the target only of a flattr: one released to them after they claimed
        a fediverse identity that people had flattred (flattring/claims.py).
        """
        actor = await actor_by_uri(session, self.urls, object_uri)
        if actor is not None:
            if actor.kind == "thing":
                return actor, None
            if actor.kind == "person" and is_flattr and await self._has_claim(session, actor):
                return actor, None
            raise Ignored("Like of an actor that is not a thing")
        if not self.urls.owns(object_uri):
            raise Ignored("Like of an object on another server")
        post = await session.scalar(
            select(Post).where(Post.uri == object_uri, Post.deleted_at.is_(None))
        )
        if post is None:
            raise Ignored("Like of an object we do not have")
        owner = await session.get(LocalActor, post.actor_id)
        assert owner is not None
        if not await is_visible(session, owner):
            raise Ignored("Like of a post of a hidden or deleted thing")
        return owner, post

    async def _has_claim(self, session: AsyncSession, actor: LocalActor) -> bool:
        found = await session.scalar(
            select(IdentityClaim.id).where(
                IdentityClaim.member_id == actor.member_id, IdentityClaim.state == "verified"
            )
        )
        return found is not None

    async def _values(
        self,
        session: AsyncSession,
        like: dict[str, Any],
        actor_uri: str,
        undone_at: datetime | None,
        resolved: dict[tuple[str, bool], Resolved],
    ) -> dict[str, Any]:
        """The received_likes row of a Like (Ignored if it is not for us); `resolved` caches
        target lookups, which many Likes of one thing share."""
        like_uri = like.get("id")
        object_uri = id_of(like.get("object"))
        if not isinstance(like_uri, str) or object_uri is None:
            raise Ignored("Like without id or object")
        period, clearing = flattr_instrument(like)
        key = (object_uri, period is not None)
        found = resolved.get(key)
        if found is None:
            try:
                target, post = await self._target(session, object_uri, is_flattr=key[1])
                found = (target.id, post.id if post is not None else None)
            except Ignored as why:
                found = str(why)
            resolved[key] = found
        if isinstance(found, str):
            raise Ignored(found)
        return {
            "like_uri": like_uri,
            "actor_uri": actor_uri,
            "target_id": found[0],
            "post_id": found[1],
            "object_uri": object_uri,
            "flattr_period": period,
            "clearing_actor": clearing,
            "sender_host": _sender_host(actor_uri),
            "received_at": self.clock.now(),
            "undone_at": undone_at,
        }

    async def _record(
        self,
        session: AsyncSession,
        like: dict[str, Any],
        actor_uri: str,
        undone_at: datetime | None,
        resolved: dict[tuple[str, bool], Resolved] | None = None,
    ) -> bool:
        values = await self._values(session, like, actor_uri, undone_at, resolved or {})
        result = await session.execute(
            insert_ignoring_duplicates(session.get_bind().dialect.name, ReceivedLike, **values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def on_like(self, inbound: Inbound) -> str:
        async with self.database.transaction() as session:
            recorded = await self._record(session, inbound.activity, inbound.actor_uri, None)
        return "like recorded" if recorded else "ignored: like already recorded"

    async def on_likes(self, session: AsyncSession, inbounds: list[Inbound]) -> list[str | Ignored]:
        """Many Likes in the worker's transaction: targets looked up once per object, and the
        new ones inserted in one statement (a Like id already recorded is left alone)."""
        resolved: dict[tuple[str, bool], Resolved] = {}
        rows: list[dict[str, Any]] = []
        results: list[str | Ignored] = []
        for inbound in inbounds:
            try:
                rows.append(
                    await self._values(session, inbound.activity, inbound.actor_uri, None, resolved)
                )
                results.append("")  # filled in below, once the insert says which were new
            except Ignored as why:
                results.append(why)
        recorded: set[str] = set()
        if rows:
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            statement = (
                dialect.insert(received_likes)
                .on_conflict_do_nothing()
                .returning(received_likes.c.like_uri)
            )
            recorded = set((await session.execute(statement, rows)).scalars().all())
        new_rows = iter(rows)
        for index, result in enumerate(results):
            if not isinstance(result, Ignored):
                new = next(new_rows)["like_uri"] in recorded
                results[index] = "like recorded" if new else "ignored: like already recorded"
        return results

    async def on_undo_like(self, inbound: Inbound) -> str:
        like = self._undone_like(inbound)
        return await self._undo(like, inbound.actor_uri)

    async def on_undo_likes(
        self, session: AsyncSession, inbounds: list[Inbound]
    ) -> list[str | Ignored]:
        """Undos of Likes in the worker's transaction, one after the other."""
        results: list[str | Ignored] = []
        for inbound in inbounds:
            try:
                like = self._undone_like(inbound)
                results.append(await self._undo_in(session, like, inbound.actor_uri))
            except Ignored as why:
                results.append(why)
        return results

    def _undone_like(self, inbound: Inbound) -> dict[str, Any]:
        """The Like an Undo embeds, if the Undo's sender may undo it (else Ignored)."""
        like = inbound.object
        assert isinstance(like, dict)
        # Nobody can undo someone else's flattr (research/ap-interop.md §2.5).
        if id_of(like.get("actor")) != inbound.actor_uri:
            raise Ignored("Undo of a Like by another actor")
        if activity_type(like.get("type")) != "Like":
            raise Ignored("Undo of something that is not a Like")
        # The embedded Like is the sender's word only: its id must be one the sender may speak
        # for (FEP-fe34, as the inbox requires of the Undo itself). Otherwise an Undo arriving
        # "before its Like" would record, under the sender's name, a Like id on another server,
        # and that server's real Like with this id would later be dropped as a duplicate.
        like_id = like.get("id")
        if not isinstance(like_id, str) or not same_origin(
            like_id, inbound.actor_uri, allow_http=True
        ):
            raise Ignored("Undo of a Like whose id is not on the actor's origin")
        return like

    async def on_undo_reference(self, inbound: Inbound) -> str:
        reference = inbound.object_id
        assert reference is not None
        return await self._undo({"id": reference}, inbound.actor_uri, embedded=False)

    async def _undo(self, like: dict[str, Any], actor_uri: str, *, embedded: bool = True) -> str:
        async with self.database.transaction() as session:
            return await self._undo_in(session, like, actor_uri, embedded=embedded)

    async def _undo_in(
        self, session: AsyncSession, like: dict[str, Any], actor_uri: str, *, embedded: bool = True
    ) -> str:
        """Undo inside the caller's transaction; writes nothing when it raises Ignored."""
        now = self.clock.now()
        result = await session.execute(
            update(ReceivedLike)
            .where(
                ReceivedLike.like_uri == like["id"],
                ReceivedLike.actor_uri == actor_uri,
                ReceivedLike.undone_at.is_(None),
            )
            .values(undone_at=now)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return "like undone"
        # The Undo overtook its Like: record it as already undone, so the Like that arrives
        # later changes nothing.
        if embedded and await self._record(session, like, actor_uri, now):
            return "like recorded as undone (Undo arrived first)"
        raise Ignored("Undo of a Like we do not have")
