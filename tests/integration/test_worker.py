"""The worker claims due rows exactly once, retries with backoff, and takes over lapsed leases;
batch handlers get a kind's jobs together, and the inbound batch records Likes together."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from flattrfed.activitypub.documents import AS_CONTEXT
from flattrfed.activitypub.inbox_writer import INBOX_WRITER, Arrival
from flattrfed.clock import ManualClock
from flattrfed.db.models import InboundActivity, ReceivedLike, WorkItem, WorkState
from flattrfed.db.session import Database
from flattrfed.worker import PermanentFailure, RetryLater, Worker, enqueue
from flattrfed.worker.loop import Batch, Job
from tests.harness.instances import Federation, Instance
from tests.integration.test_inbox_batching import refuse_poisoned_activities


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


# --- batch handlers ----------------------------------------------------------------------------


async def test_a_batch_handler_gets_its_kinds_jobs_together_and_each_outcome_is_recorded(
    database: Database, clock: ManualClock
) -> None:
    seen: list[list[int]] = []

    async def one_by_one(job: Job) -> None:
        raise AssertionError("the batch handler runs these")

    async def together(batch: Batch) -> None:
        seen.append([job.payload["n"] for job in batch.jobs])
        for job in batch.jobs:
            if job.payload["n"] == 1:
                batch.failed(job, PermanentFailure("bad one"))
            elif job.payload["n"] == 2:
                batch.failed(job, RetryLater("later", after=timedelta(hours=3)))
            else:
                batch.succeeded(job)

    worker = Worker(database, clock, {"test": one_by_one}, batch_handlers={"test": together})
    await add_work(database, clock, 4)
    assert await worker.run_once() == 4
    assert seen == [[0, 1, 2, 3]]
    states = [(row.state, row.last_error, row.lease_owner) for row in await rows(database)]
    assert states == [
        (WorkState.DONE, None, None),
        (WorkState.FAILED, "bad one", None),
        (WorkState.PENDING, "RetryLater: later", None),
        (WorkState.DONE, None, None),
    ]
    assert (await rows(database))[2].run_after == clock.now() + timedelta(hours=3)


async def test_a_batch_handler_that_raises_fails_only_the_jobs_it_had_not_reported(
    database: Database, clock: ManualClock
) -> None:
    async def together(batch: Batch) -> None:
        batch.succeeded(batch.jobs[0])
        raise ConnectionError("lost the database")

    worker = Worker(
        database, clock, {"test": lambda job: asyncio.sleep(0)}, batch_handlers={"test": together}
    )
    await add_work(database, clock, 3)
    await worker.run_once()
    first, *rest = await rows(database)
    assert first.state == WorkState.DONE
    assert [(row.state, row.last_error) for row in rest] == [
        (WorkState.PENDING, "ConnectionError: lost the database")
    ] * 2


async def test_batch_jobs_not_started_before_the_leases_lapse_are_handed_back_unrun(
    database: Database, clock: ManualClock
) -> None:
    started: list[int] = []

    async def together(batch: Batch) -> None:
        for job in batch.jobs:
            if batch.may_start(job):
                started.append(job.payload["n"])
                clock.advance(timedelta(minutes=6))  # a job that outlives every lease
                batch.succeeded(job)

    worker = Worker(
        database, clock, {"test": lambda job: asyncio.sleep(0)}, batch_handlers={"test": together}
    )
    await add_work(database, clock, 3)
    assert await worker.run_once() == 1
    assert started == [0]
    done, *back = await rows(database)
    assert (done.state, done.attempts) == (WorkState.DONE, 1)
    assert [(row.state, row.attempts, row.lease_owner) for row in back] == [
        (WorkState.PENDING, 0, None)
    ] * 2


# --- the inbound batch: Likes in one transaction ---------------------------------------------


async def store_likes(instance: Instance, likes: list[dict[str, Any]]) -> None:
    """Likes stored as the inbox stores them (through its writer)."""
    writer = instance.app[INBOX_WRITER]
    await asyncio.gather(
        *(
            writer.store(Arrival(item["id"], item["actor"], item["type"], item, "fans.test"))
            for item in likes
        )
    )


def fan_like(serial: int, object_uri: str, fan: str = "ann") -> dict[str, Any]:
    actor = f"http://fans.test/users/{fan}"
    return {
        "@context": AS_CONTEXT,
        "id": f"{actor}#likes/{serial}",
        "type": "Like",
        "actor": actor,
        "object": object_uri,
    }


async def outcomes(instance: Instance) -> list[str | None]:
    async with instance.services.database.sessions() as session:
        query = select(InboundActivity.outcome).order_by(InboundActivity.id)
        return list((await session.scalars(query)).all())


async def recorded(instance: Instance) -> dict[str, datetime | None]:
    async with instance.services.database.sessions() as session:
        found = await session.execute(select(ReceivedLike.like_uri, ReceivedLike.undone_at))
        return {uri: undone for uri, undone in found.all()}


async def test_likes_of_one_batch_are_recorded_once_each_in_one_transaction(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_thing(await alpha.create_member("alice"), "blog", "Blog")
    blog_uri = alpha.actor_uri("blog", "thing")
    likes = [fan_like(n, blog_uri) for n in range(40)]
    likes.append(fan_like(99, "http://elsewhere.test/notes/1"))
    await store_likes(alpha, likes)

    with caplog.at_level(logging.INFO, logger="flattrfed.activitypub.dispatch"):
        await alpha.run_worker()
    together = [r for r in caplog.records if r.message == "inbound activities processed together"]
    assert [record.count for record in together] == [41]  # type: ignore[attr-defined]
    assert await outcomes(alpha) == ["like recorded"] * 40 + [
        "ignored: Like of an object on another server"
    ]
    assert sorted(await recorded(alpha)) == sorted(item["id"] for item in likes[:40])
    async with alpha.services.database.sessions() as session:
        query = select(WorkItem.state).where(WorkItem.kind == "inbound")
        states = (await session.scalars(query)).all()
    assert set(states) == {WorkState.DONE}


async def test_a_like_and_its_undo_in_one_batch_leave_it_undone(federation: Federation) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_thing(await alpha.create_member("alice"), "blog", "Blog")
    blog_uri = alpha.actor_uri("blog", "thing")
    liked = fan_like(1, blog_uri)
    undo = {
        "@context": AS_CONTEXT,
        "id": f"{liked['actor']}#undos/1",
        "type": "Undo",
        "actor": liked["actor"],
        "object": liked,
    }
    await store_likes(alpha, [liked])
    await store_likes(alpha, [undo])

    await alpha.run_worker()
    assert await outcomes(alpha) == ["like recorded", "like undone"]
    assert (await recorded(alpha))[liked["id"]] == federation.clock.now()


async def test_a_like_that_breaks_the_batch_transaction_fails_alone(
    federation: Federation,
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_thing(await alpha.create_member("alice"), "blog", "Blog")
    blog_uri = alpha.actor_uri("blog", "thing")
    await refuse_poisoned_activities(alpha, "received_likes", "like_uri")
    likes = [fan_like(n, blog_uri) for n in range(3)] + [fan_like(1, blog_uri, fan="poison")]
    likes += [fan_like(n, blog_uri) for n in range(3, 6)]
    await store_likes(alpha, likes)

    await alpha.run_worker()
    assert sorted(await recorded(alpha)) == sorted(
        item["id"] for item in likes if "poison" not in item["id"]
    )
    async with alpha.services.database.sessions() as session:
        query = select(WorkItem).where(WorkItem.kind == "inbound").order_by(WorkItem.id)
        work = (await session.scalars(query)).all()
    assert [row.state for row in work] == [WorkState.DONE] * 3 + [WorkState.PENDING] + [
        WorkState.DONE
    ] * 3
    assert "poisoned" in (work[3].last_error or "")
    assert (await outcomes(alpha))[3] is None  # not processed: it is retried later
