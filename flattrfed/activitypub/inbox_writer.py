"""Group commit for the inbox: verified activities of many requests stored in one transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from flattrfed.activitypub.hosts import mark_hosts_alive
from flattrfed.clock import Clock
from flattrfed.db.models import InboundActivity
from flattrfed.db.models.work import WorkItem, WorkState
from flattrfed.db.session import Database
from flattrfed.db.statements import table_of

log = logging.getLogger(__name__)

INBOUND_KIND = "inbound"
# Settlement messages whose issuer is unreachable retry hourly: 80 attempts cover about three
# days, the same window our own deliveries retry for.
INBOUND_MAX_ATTEMPTS = 80
# One transaction holds at most this many activities: big enough that a busy inbox commits
# rarely, small enough that one statement stays well inside SQLite's parameter limit.
MAX_BATCH = 200

inbound_table = table_of(InboundActivity)
work_table = table_of(WorkItem)


class WriterClosed(Exception):
    """The instance is shutting down: the activity was not stored (the sender retries)."""


class NotStored(Exception):
    """Writing the activity failed (the error is logged); it was not stored."""


@dataclass(frozen=True)
class Arrival:
    """One verified activity waiting to be stored: what the inbox checked, and from where."""

    activity_id: str
    actor_uri: str
    type: str
    activity: dict[str, Any]
    host: str


@dataclass
class _Waiting:
    arrival: Arrival
    answer: asyncio.Future[bool]


class InboxWriter:
    """Stores verified activities in batches: each caller waits until its batch has committed.

    A request is answered 202 only after the transaction holding its activity committed, so
    nothing is acknowledged before it is durable; concurrent requests share that transaction.
    While one batch is being written, new arrivals queue and form the next batch, so under
    light load a batch is a single activity and adds no delay. When a batch fails, each of its
    activities is written again on its own, so a bad one fails alone (its request gets a 500)
    and the others are stored.
    """

    def __init__(self, database: Database, clock: Clock, *, max_batch: int = MAX_BATCH) -> None:
        self.database = database
        self.clock = clock
        self.max_batch = max_batch
        self.batches_written = 0  # transactions committed; tests read it to see the grouping
        self._queue: list[_Waiting] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def store(self, arrival: Arrival) -> bool:
        """Store `arrival` once by its id; True if stored now, False if it was already there."""
        if self._closing:
            raise WriterClosed()
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(arrival, answer))
        self._arrived.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="flattrfed-inbox-writer")
        # A sender that hangs up does not cancel the write others share: shield it.
        return await asyncio.shield(answer)

    async def close(self) -> None:
        """Refuse new arrivals, write what is queued, and stop."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        try:
            while True:
                await self._arrived.wait()
                self._arrived.clear()
                # Requests that became ready in this same turn of the event loop join the batch.
                await asyncio.sleep(0)
                while self._queue:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                    await self._write_answering(batch)
                if self._closing and not self._queue:
                    return
        finally:
            # Cancelled (the loop is going away): nobody may wait for an answer forever.
            for waiting in self._queue:
                _fail(waiting, WriterClosed())
            self._queue.clear()

    async def _write_answering(self, batch: list[_Waiting]) -> None:
        try:
            results = await self._write([waiting.arrival for waiting in batch])
        except asyncio.CancelledError:
            for waiting in batch:
                _fail(waiting, WriterClosed())
            raise
        except Exception:
            if len(batch) == 1:
                log.exception("storing an inbound activity failed")
                _fail(batch[0], NotStored(batch[0].arrival.activity_id))
                return
            log.warning("a batch of inbound activities failed; storing each on its own")
            for waiting in batch:
                await self._write_answering([waiting])
            return
        for waiting, stored in zip(batch, results, strict=True):
            if not waiting.answer.done():
                waiting.answer.set_result(stored)

    async def _write(self, arrivals: Sequence[Arrival]) -> list[bool]:
        """One transaction: the activities (once each by id), their work rows, and the senders'
        hosts resumed if they were paused. Returns, per arrival, whether it was stored now."""
        now = self.clock.now()
        first: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        for index, arrival in enumerate(arrivals):
            if arrival.activity_id in first:
                continue  # the same activity twice in one batch: stored once, the rest replays
            first[arrival.activity_id] = index
            rows.append(
                {
                    "activity_uri": arrival.activity_id,
                    "actor_uri": arrival.actor_uri,
                    "type": arrival.type,
                    "payload": arrival.activity,
                    "received_at": now,
                }
            )
        async with self.database.connect() as connection:
            stored = await _insert_activities(connection, rows)
            if stored:
                work = [
                    {
                        "kind": INBOUND_KIND,
                        "payload": {"inbound_id": row_id},
                        "dedupe_key": f"inbound:{row_id}",
                        "state": WorkState.PENDING.value,
                        "attempts": 0,
                        "max_attempts": INBOUND_MAX_ATTEMPTS,
                        "run_after": now,
                        "created_at": now,
                    }
                    for row_id in sorted(stored.values())
                ]
                await connection.execute(_insert_ignoring(connection, work_table), work)
            # Only verified activities reach here: each shows its host is up again.
            await mark_hosts_alive(connection, {arrival.host for arrival in arrivals}, now)
        self.batches_written += 1
        return [
            arrival.activity_id in stored and first[arrival.activity_id] == index
            for index, arrival in enumerate(arrivals)
        ]


def _insert_ignoring(connection: AsyncConnection, table: Any) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


async def _insert_activities(
    connection: AsyncConnection, rows: list[dict[str, Any]]
) -> dict[str, int]:
    """Insert the rows that are new; returns {activity id: row id} of those inserted."""
    if len(rows) == 1:
        statement = _insert_ignoring(connection, inbound_table).values(**rows[0])
        result = await connection.execute(
            statement.returning(inbound_table.c.id, inbound_table.c.activity_uri)
        )
    else:
        statement = _insert_ignoring(connection, inbound_table).returning(
            inbound_table.c.id, inbound_table.c.activity_uri
        )
        result = await connection.execute(statement, rows)
    return {uri: row_id for row_id, uri in result.all()}


def _fail(waiting: _Waiting, error: BaseException) -> None:
    if not waiting.answer.done():
        waiting.answer.set_exception(error)


INBOX_WRITER = web.AppKey("inbox_writer", InboxWriter)
