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
from typing import Any, Literal

from sqlalchemy import and_, bindparam, or_, select, update
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


@dataclass(frozen=True)
class _Outcome:
    """What becomes of a claimed row: done, failed, retried after `run_after`, or handed back."""

    job_id: int
    state: Literal["done", "failed", "retry", "back"]
    at: datetime
    error: str | None = None
    run_after: datetime | None = None


class Batch:
    """The claimed jobs of one kind, given together to that kind's batch handler.

    The handler reports every job's outcome with `succeeded` or `failed` (classified as for a
    single job: PermanentFailure, RetryLater, anything else), and asks `may_start` before it
    starts a job late: once the batch's leases have run out another worker may own the rest,
    so those are handed back unrun.
    """

    def __init__(self, worker: Worker, jobs: list[Job], lease_ends: datetime) -> None:
        self.jobs = jobs
        self._worker = worker
        self._lease_ends = lease_ends
        self._reported: set[int] = set()
        self.handed_back = 0

    def may_start(self, job: Job) -> bool:
        if self._worker.clock.now() < self._lease_ends:
            return True
        self._report(_Outcome(job.id, "back", self._worker.clock.now()))
        self.handed_back += 1
        return False

    def succeeded(self, job: Job) -> None:
        self._report(_Outcome(job.id, "done", self._worker.clock.now()))

    def failed(self, job: Job, error: BaseException) -> None:
        self._report(self._worker._failure(job, error))

    def unreported(self) -> list[Job]:
        return [job for job in self.jobs if job.id not in self._reported]

    def _report(self, outcome: _Outcome) -> None:
        if outcome.job_id in self._reported:
            return
        self._reported.add(outcome.job_id)
        self._worker._outcomes.add(outcome)


BatchHandler = Callable[[Batch], Awaitable[None]]


