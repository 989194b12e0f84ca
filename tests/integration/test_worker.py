"""The worker claims due rows exactly once, retries with backoff, and takes over lapsed leases."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from flattrfed.clock import ManualClock
from flattrfed.db.models import WorkItem, WorkState
from flattrfed.db.session import Database
from flattrfed.worker import PermanentFailure, RetryLater, Worker, enqueue
from flattrfed.worker.loop import Job


async def add_work(
    database: Database, clock: ManualClock, count: int, kind: str = "test", **kwargs: object
) -> None:
    async with database.transaction() as session:
        for index in range(count):
            await enqueue(
                session,
                kind=kind,
                payload={"n": index},
                now=clock.now(),
                **kwargs,  # type: ignore[arg-type]
            )


async def rows(database: Database) -> list[WorkItem]:
    async with database.sessions() as session:
        return list((await session.scalars(select(WorkItem).order_by(WorkItem.id))).all())


async def test_due_rows_run_once_and_are_marked_done(
    database: Database, clock: ManualClock
) -> None:
    seen: list[int] = []

    async def handler(job: Job) -> None:
        seen.append(job.payload["n"])

    worker = Worker(database, clock, {"test": handler})
    await add_work(database, clock, 5)
    assert await worker.run_until_idle() == 5
    assert await worker.run_until_idle() == 0
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert {row.state for row in await rows(database)} == {WorkState.DONE}


async def test_rows_due_later_wait_for_the_clock(database: Database, clock: ManualClock) -> None:
    seen: list[int] = []

    async def handler(job: Job) -> None:
        seen.append(job.id)

    worker = Worker(database, clock, {"test": handler})
    await add_work(database, clock, 1, run_after=clock.now() + timedelta(hours=1))
    assert await worker.run_once() == 0
    clock.advance(timedelta(hours=1))
    assert await worker.run_once() == 1


async def test_same_dedupe_key_enqueues_once(database: Database, clock: ManualClock) -> None:
    for _ in range(3):
        await add_work(database, clock, 1, dedupe_key="activity:https://a.example/1")
    assert len(await rows(database)) == 1


async def test_failing_handler_is_retried_with_growing_backoff(
    database: Database, clock: ManualClock
) -> None:
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(job.attempts)
        raise ConnectionError("peer down")

    worker = Worker(database, clock, {"test": handler})
    await add_work(database, clock, 1)
    assert await worker.run_once() == 1
    (row,) = await rows(database)
    assert row.state == WorkState.PENDING
    assert row.last_error == "ConnectionError: peer down"
    first_delay = row.run_after - clock.now()
    clock.advance(first_delay)
    assert await worker.run_once() == 1
    (row,) = await rows(database)
    assert row.run_after - clock.now() > first_delay
    assert attempts == [1, 2]


async def test_retry_later_honours_the_requested_delay(
    database: Database, clock: ManualClock
) -> None:
    async def handler(job: Job) -> None:
        raise RetryLater("429 from peer", after=timedelta(hours=2))

    worker = Worker(database, clock, {"test": handler})
    await add_work(database, clock, 1)
    await worker.run_once()
    (row,) = await rows(database)
    assert row.run_after == clock.now() + timedelta(hours=2)


async def test_permanent_failure_and_exhausted_attempts_mark_the_row_failed(
    database: Database, clock: ManualClock
) -> None:
    async def permanent(job: Job) -> None:
        raise PermanentFailure("410 Gone")

    async def flaky(job: Job) -> None:
        raise ConnectionError("still down")

    worker = Worker(
        database, clock, {"permanent": permanent, "flaky": flaky}, backoff=lambda _: timedelta(0)
    )
    await add_work(database, clock, 1, kind="permanent")
    await add_work(database, clock, 1, kind="flaky", max_attempts=3)
    await worker.run_until_idle()
    permanent_row, flaky_row = await rows(database)
    assert (permanent_row.state, permanent_row.last_error) == (WorkState.FAILED, "410 Gone")
    assert (flaky_row.state, flaky_row.attempts) == (WorkState.FAILED, 3)


async def test_a_crashed_workers_lease_is_taken_over_after_it_expires(
    database: Database, clock: ManualClock
) -> None:
    done: list[str] = []

    async def handler(job: Job) -> None:
        done.append("ran")

    crashed = Worker(database, clock, {"test": handler}, worker_id="crashed")
    survivor = Worker(database, clock, {"test": handler}, worker_id="survivor")
    await add_work(database, clock, 1)
    assert len(await crashed.claim()) == 1  # claimed, then the process "dies"
    assert await survivor.run_once() == 0
    clock.advance(crashed.lease + timedelta(seconds=1))
    assert await survivor.run_once() == 1
    assert done == ["ran"]


async def test_concurrent_workers_never_run_a_row_twice(
    database: Database, clock: ManualClock
) -> None:
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)
        await asyncio.sleep(0)

    await add_work(database, clock, 60)
    workers = [
        Worker(database, clock, {"test": handler}, worker_id=f"w{i}", batch_size=7)
        for i in range(4)
    ]
    await asyncio.gather(*(worker.run_until_idle() for worker in workers))
    assert sorted(ran) == sorted(set(ran))
    assert len(ran) == 60


async def test_worker_ignores_kinds_it_has_no_handler_for(
    database: Database, clock: ManualClock
) -> None:
    worker = Worker(database, clock, {"known": lambda job: asyncio.sleep(0)})
    await add_work(database, clock, 1, kind="unknown")
    assert await worker.run_once() == 0


@pytest.mark.parametrize("delay", [timedelta(0)])
async def test_run_forever_stops_when_told(
    database: Database, clock: ManualClock, delay: timedelta
) -> None:
    seen: list[int] = []

    async def handler(job: Job) -> None:
        seen.append(job.id)

    worker = Worker(database, clock, {"test": handler})
    await add_work(database, clock, 2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run_forever(stop, poll_interval=0.01))
    for _ in range(500):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert len(seen) == 2
