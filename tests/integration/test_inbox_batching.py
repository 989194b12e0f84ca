"""The inbox's group commit: concurrent signed deliveries share transactions, each answered only
after its own activity is durable; duplicates, failures and shutdown inside a batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, text

from flattrfed.activitypub import hosts
from flattrfed.activitypub.documents import AS_CONTEXT
from flattrfed.activitypub.inbox import INBOUND_KIND
from flattrfed.activitypub.inbox_writer import (
    INBOX_WRITER,
    Arrival,
    InboxWriter,
    NotStored,
    WriterClosed,
)
from flattrfed.db.models import InboundActivity, WorkItem
from tests.fakes.sink import FakeActor, InboxSink
from tests.harness.instances import Federation, Instance


@pytest.fixture
async def sink(federation: Federation) -> AsyncIterator[InboxSink]:
    started = await InboxSink(federation.resolver, federation.clock, "remote.test").start()
    try:
        yield started
    finally:
        await started.close()


async def blog(federation: Federation) -> tuple[Instance, str]:
    alpha = await federation.start("alpha")
    alice = await alpha.create_member("alice")
    await alpha.create_thing(alice, "blog", "Alice's blog")
    return alpha, alpha.actor_uri("blog", "thing")


def like(actor: FakeActor, serial: int, object_uri: str) -> dict[str, Any]:
    return {
        "@context": AS_CONTEXT,
        "id": f"{actor.uri}#likes/{serial}",
        "type": "Like",
        "actor": actor.uri,
        "object": object_uri,
    }


def writer_of(instance: Instance) -> InboxWriter:
    return instance.app[INBOX_WRITER]


async def stored(instance: Instance) -> tuple[list[str], int]:
    """The stored activity ids (in row order) and the number of inbound work rows."""
    async with instance.services.database.sessions() as session:
        uris = (
            await session.scalars(select(InboundActivity.activity_uri).order_by(InboundActivity.id))
        ).all()
        work = await session.scalar(
            select(func.count()).select_from(WorkItem).where(WorkItem.kind == INBOUND_KIND)
        )
    return list(uris), int(work or 0)


async def refuse_poisoned_activities(instance: Instance, table: str, column: str) -> None:
    """A database trigger that refuses rows whose `column` contains "poison": a real failure
    of the database, on either backend, for one row of a batch."""
    async with instance.services.database.connect() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text(
                    "CREATE FUNCTION refuse_poisoned() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.{column} LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await connection.execute(
                text(
                    f"CREATE TRIGGER refuse_poisoned BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_poisoned()"
                )
            )
        else:
            await connection.execute(
                text(
                    f"CREATE TRIGGER refuse_poisoned BEFORE INSERT ON {table} "
                    f"WHEN NEW.{column} LIKE '%poison%' "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
                )
            )


def arrival(actor: FakeActor, serial: int, object_uri: str) -> Arrival:
    activity = like(actor, serial, object_uri)
    return Arrival(activity["id"], actor.uri, "Like", activity, "remote.test")


# --- over HTTP ---------------------------------------------------------------------------------


async def test_concurrent_signed_likes_are_all_stored_once_and_answered_202(
    federation: Federation, sink: InboxSink
) -> None:
    alpha, blog_uri = await blog(federation)
    actors = [sink.add_actor(f"fan{index}") for index in range(4)]
    inbox = alpha.url("/inbox")
    activities = [(actor, like(actor, serial, blog_uri)) for actor in actors for serial in range(6)]

    statuses = await asyncio.gather(
        *(sink.send(actor, inbox, activity) for actor, activity in activities)
    )

    assert statuses == [202] * len(activities)
    uris, work_rows = await stored(alpha)
    assert sorted(uris) == sorted(activity["id"] for _actor, activity in activities)
    assert work_rows == len(activities)
    assert writer_of(alpha).batches_written <= len(activities)
    await alpha.run_worker()
    async with alpha.services.database.sessions() as session:
        outcomes = (await session.scalars(select(InboundActivity.outcome))).all()
    assert outcomes == ["like recorded"] * len(activities)


async def test_the_same_signed_like_sent_twice_at_once_is_stored_once_and_both_get_202(
    federation: Federation, sink: InboxSink
) -> None:
    alpha, blog_uri = await blog(federation)
    fan = sink.add_actor("fan")
    activity = like(fan, 1, blog_uri)
    inbox = alpha.url("/inbox")

    statuses = await asyncio.gather(*(sink.send(fan, inbox, activity) for _ in range(3)))

    assert statuses == [202, 202, 202]
    assert await stored(alpha) == ([activity["id"]], 1)


async def test_an_activity_the_database_refuses_gets_a_500_and_the_others_are_stored(
    federation: Federation, sink: InboxSink
) -> None:
    alpha, blog_uri = await blog(federation)
    await refuse_poisoned_activities(alpha, "inbound_activities", "activity_uri")
    fan = sink.add_actor("fan")
    poisoned = sink.add_actor("poison")
    inbox = alpha.url("/inbox")
    sends = [
        (fan, like(fan, 1, blog_uri)),
        (poisoned, like(poisoned, 1, blog_uri)),
        (fan, like(fan, 2, blog_uri)),
    ]

    statuses = await asyncio.gather(*(sink.send(actor, inbox, item) for actor, item in sends))

    # Never a 202 for what was not stored: the sender will retry it.
    assert statuses == [202, 500, 202]
    uris, work_rows = await stored(alpha)
    assert (sorted(uris), work_rows) == (sorted([sends[0][1]["id"], sends[2][1]["id"]]), 2)


async def test_a_domain_blocked_while_the_instance_runs_is_dropped_from_the_next_request(
    federation: Federation, sink: InboxSink
) -> None:
    alpha, blog_uri = await blog(federation)
    fan = sink.add_actor("fan")
    inbox = alpha.url("/inbox")
    assert await sink.send(fan, inbox, like(fan, 1, blog_uri)) == 202  # the block list is loaded

    async with alpha.services.database.transaction() as session:
        await hosts.block_domain(session, "remote.test", "spam", federation.clock.now())
    assert await sink.send(fan, inbox, like(fan, 2, blog_uri)) == 202  # accepted and dropped
    assert (await stored(alpha))[0] == [like(fan, 1, blog_uri)["id"]]

    async with alpha.services.database.transaction() as session:
        assert await hosts.unblock_domain(session, "remote.test")
    assert await sink.send(fan, inbox, like(fan, 3, blog_uri)) == 202
    assert (await stored(alpha))[0] == [like(fan, 1, blog_uri)["id"], like(fan, 3, blog_uri)["id"]]


# --- the writer itself -------------------------------------------------------------------------


async def test_activities_queued_together_are_written_in_one_transaction(
    federation: Federation, sink: InboxSink
) -> None:
    alpha, blog_uri = await blog(federation)
    fan = sink.add_actor("fan")
    writer = writer_of(alpha)
    before = writer.batches_written

    results = await asyncio.gather(*(writer.store(arrival(fan, n, blog_uri)) for n in range(20)))

    assert results == [True] * 20
    assert writer.batches_written == before + 1
    uris, work_rows = await stored(alpha)
    assert len(uris) == 20
    assert work_rows == 20


async def test_a_duplicate_within_one_batch_is_stored_once_and_reported_as_a_replay(
    federation: Federation, sink: InboxSink
) -> None:
    alpha, blog_uri = await blog(federation)
    fan = sink.add_actor("fan")
    writer = writer_of(alpha)
    first, other = arrival(fan, 1, blog_uri), arrival(fan, 2, blog_uri)

    results = await asyncio.gather(
        writer.store(first), writer.store(first), writer.store(other), writer.store(first)
    )

    assert list(results) == [True, False, True, False]
    assert await stored(alpha) == ([first.activity_id, other.activity_id], 2)
    assert await writer.store(other) is False  # and in a later batch too


async def test_a_failing_activity_fails_alone_and_the_rest_of_its_batch_is_stored(
    federation: Federation, sink: InboxSink
) -> None:
    alpha, blog_uri = await blog(federation)
    await refuse_poisoned_activities(alpha, "inbound_activities", "activity_uri")
    fan, poisoned = sink.add_actor("fan"), sink.add_actor("poison")
    writer = writer_of(alpha)
    good = [arrival(fan, n, blog_uri) for n in range(5)]

    results = await asyncio.gather(
        *(writer.store(item) for item in good[:2]),
        writer.store(arrival(poisoned, 1, blog_uri)),
        *(writer.store(item) for item in good[2:]),
        return_exceptions=True,
    )

    assert results[:2] == [True, True]
    assert results[3:] == [True, True, True]
    assert isinstance(results[2], NotStored)
    uris, work_rows = await stored(alpha)
    assert (sorted(uris), work_rows) == (sorted(item.activity_id for item in good), 5)


async def test_closing_writes_what_is_queued_and_refuses_later_deliveries(
    federation: Federation, sink: InboxSink
) -> None:
    alpha, blog_uri = await blog(federation)
    fan = sink.add_actor("fan")
    writer = writer_of(alpha)
    pending = [asyncio.create_task(writer.store(arrival(fan, n, blog_uri))) for n in range(10)]
    await asyncio.sleep(0)  # queued, not yet written

    await writer.close()

    assert len((await stored(alpha))[0]) == 10  # written before close() returned
    assert await asyncio.gather(*pending) == [True] * 10
    with pytest.raises(WriterClosed):
        await writer.store(arrival(fan, 99, blog_uri))
    # A delivery that still reaches the inbox is told to come back later, not 202-ed.
    assert await sink.send(fan, alpha.url("/inbox"), like(fan, 100, blog_uri)) == 503
    assert len((await stored(alpha))[0]) == 10
