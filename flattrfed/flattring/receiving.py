"""Receiving Likes of our things and their posts: recorded once each; a Flattr instrument kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_by_uri, is_visible
from flattrfed.activitypub.dispatch import Dispatcher, Ignored, Inbound
from flattrfed.activitypub.origins import host_of, same_origin
from flattrfed.activitypub.reading import activity_type, id_of
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.db.models import IdentityClaim, LocalActor, Post, ReceivedLike
from flattrfed.db.session import Database
from flattrfed.db.statements import insert_ignoring_duplicates
from flattrfed.periods import Period


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
        dispatcher.register("Like", self.on_like)
        dispatcher.register("Undo:Like", self.on_undo_like)

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

    async def _record(
        self,
        session: AsyncSession,
        like: dict[str, Any],
        actor_uri: str,
        undone_at: datetime | None,
    ) -> bool:
        like_uri = like.get("id")
        object_uri = id_of(like.get("object"))
        if not isinstance(like_uri, str) or object_uri is None:
            raise Ignored("Like without id or object")
        period, clearing = flattr_instrument(like)
        target, post = await self._target(session, object_uri, is_flattr=period is not None)
        result = await session.execute(
            insert_ignoring_duplicates(
                session.get_bind().dialect.name,
                ReceivedLike,
                like_uri=like_uri,
                actor_uri=actor_uri,
                target_id=target.id,
                post_id=post.id if post is not None else None,
                object_uri=object_uri,
                flattr_period=period,
                clearing_actor=clearing,
                sender_host=host_of(actor_uri, allow_http=True),
                received_at=self.clock.now(),
                undone_at=undone_at,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def on_like(self, inbound: Inbound) -> str:
        async with self.database.transaction() as session:
            recorded = await self._record(session, inbound.activity, inbound.actor_uri, None)
        return "like recorded" if recorded else "ignored: like already recorded"

    async def on_undo_like(self, inbound: Inbound) -> str:
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
        return await self._undo(like, inbound.actor_uri)

    async def on_undo_reference(self, inbound: Inbound) -> str:
        reference = inbound.object_id
        assert reference is not None
        return await self._undo({"id": reference}, inbound.actor_uri, embedded=False)

    async def _undo(self, like: dict[str, Any], actor_uri: str, *, embedded: bool = True) -> str:
        now = self.clock.now()
        async with self.database.transaction() as session:
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
            # The Undo overtook its Like: record it as already undone, so the Like that
            # arrives later changes nothing.
            if embedded and await self._record(session, like, actor_uri, now):
                return "like recorded as undone (Undo arrived first)"
        raise Ignored("Undo of a Like we do not have")
