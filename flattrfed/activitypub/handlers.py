"""Protocol handlers for inbound activities: follows, actor and object updates and deletions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_by_uri
from flattrfed.activitypub.client import FetchError
from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.activitypub.dispatch import Dispatcher, Ignored, Inbound
from flattrfed.activitypub.documents import accept_activity
from flattrfed.activitypub.keys import KeyResolver, KeyUnavailable
from flattrfed.activitypub.origins import same_origin
from flattrfed.activitypub.reading import activity_type, id_of
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.db.models import Follow, OutboundFollow, RemoteActor, RemoteObject
from flattrfed.db.session import Database


class ProtocolHandlers:
    """What every ActivityPub server does, independent of flattring."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        urls: LocalUrls,
        keys: KeyResolver,
        *,
        allow_http: bool,
    ) -> None:
        self.database = database
        self.clock = clock
        self.urls = urls
        self.keys = keys
        self.allow_http = allow_http
        # Undo of a bare URI may name a Like; flattring supplies that fallback.
        self.undo_reference_fallback: Callable[[Inbound], Awaitable[str]] | None = None

    def register(self, dispatcher: Dispatcher) -> None:
        dispatcher.register("Follow", self.on_follow)
        dispatcher.register("Undo:Follow", self.on_undo_follow)
        dispatcher.register("Undo:*", self.on_undo_reference)
        dispatcher.register("Update", self.on_update)
        dispatcher.register("Delete", self.on_delete)
        dispatcher.register("Create", self.on_create)
        dispatcher.register("Accept", self.on_accept)
        dispatcher.register("Reject", self.on_reject)

    async def on_follow(self, inbound: Inbound) -> str:
        target_uri = inbound.object_id
        if target_uri is None:
            raise Ignored("Follow without an object")
        async with self.database.sessions() as session:
            target = await actor_by_uri(session, self.urls, target_uri)
        if target is None:
            raise Ignored("Follow of an actor we do not host")
        try:
            follower = await self.keys.actor(inbound.actor_uri)
        except KeyUnavailable as error:
            raise Ignored(f"follower unavailable: {error.reason}") from None
        now = self.clock.now()
        async with self.database.transaction() as session:
            existing = await session.scalar(
                select(Follow).where(
                    Follow.follower_id == follower.id, Follow.target_id == target.id
                )
            )
            if existing is None:
                session.add(
                    Follow(
                        follower_id=follower.id,
                        target_id=target.id,
                        follow_uri=str(inbound.activity["id"]),
                        created_at=now,
                    )
                )
            else:
                existing.follow_uri = str(inbound.activity["id"])
            accept = accept_activity(
                actor_uri=target_uri,
                follow=inbound.activity,
                activity_uri=f"{target_uri}#accepts/follows/{inbound.row_id}",
            )
            await enqueue_delivery(
                session, activity=accept, actor_id=target.id, inboxes=[follower.inbox], now=now
            )
        return "followed; Accept queued"

    async def _unfollow(
        self, actor_uri: str, target_uri: str | None, follow_uri: str | None
    ) -> int:
        async with self.database.transaction() as session:
            follower_id = await session.scalar(
                select(RemoteActor.id).where(RemoteActor.uri == actor_uri)
            )
            if follower_id is None:
                return 0
            query = delete(Follow).where(Follow.follower_id == follower_id)
            if target_uri is not None:
                target = await actor_by_uri(session, self.urls, target_uri)
                if target is None:
                    return 0
                query = query.where(Follow.target_id == target.id)
            if follow_uri is not None:
                query = query.where(Follow.follow_uri == follow_uri)
            result = await session.execute(query)
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def on_undo_follow(self, inbound: Inbound) -> str:
        follow = inbound.object
        assert isinstance(follow, dict)
        # One can only undo one's own follow.
        if id_of(follow.get("actor")) != inbound.actor_uri:
            raise Ignored("Undo of a Follow by another actor")
        removed = await self._unfollow(inbound.actor_uri, id_of(follow.get("object")), None)
        return "unfollowed" if removed else "ignored: no such follow"

    async def on_undo_reference(self, inbound: Inbound) -> str:
        reference = inbound.object_id
        if reference is None or not same_origin(
            reference, inbound.actor_uri, allow_http=self.allow_http
        ):
            raise Ignored("Undo of something not on the actor's origin")
        if await self._unfollow(inbound.actor_uri, None, reference):
            return "unfollowed"
        if self.undo_reference_fallback is not None:
            return await self.undo_reference_fallback(inbound)
        raise Ignored("Undo of something we do not know")

    async def on_update(self, inbound: Inbound) -> str:
        object_uri = inbound.object_id
        if object_uri is None:
            raise Ignored("Update without an object")
        if object_uri == inbound.actor_uri:
            # Never trust the embedded actor: refetch it from its origin (keys may have rotated).
            try:
                await self.keys.actor(inbound.actor_uri, refresh=True)
            except KeyUnavailable as error:
                raise Ignored(f"refetch failed: {error.reason}") from None
            return "actor refreshed"
        if not same_origin(object_uri, inbound.actor_uri, allow_http=self.allow_http):
            raise Ignored("Update of an object on another origin")
        async with self.database.sessions() as session:
            held = await session.scalar(select(RemoteObject).where(RemoteObject.uri == object_uri))
        if held is None or held.attributed_to != inbound.actor_uri:
            raise Ignored("Update of an object we do not hold")
        await self._refetch_and_store(object_uri, inbound.actor_uri)
        return "held object refetched"

    async def _refetch_and_store(self, object_uri: str, author_uri: str) -> None:
        """Fetch an object from its origin (embedded copies are the sender's word only)."""
        try:
            document = await self.keys.client.fetch_activitypub(
                object_uri, signer=await self.keys.instance_signer()
            )
        except FetchError as error:
            raise Ignored(f"object refetch failed: {error.reason}") from None
        if id_of(document.get("attributedTo")) != author_uri:
            raise Ignored("fetched object is attributed to someone else")
        kind = activity_type(document.get("type")) or "Object"
        now = self.clock.now()
        async with self.database.transaction() as session:
            held = await session.scalar(select(RemoteObject).where(RemoteObject.uri == object_uri))
            if held is None:
                held = RemoteObject(uri=object_uri)
                session.add(held)
            held.type = kind[:32]
            held.attributed_to = author_uri
            held.document = document
            held.fetched_at = now
            held.deleted_at = None

    async def on_delete(self, inbound: Inbound) -> str:
        object_uri = inbound.object_id
        if object_uri is None:
            raise Ignored("Delete without an object")
        now = self.clock.now()
        if object_uri == inbound.actor_uri:
            async with self.database.transaction() as session:
                actor = await session.scalar(
                    select(RemoteActor).where(RemoteActor.uri == inbound.actor_uri)
                )
                if actor is None:
                    raise Ignored("Delete of an actor we never knew")
                await session.execute(delete(Follow).where(Follow.follower_id == actor.id))
                actor.deleted_at = now
                key_id = actor.key_id
            self.keys.forget(key_id)
            return "actor deleted"
        if not same_origin(object_uri, inbound.actor_uri, allow_http=self.allow_http):
            raise Ignored("Delete of an object on another origin")
        async with self.database.transaction() as session:
            held = await session.scalar(select(RemoteObject).where(RemoteObject.uri == object_uri))
            if held is None or held.attributed_to != inbound.actor_uri:
                raise Ignored("Delete of an object we do not hold")
            held.deleted_at = now
        return "held object deleted"

    async def on_create(self, inbound: Inbound) -> str:
        created = inbound.object
        object_uri = inbound.object_id
        if object_uri is None:
            raise Ignored("Create without an object")
        if isinstance(created, dict):
            attributed = id_of(created.get("attributedTo"))
            if attributed is not None and attributed != inbound.actor_uri:
                raise Ignored("Create of an object attributed to someone else")
        if not same_origin(object_uri, inbound.actor_uri, allow_http=self.allow_http):
            raise Ignored("Create of an object on another origin")
        async with self.database.sessions() as session:
            followed = await session.scalar(
                select(OutboundFollow.id)
                .join(RemoteActor, RemoteActor.id == OutboundFollow.remote_actor_id)
                .where(RemoteActor.uri == inbound.actor_uri)
                .limit(1)
            )
        if followed is None:
            raise Ignored("Create from an actor none of ours follows")
        await self._refetch_and_store(object_uri, inbound.actor_uri)
        return "post of a followed actor stored"

    async def on_accept(self, inbound: Inbound) -> str:
        follow_uri = inbound.object_id
        now = self.clock.now()
        async with self.database.transaction() as session:
            row = await self._our_follow(session, follow_uri, inbound.actor_uri)
            row.accepted_at = row.accepted_at or now
        return "our follow was accepted"

    async def on_reject(self, inbound: Inbound) -> str:
        follow_uri = inbound.object_id
        async with self.database.transaction() as session:
            row = await self._our_follow(session, follow_uri, inbound.actor_uri)
            await session.delete(row)
        return "our follow was rejected"

    async def _our_follow(
        self, session: AsyncSession, follow_uri: str | None, remote_uri: str
    ) -> OutboundFollow:
        # Only the followed actor itself can accept or reject our follow of it.
        row = await session.scalar(
            select(OutboundFollow)
            .join(RemoteActor, RemoteActor.id == OutboundFollow.remote_actor_id)
            .where(OutboundFollow.follow_uri == follow_uri, RemoteActor.uri == remote_uri)
        )
        if row is None:
            raise Ignored("not a follow of ours to that actor")
        return row
