"""Outbound delivery: outbox rows written with the change, then signed POSTs with retries."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub import signatures
from flattrfed.activitypub.actors import signing_key
from flattrfed.activitypub.client import AddressRefusedError, FederationClient, FetchError, Signer
from flattrfed.activitypub.hosts import (
    is_blocked,
    is_unavailable,
    record_failure,
    record_success,
)
from flattrfed.activitypub.origins import BadUri, domain_of, host_of
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.db.models import Follow, LocalActor, RemoteActor
from flattrfed.db.session import Database
from flattrfed.worker import PermanentFailure, RetryLater, enqueue
from flattrfed.worker.loop import Job

log = logging.getLogger(__name__)

DELIVER_KIND = "deliver"
# 16 retries (17 attempts, as Mastodon): 1, 2, 4 ... minutes, capped at 10 h: about 3.2 days.
MAX_ATTEMPTS = 17
# 4xx answers mean retrying cannot help, except these (RFC 9110 and Mastodon's practice).
RETRYABLE_4XX = frozenset({401, 408, 429})
DEDUPE_KEY_CHARS = 512  # work_items.dedupe_key's width


@functools.lru_cache(maxsize=4096)
def _private_key(pem: str) -> signatures.PrivateKey:
    # Parsing an RSA key costs about as much as signing with it: keep the parsed ones. The
    # cache is keyed by the PEM itself, so a rotated key is simply another entry.
    return signatures.load_private_key_pem(pem)


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(60 * 2 ** max(attempts - 1, 0), 10 * 3600))


def delivery_key(activity_id: str, inbox: str) -> str:
    """The outbox row's dedupe key: one row per activity and inbox."""
    key = f"deliver:{activity_id}:{inbox}"
    if len(key) <= DEDUPE_KEY_CHARS:
        return key
    # Cutting the key to the column width made every inbox sharing a long prefix (a peer with
    # long inbox paths) one key, and their rows were silently dropped as duplicates. A hash
    # keeps long keys distinct; short ones stay readable.
    digest = hashlib.sha256(f"{activity_id}\n{inbox}".encode()).hexdigest()
    return f"deliver:sha256:{digest}"


async def enqueue_delivery(
    session: AsyncSession,
    *,
    activity: dict[str, Any],
    actor_id: int,
    inboxes: Iterable[str],
    now: datetime,
) -> int:
    """Queue `activity` for each inbox in the caller's transaction (the transactional outbox)."""
    count = 0
    for inbox in sorted(set(inboxes)):
        await enqueue(
            session,
            kind=DELIVER_KIND,
            payload={"inbox": inbox, "actor_id": actor_id, "activity": activity},
            now=now,
            dedupe_key=delivery_key(str(activity["id"]), inbox),
            max_attempts=MAX_ATTEMPTS,
        )
        count += 1
    return count


async def follower_inboxes(session: AsyncSession, actor_id: int) -> list[str]:
    """One inbox per follower server where it has a shared inbox (shared-inbox grouping)."""
    rows = (
        await session.execute(
            select(RemoteActor.inbox, RemoteActor.shared_inbox)
            .join(Follow, Follow.follower_id == RemoteActor.id)
            .where(Follow.target_id == actor_id, RemoteActor.deleted_at.is_(None))
        )
    ).all()
    return sorted({shared or inbox for inbox, shared in rows})


async def deliver_to_followers(
    session: AsyncSession, *, actor: LocalActor, activity: dict[str, Any], now: datetime
) -> int:
    inboxes = await follower_inboxes(session, actor.id)
    return await enqueue_delivery(
        session, activity=activity, actor_id=actor.id, inboxes=inboxes, now=now
    )


class Deliverer:
    """Runs delivery rows: signs as the activity's actor, POSTs, and classifies the answer."""

    def __init__(
        self,
        database: Database,
        client: FederationClient,
        clock: Clock,
        urls: LocalUrls,
        *,
        allow_http: bool,
    ) -> None:
        self.database = database
        self.client = client
        self.clock = clock
        self.urls = urls
        self.allow_http = allow_http

    async def handle(self, job: Job) -> None:
        inbox = str(job.payload["inbox"])
        try:
            host = host_of(inbox, allow_http=self.allow_http)
            domain = domain_of(inbox, allow_http=self.allow_http)
        except BadUri as error:
            raise PermanentFailure(f"bad inbox URL: {error}") from None
        async with self.database.sessions() as session:
            if await is_blocked(session, domain):
                raise PermanentFailure(f"{domain} is blocked")
            if await is_unavailable(session, host):
                raise PermanentFailure(f"{host} is marked unavailable; not delivering")
            actor = await session.get(LocalActor, int(job.payload["actor_id"]))
            if actor is None:
                raise PermanentFailure("the sending actor no longer exists")
            key = await signing_key(session, self.urls, actor)
        signer = Signer(key.key_id, _private_key(key.private_key_pem))
        body = json.dumps(job.payload["activity"], ensure_ascii=False).encode()
        try:
            result = await self.client.post(inbox, body, signer=signer)
        except AddressRefusedError as error:
            raise PermanentFailure(f"refused address: {error.reason}") from None
        except FetchError as error:
            await self._failed(host, f"{error.reason}")
            if error.permanent:
                raise PermanentFailure(error.reason) from None
            raise RetryLater(error.reason, after=retry_delay(job.attempts)) from None
        status = result.status
        if 200 <= status < 300:
            async with self.database.transaction() as session:
                await record_success(session, host, self.clock.now())
            return
        reason = f"HTTP {status} from {host}"
        await self._failed(host, reason)
        if (
            (400 <= status < 500 and status not in RETRYABLE_4XX)
            or status == 501
            or (300 <= status < 400)
        ):
            raise PermanentFailure(reason)
        delay = retry_delay(job.attempts)
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        raise RetryLater(reason, after=delay)

    async def _failed(self, host: str, error: str) -> None:
        async with self.database.transaction() as session:
            await record_failure(session, host, self.clock.now(), error)
