"""Outbound delivery: outbox rows written with the change, then signed POSTs with retries."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub import signatures
from flattrfed.activitypub.actors import signing_key
from flattrfed.activitypub.client import AddressRefusedError, FederationClient, FetchError, Signer
from flattrfed.activitypub.hosts import (
    block_list,
    host_states,
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
from flattrfed.worker.loop import Batch, Job

log = logging.getLogger(__name__)

DELIVER_KIND = "deliver"
# 16 retries (17 attempts, as Mastodon): 1, 2, 4 ... minutes, capped at 10 h: about 3.2 days.
MAX_ATTEMPTS = 17
# 4xx answers mean retrying cannot help, except these (RFC 9110 and Mastodon's practice).
RETRYABLE_4XX = frozenset({401, 408, 429})
DEDUPE_KEY_CHARS = 512  # work_items.dedupe_key's width
# A batch's deliveries run concurrently: at most this many at once, and at most PER_HOST to any
# one host (the client pools as many connections per host; more would wait for one of them and
# that wait counts against the connect timeout).
CONCURRENCY = 32
PER_HOST = 8


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


@dataclass(frozen=True)
class _Sent:
    """How one POST went: `error` to raise for the job (None: delivered), and `host_failure`,
    the reason to count against the host's health (None: nothing to count)."""

    error: Exception | None
    host_failure: str | None = None


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
        concurrency: int = CONCURRENCY,
        per_host: int = PER_HOST,
    ) -> None:
        self.database = database
        self.client = client
        self.clock = clock
        self.urls = urls
        self.allow_http = allow_http
        self.concurrency = concurrency
        self.per_host = per_host

    def _where(self, job: Job) -> tuple[str, str, str]:
        """(inbox, host, domain) of a delivery row, or PermanentFailure for a bad inbox URL."""
        inbox = str(job.payload["inbox"])
        try:
            return (
                inbox,
                host_of(inbox, allow_http=self.allow_http),
                domain_of(inbox, allow_http=self.allow_http),
            )
        except BadUri as error:
            raise PermanentFailure(f"bad inbox URL: {error}") from None

    async def handle(self, job: Job) -> None:
        """One delivery on its own (the batch path is handle_batch)."""
        inbox, host, domain = self._where(job)
        if await block_list(self.database.engine).is_blocked(domain):
            raise PermanentFailure(f"{domain} is blocked")
        async with self.database.sessions() as session:
            if await is_unavailable(session, host):
                raise PermanentFailure(f"{host} is marked unavailable; not delivering")
            actor = await session.get(LocalActor, int(job.payload["actor_id"]))
            if actor is None:
                raise PermanentFailure("the sending actor no longer exists")
            key = await signing_key(session, self.urls, actor)
        sent = await self._send(
            job, inbox, host, Signer(key.key_id, _private_key(key.private_key_pem))
        )
        if sent.host_failure is not None:
            await self._failed(host, sent.host_failure)
        elif sent.error is None:
            async with self.database.transaction() as session:
                await record_success(session, host, self.clock.now())
        if sent.error is not None:
            raise sent.error

    async def handle_batch(self, batch: Batch) -> None:
        """A claimed batch of deliveries, sent concurrently over the client's pooled keep-alive
        connections (at most `concurrency` at once, `per_host` to one host), so a hung peer
        holds up only its own deliveries. The checks run with one query for the whole batch,
        and each host's health is updated once."""
        ready: list[tuple[Job, str, str]] = []
        blocks = block_list(self.database.engine)
        for job in batch.jobs:
            try:
                inbox, host, domain = self._where(job)
            except PermanentFailure as error:
                batch.failed(job, error)
                continue
            if await blocks.is_blocked(domain):
                batch.failed(job, PermanentFailure(f"{domain} is blocked"))
            else:
                ready.append((job, inbox, host))
        if not ready:
            return
        states, signers = await self._prepare(ready)
        succeeded: set[str] = set()
        failures: dict[str, str] = {}
        every = asyncio.Semaphore(self.concurrency)
        per_host = {host: asyncio.Semaphore(self.per_host) for _job, _inbox, host in ready}

        async def deliver(job: Job, inbox: str, host: str) -> None:
            if states.get(host, (0, False))[1]:
                batch.failed(job, PermanentFailure(f"{host} is marked unavailable; not delivering"))
                return
            signer = signers.get(int(job.payload["actor_id"]))
            if isinstance(signer, Exception) or signer is None:
                batch.failed(job, signer or PermanentFailure("the sending actor no longer exists"))
                return
            async with every, per_host[host]:
                # Waiting for a slot may outlast the batch's leases: then another worker may
                # own this row, and sending it too would deliver it twice.
                if not batch.may_start(job):
                    return
                try:
                    sent = await self._send(job, inbox, host, signer)
                except Exception as error:
                    batch.failed(job, error)
                    return
            if sent.host_failure is not None:
                failures[host] = sent.host_failure
            elif sent.error is None:
                succeeded.add(host)
            if sent.error is None:
                batch.succeeded(job)
            else:
                batch.failed(job, sent.error)

        await asyncio.gather(*(deliver(job, inbox, host) for job, inbox, host in ready))
        # Health rows exist only for hosts that failed before: a success elsewhere writes nothing.
        recovered = {host for host in succeeded if states.get(host, (0, False))[0] > 0}
        if recovered or failures:
            now = self.clock.now()
            async with self.database.transaction() as session:
                for host in sorted(recovered):
                    await record_success(session, host, now)
                for host, reason in sorted(failures.items()):
                    await record_failure(session, host, now, reason)

    async def _prepare(
        self, ready: list[tuple[Job, str, str]]
    ) -> tuple[dict[str, tuple[int, bool]], dict[int, Signer | Exception | None]]:
        """The hosts' health, and a signer per sending actor (None: the actor is gone; an
        exception: its key could not be loaded), read in one session."""
        actor_ids = sorted({int(job.payload["actor_id"]) for job, _inbox, _host in ready})
        signers: dict[int, Signer | Exception | None] = dict.fromkeys(actor_ids)
        async with self.database.sessions() as session:
            states = await host_states(session, {host for _job, _inbox, host in ready})
            actors = await session.scalars(select(LocalActor).where(LocalActor.id.in_(actor_ids)))
            for actor in actors.all():
                try:
                    key = await signing_key(session, self.urls, actor)
                    signers[actor.id] = Signer(key.key_id, _private_key(key.private_key_pem))
                except Exception as error:  # no current key: that job retries, as before
                    signers[actor.id] = error
        return states, signers

    async def _send(self, job: Job, inbox: str, host: str, signer: Signer) -> _Sent:
        body = json.dumps(job.payload["activity"], ensure_ascii=False).encode()
        try:
            result = await self.client.post(inbox, body, signer=signer)
        except AddressRefusedError as error:
            return _Sent(PermanentFailure(f"refused address: {error.reason}"))
        except FetchError as error:
            if error.permanent:
                return _Sent(PermanentFailure(error.reason), error.reason)
            return _Sent(RetryLater(error.reason, after=retry_delay(job.attempts)), error.reason)
        status = result.status
        if 200 <= status < 300:
            return _Sent(None)
        reason = f"HTTP {status} from {host}"
        if (
            (400 <= status < 500 and status not in RETRYABLE_4XX)
            or status == 501
            or (300 <= status < 400)
        ):
            return _Sent(PermanentFailure(reason), reason)
        delay = retry_delay(job.attempts)
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        return _Sent(RetryLater(reason, after=delay), reason)

    async def _failed(self, host: str, error: str) -> None:
        async with self.database.transaction() as session:
            await record_failure(session, host, self.clock.now(), error)
