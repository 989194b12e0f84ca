"""Claims due work rows under a lease, runs each kind's handler, and records the outcome."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from flattrfed.clock import Clock
from flattrfed.db.models.work import WorkItem, WorkState
from flattrfed.db.session import Database
from flattrfed.db.statements import insert_ignoring_duplicates, table_of

log = logging.getLogger(__name__)

work_table = table_of(WorkItem)


class RetryLater(Exception):
    """Raised by a handler: try again after `after` (e.g. a peer's Retry-After)."""

    def __init__(self, reason: str, after: timedelta | None = None) -> None:
        super().__init__(reason)
        self.after = after


class PermanentFailure(Exception):
    """Raised by a handler: retrying cannot help; the row is marked failed for an admin to see."""


@dataclass(frozen=True)
class Job:
    """What a handler is given: a claimed row's identity and payload."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    created_at: datetime


WorkHandler = Callable[[Job], Awaitable[None]]


def default_backoff(attempts: int) -> timedelta:
    """Exponential backoff: 30 s, 1 min, 2 min, ... capped at 12 h between tries."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 12 * 3600))


async def enqueue(
    executor: AsyncSession | AsyncConnection,
    *,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    run_after: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = 16,
) -> None:
    """Add a work row inside the caller's transaction; a repeated dedupe_key is silently ignored."""
    values = {
        "kind": kind,
        "payload": payload,
        "dedupe_key": dedupe_key,
        "state": WorkState.PENDING.value,
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": run_after or now,
        "created_at": now,
    }
    bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
    await executor.execute(insert_ignoring_duplicates(bind.dialect.name, WorkItem, **values))


class Worker:
    """Claims due rows (SKIP LOCKED on PostgreSQL, a lease on both) and runs their handlers.

    Many workers on many machines can share one PostgreSQL queue: a row is claimed by exactly
    one of them, and a crashed worker's claim lapses when its lease expires.
    """

    def __init__(
        self,
        database: Database,
        clock: Clock,
        handlers: Mapping[str, WorkHandler],
        *,
        worker_id: str | None = None,
        lease: timedelta = timedelta(minutes=5),
        batch_size: int = 32,
        backoff: Callable[[int], timedelta] = default_backoff,
    ) -> None:
        self.database = database
        self.clock = clock
        self.handlers = dict(handlers)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.batch_size = batch_size
        self.backoff = backoff
        self._wake = asyncio.Event()

    def register(self, kind: str, handler: WorkHandler) -> None:
        self.handlers[kind] = handler

    def wake(self) -> None:
        """Tell a sleeping run_forever() that new work may be due."""
        self._wake.set()

    async def claim(self) -> list[Job]:
        now = self.clock.now()
        due = (
            select(work_table.c.id)
            .where(
                work_table.c.state == WorkState.PENDING.value,
                work_table.c.run_after <= now,
                work_table.c.kind.in_(sorted(self.handlers)),
                or_(work_table.c.lease_expires.is_(None), work_table.c.lease_expires < now),
            )
            .order_by(work_table.c.run_after, work_table.c.id)
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)  # rendered on PostgreSQL, ignored on SQLite
        )
        statement = (
            update(work_table)
            .where(work_table.c.id.in_(due.scalar_subquery()))
            .values(
                lease_owner=self.worker_id,
                lease_expires=now + self.lease,
                attempts=work_table.c.attempts + 1,
            )
            .returning(
                work_table.c.id,
                work_table.c.kind,
                work_table.c.payload,
                work_table.c.attempts,
                work_table.c.max_attempts,
                work_table.c.created_at,
            )
        )
        async with self.database.connect() as connection:
            rows = (await connection.execute(statement)).all()
        jobs = [
            Job(row.id, row.kind, row.payload, row.attempts, row.max_attempts, row.created_at)
            for row in rows
        ]
        return sorted(jobs, key=lambda job: job.id)

    async def _finish(self, job: Job, values: dict[str, Any]) -> None:
        statement = (
            update(work_table)
            .where(and_(work_table.c.id == job.id, work_table.c.lease_owner == self.worker_id))
            .values(lease_owner=None, lease_expires=None, **values)
        )
        async with self.database.connect() as connection:
            await connection.execute(statement)

    async def run_job(self, job: Job) -> None:
        handler = self.handlers[job.kind]
        now = self.clock.now
        try:
            await handler(job)
        except PermanentFailure as error:
            log.warning("work failed permanently", extra={"job": job.id, "kind": job.kind})
            values = {"state": WorkState.FAILED.value, "last_error": str(error)[:2000]}
            await self._finish(job, {**values, "finished_at": now()})
        except asyncio.CancelledError:
            raise
        except Exception as error:
            retry_after = error.after if isinstance(error, RetryLater) else None
            if not isinstance(error, RetryLater):
                log.exception("work raised", extra={"job": job.id, "kind": job.kind})
            message = f"{type(error).__name__}: {error}"[:2000]
            if job.attempts >= job.max_attempts:
                await self._finish(
                    job,
                    {"state": WorkState.FAILED.value, "last_error": message, "finished_at": now()},
                )
            else:
                # A handler that names a delay knows better (its own schedule, Retry-After).
                delay = retry_after if retry_after is not None else self.backoff(job.attempts)
                await self._finish(job, {"run_after": now() + delay, "last_error": message})
        else:
            await self._finish(
                job, {"state": WorkState.DONE.value, "last_error": None, "finished_at": now()}
            )

    async def run_once(self) -> int:
        """Claim one batch of due rows and run them; returns how many were run."""
        lease_ends = self.clock.now() + self.lease  # no later than the leases claim() sets
        jobs = await self.claim()
        ran = 0
        for job in jobs:
            if self.clock.now() >= lease_ends:
                # The batch runs one job at a time, so hung jobs (a peer that never answers)
                # can outlast the leases of those behind them. Another worker may own those
                # now; running them too would do the work twice (a duplicate delivery). Hand
                # back what is still ours, without counting an attempt that never happened.
                await self._finish(job, {"attempts": work_table.c.attempts - 1})
                continue
            await self.run_job(job)
            ran += 1
        return ran

    async def run_until_idle(self, max_rounds: int = 1000) -> int:
        """Run batches until nothing is due (tests step time with the clock between calls)."""
        total = 0
        for _ in range(max_rounds):
            ran = await self.run_once()
            if ran == 0:
                return total
            total += ran
        raise RuntimeError(f"work still due after {max_rounds} rounds")

    async def run_forever(self, stop: asyncio.Event, poll_interval: float = 1.0) -> None:
        """The production loop: run due work, then sleep until woken, polled, or stopped."""
        while not stop.is_set():
            try:
                ran = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker round failed; retrying after the poll interval")
                ran = 0
            if ran:
                continue
            self._wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            _done, pending = await asyncio.wait(
                waiters, timeout=poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
