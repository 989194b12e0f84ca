"""Finds the public key behind a signature's keyId and the actor that verifiably owns it."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from flattrfed.activitypub import signatures
from flattrfed.activitypub.client import FederationClient, FetchError, Signer
from flattrfed.activitypub.origins import BadUri, host_of, same_origin
from flattrfed.activitypub.remote import InvalidActor, parse_actor, store_actor
from flattrfed.clock import Clock
from flattrfed.db.models import RemoteActor
from flattrfed.db.session import Database

NEGATIVE_TTL = timedelta(minutes=5)
REFRESH_INTERVAL = timedelta(minutes=5)
FETCH_BUDGET_PER_HOST = 30  # unknown-key fetches per host per minute (D4)
# Actors claiming one key id: same-origin ones are the same authority, so a few suffice.
MAX_ROWS_PER_KEY_ID = 8


class KeyUnavailable(Exception):
    """No key could be found or bound to an actor; the request cannot be verified (401)."""

    def __init__(
        self, key_id: str, reason: str, *, gone: bool = False, budget: bool = False
    ) -> None:
        super().__init__(f"{key_id}: {reason}")
        self.key_id = key_id
        self.reason = reason
        self.gone = gone
        self.budget = budget


@dataclass(frozen=True)
class VerifiedKey:
    """A public key together with the actor whose own document lists it."""

    key_id: str
    owner_uri: str
    public_key: signatures.PublicKey


class KeyResolver:
    """Resolves keyIds with a cache keyed by key id that also stores the *verified* owner.

    The owner is never taken from the key document alone: the owner's actor document must
    list the key (GHSA-q9f8-5hc7-898f), and the cache keeps that verified pair, so a warm cache
    cannot be used to sign for another actor (the apkit bug).
    """

    def __init__(
        self,
        database: Database,
        client: FederationClient,
        instance_signer: Callable[[], Awaitable[Signer]],
        clock: Clock,
        *,
        allow_http: bool,
        cache_size: int = 10_000,
    ) -> None:
        self.database = database
        self.client = client
        self.instance_signer = instance_signer
        self.clock = clock
        self.allow_http = allow_http
        self.cache_size = cache_size
        self._cache: OrderedDict[str, VerifiedKey] = OrderedDict()
        self._negative: dict[str, tuple[datetime, str]] = {}
        self._refreshed: dict[str, datetime] = {}
        self._budget: dict[str, tuple[datetime, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _remember(self, key: VerifiedKey) -> VerifiedKey:
        self._cache[key.key_id] = key
        self._cache.move_to_end(key.key_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return key

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    async def resolve(self, key_id: str, *, refresh: bool = False) -> VerifiedKey:
        now = self.clock.now()
        if refresh:
            # A bad signature naming a real key would otherwise refetch it every time: anyone
            # could then spend a peer's fetch budget. Refetch one key at most every few minutes.
            last = self._refreshed.get(key_id)
            if last is not None and now - last < REFRESH_INTERVAL:
                raise KeyUnavailable(key_id, "refetched recently; not again yet")
            self._refreshed[key_id] = now
            if len(self._refreshed) > self.cache_size:
                self._refreshed.pop(next(iter(self._refreshed)))
        else:
            cached = self._cache.get(key_id)
            if cached is not None:
                self._cache.move_to_end(key_id)
                return cached
            negative = self._negative.get(key_id)
            if negative is not None and negative[0] > now:
                raise KeyUnavailable(key_id, f"recently failed: {negative[1]}")
            stored = await self._from_database(key_id)
            if stored is not None:
                return self._remember(stored)
        lock = self._locks.setdefault(key_id, asyncio.Lock())
        async with lock:
            try:
                key = await self._fetch(key_id)
            except KeyUnavailable as error:
                if not error.budget:
                    # A refusal for lack of budget says nothing about the key: don't remember it.
                    self._negative[key_id] = (now + NEGATIVE_TTL, error.reason)
                if len(self._negative) > self.cache_size:
                    self._negative.pop(next(iter(self._negative)))
                raise
            finally:
                self._locks.pop(key_id, None)
        self._negative.pop(key_id, None)
        return self._remember(key)

    async def _from_database(self, key_id: str) -> VerifiedKey | None:
        async with self.database.sessions() as session:
            actors = (
                await session.scalars(
                    select(RemoteActor)
                    .where(RemoteActor.key_id == key_id, RemoteActor.deleted_at.is_(None))
                    .order_by(RemoteActor.id)
                    .limit(MAX_ROWS_PER_KEY_ID)
                )
            ).all()
        for actor in actors:
            # A stored row says only that the actor's own document listed this key. That is
            # proof just when the key id is on the actor's origin (FEP-fe34): any actor can list
            # a key id on somebody else's server, and `actor()` stores what it lists without
            # asking the key's side. Such a row must neither let its actor sign under another
            # origin's key id nor shadow that key's real owner, so a key id on another origin is
            # proven again, from both sides, by _fetch (research/ap-interop.md A5, A13).
            if same_origin(key_id, actor.uri, allow_http=self.allow_http):
                public_key = signatures.load_public_key_pem(actor.public_key_pem)
                return VerifiedKey(key_id, actor.uri, public_key)
        return None

    def _spend_budget(self, key_id: str) -> None:
        try:
            host = host_of(key_id, allow_http=self.allow_http)
        except BadUri as error:
            raise KeyUnavailable(key_id, f"bad key id: {error}") from None
        now = self.clock.now()
        window_start, used = self._budget.get(host, (now, 0))
        if now - window_start >= timedelta(minutes=1):
            window_start, used = now, 0
        if used >= FETCH_BUDGET_PER_HOST:
            raise KeyUnavailable(
                key_id, "too many key fetches for this host; try later", budget=True
            )
        self._budget[host] = (window_start, used + 1)
        if len(self._budget) > self.cache_size:
            self._budget.pop(next(iter(self._budget)))

    async def _get(self, url: str) -> dict[str, Any]:
        try:
            # refetch_unknown_id: a fragment-less key id (GoToSocial) may answer with the actor,
            # whose id differs from the URL; the actor is then fetched by its own id.
            return await self.client.fetch_activitypub(
                url, signer=await self.instance_signer(), refetch_unknown_id=True
            )
        except FetchError as error:
            gone = error.status == 410
            raise KeyUnavailable(url, f"fetch failed: {error.reason}", gone=gone) from None

    async def _fetch(self, key_id: str) -> VerifiedKey:
        self._spend_budget(key_id)
        document = await self._get(signatures.key_id_without_fragment(key_id))
        if "publicKeyPem" in document and "owner" in document and "inbox" not in document:
            # A separate key document: its owner must list this very key in its own document.
            owner = document.get("owner")
            if not isinstance(owner, str):
                raise KeyUnavailable(key_id, "key document without an owner URI")
            if document.get("id") != key_id and document.get("id") != key_id.split("#")[0]:
                raise KeyUnavailable(key_id, "key document id does not match the key id")
            self._spend_budget(owner)
            document = await self._get(owner)
        try:
            info = parse_actor(document, allow_http=self.allow_http)
        except InvalidActor as error:
            raise KeyUnavailable(key_id, f"owner is not a valid actor: {error}") from None
        pem = info.keys.get(key_id)
        if pem is None:
            raise KeyUnavailable(key_id, "the owner's actor document does not list this key")
        try:
            public_key = signatures.load_public_key_pem(pem)
        except signatures.SignatureError as error:
            raise KeyUnavailable(key_id, f"unusable key: {error}") from None
        async with self.database.transaction() as session:
            await store_actor(
                session, info, key_id, document, self.clock.now(), allow_http=self.allow_http
            )
        return VerifiedKey(key_id, info.uri, public_key)

    async def actor(self, actor_uri: str, *, refresh: bool = False) -> RemoteActor:
        """The stored remote actor, fetching (and verifying) it if we do not have it."""
        if not refresh:
            async with self.database.sessions() as session:
                stored = await session.scalar(
                    select(RemoteActor).where(
                        RemoteActor.uri == actor_uri, RemoteActor.deleted_at.is_(None)
                    )
                )
            if stored is not None:
                return stored
        self._spend_budget(actor_uri)
        document = await self._get(actor_uri)
        try:
            info = parse_actor(document, allow_http=self.allow_http)
        except InvalidActor as error:
            raise KeyUnavailable(actor_uri, f"not a valid actor: {error}") from None
        if not info.keys:
            raise KeyUnavailable(actor_uri, "actor lists no key of its own")
        key_id = next(iter(info.keys))
        async with self.database.transaction() as session:
            previous = await session.scalar(
                select(RemoteActor.key_id).where(RemoteActor.uri == info.uri)
            )
            stored = await store_actor(
                session, info, key_id, document, self.clock.now(), allow_http=self.allow_http
            )
        # After a rotation the old key must stop verifying at once, not when it is evicted.
        self.forget(key_id)
        if previous is not None:
            self.forget(previous)
        return stored