class _OutcomeWriter:
    """Writes reported outcomes with group commit: all that arrive while one write runs go
    together in the next, so a batch's rows are finished in a few transactions, not one each,
    and a job that hangs does not hold back the outcomes of those that finished."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._pending: list[_Outcome] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, outcome: _Outcome) -> None:
        self._pending.append(outcome)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            outcomes, self._pending = self._pending, []
            try:
                await self._worker._write_outcomes(outcomes)
            except Exception:
                # The rows keep their leases: once those lapse, the jobs run again (handlers
                # are idempotent), which is what a crash at this point would do too.
                log.exception("recording work outcomes failed", extra={"rows": len(outcomes)})

    async def drain(self) -> None:
        """Wait until every outcome reported so far is written."""
        while self._task is not None:
            task = self._task
            await task
            if task is self._task:
                self._task = asyncio.create_task(self._flush()) if self._pending else None


class Worker:
    """Claims due rows (SKIP LOCKED on PostgreSQL, a lease on both) and runs their handlers.

    Many workers on many machines can share one PostgreSQL queue: a row is claimed by exactly
    one of them, and a crashed worker's claim lapses when its lease expires. A kind with a batch
    handler gets all its jobs of a claimed batch at once (the inbox's Likes in one transaction,
    deliveries concurrently); the other kinds run one job at a time, as before.
    """

    def __init__(
        self,
        database: Database,
        clock: Clock,
        handlers: Mapping[str, WorkHandler],
        *,
        batch_handlers: Mapping[str, BatchHandler] | None = None,
        worker_id: str | None = None,
        lease: timedelta = timedelta(minutes=5),
        batch_size: int = 128,
        backoff: Callable[[int], timedelta] = default_backoff,
    ) -> None:
        self.database = database
        self.clock = clock
        self.handlers = dict(handlers)
        # Every batch kind keeps its single-job handler too: run_job() and the test harness
        # use it, and batch handlers fall back on it when a batch fails as a whole.
        self.batch_handlers = {
            kind: handler
            for kind, handler in (batch_handlers or {}).items()
            if kind in self.handlers
        }
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.batch_size = batch_size
        self.backoff = backoff
        self._wake = asyncio.Event()
        self._outcomes = _OutcomeWriter(self)

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

    def _failure(self, job: Job, error: BaseException) -> _Outcome:
        """The outcome of a job whose handler raised `error`."""
        now = self.clock.now()
        if isinstance(error, PermanentFailure):
            log.warning("work failed permanently", extra={"job": job.id, "kind": job.kind})
            return _Outcome(job.id, "failed", now, error=str(error)[:2000])
        if not isinstance(error, RetryLater):
            log.error(
                "work raised",
                extra={"job": job.id, "kind": job.kind},
                exc_info=(type(error), error, error.__traceback__),
            )
        message = f"{type(error).__name__}: {error}"[:2000]
        if job.attempts >= job.max_attempts:
            return _Outcome(job.id, "failed", now, error=message)
        # A handler that names a delay knows better (its own schedule, Retry-After).
        retry_after = error.after if isinstance(error, RetryLater) else None
        delay = retry_after if retry_after is not None else self.backoff(job.attempts)
        return _Outcome(job.id, "retry", now, error=message, run_after=now + delay)

    async def _run_handler(self, job: Job) -> _Outcome:
        try:
            await self.handlers[job.kind](job)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return self._failure(job, error)
        return _Outcome(job.id, "done", self.clock.now())

    async def _write_outcomes(self, outcomes: list[_Outcome]) -> None:
        """Finish rows in one transaction, one statement per kind of outcome; a row is only
        touched while this worker still holds its lease (nobody has taken it over)."""
        ours = and_(
            work_table.c.id == bindparam("job_id"), work_table.c.lease_owner == self.worker_id
        )
        released = {"lease_owner": None, "lease_expires": None}
        by_state: dict[str, list[dict[str, Any]]] = {}
        for outcome in outcomes:
            by_state.setdefault(outcome.state, []).append(
                {
                    "job_id": outcome.job_id,
                    "at": outcome.at,
                    "error": outcome.error,
                    "after": outcome.run_after,
                }
            )
        statements = {
            "failed": update(work_table)
            .where(ours)
            .values(
                state=WorkState.FAILED.value,
                last_error=bindparam("error"),
                finished_at=bindparam("at"),
                **released,
            ),
            "retry": update(work_table)
            .where(ours)
            .values(run_after=bindparam("after"), last_error=bindparam("error"), **released),
        }
        # Done and handed-back rows take the same values: one statement for all of each.
        still_ours = work_table.c.lease_owner == self.worker_id
        done = [item["job_id"] for item in by_state.pop("done", [])]
        back = [item["job_id"] for item in by_state.pop("back", [])]
        async with self.database.connect() as connection:
            if done:
                await connection.execute(
                    update(work_table)
                    .where(work_table.c.id.in_(done), still_ours)
                    .values(
                        state=WorkState.DONE.value,
                        last_error=None,
                        finished_at=self.clock.now(),
                        **released,
                    )
                )
            if back:
                # Handed back unrun: the attempt the claim counted never happened.
                await connection.execute(
                    update(work_table)
                    .where(work_table.c.id.in_(back), still_ours)
                    .values(attempts=work_table.c.attempts - 1, **released)
                )
            for state, parameters in by_state.items():
                await connection.execute(statements[state], parameters)

    async def run_job(self, job: Job) -> None:
        """Run one claimed job and record its outcome at once."""
        await self._write_outcomes([await self._run_handler(job)])

    async def run_once(self) -> int:
        """Claim one batch of due rows and run them; returns how many were run."""
        lease_ends = self.clock.now() + self.lease  # no later than the leases claim() sets
        jobs = await self.claim()
        if not jobs:
            return 0
        singles = [job for job in jobs if job.kind not in self.batch_handlers]
        batched: dict[str, list[Job]] = {}
        for job in jobs:
            if job.kind in self.batch_handlers:
                batched.setdefault(job.kind, []).append(job)
        counts = await asyncio.gather(
            self._run_singles(singles, lease_ends),
            *(self._run_batch(kind, group, lease_ends) for kind, group in batched.items()),
        )
        await self._outcomes.drain()
        return sum(counts)

    async def _run_singles(self, jobs: list[Job], lease_ends: datetime) -> int:
        ran = 0
        for job in jobs:
            if self.clock.now() >= lease_ends:
                # These jobs run one at a time, so hung jobs (a peer that never answers) can
                # outlast the leases of those behind them. Another worker may own those now;
                # running them too would do the work twice (a duplicate delivery). Hand back
                # what is still ours, without counting an attempt that never happened.
                self._outcomes.add(_Outcome(job.id, "back", self.clock.now()))
                continue
            self._outcomes.add(await self._run_handler(job))
            ran += 1
        return ran

    async def _run_batch(self, kind: str, jobs: list[Job], lease_ends: datetime) -> int:
        batch = Batch(self, jobs, lease_ends)
        try:
            await self.batch_handlers[kind](batch)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("batch handler raised", extra={"kind": kind, "jobs": len(jobs)})
            for job in batch.unreported():
                batch.failed(job, error)
        for job in batch.unreported():
            batch.failed(job, RuntimeError("the batch handler reported no outcome"))
        return len(jobs) - batch.handed_back

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
