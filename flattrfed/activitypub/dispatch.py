"""Routes stored inbound activities to the handlers registered for their type, once each."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.reading import activity_type, id_of
from flattrfed.clock import Clock
from flattrfed.db.models import InboundActivity
from flattrfed.db.session import Database
from flattrfed.db.statements import table_of
from flattrfed.worker import PermanentFailure
from flattrfed.worker.loop import Batch, Job

log = logging.getLogger(__name__)


class Ignored(Exception):
    """A handler decided the activity has no effect here; the reason is kept on the row."""


@dataclass(frozen=True)
class Inbound:
    """A verified activity as a handler sees it: the signer is `actor_uri`, nothing else is."""

    row_id: int
    activity: dict[str, Any]
    actor_uri: str
    type: str

    @property
    def object(self) -> Any:
        return self.activity.get("object")

    @property
    def object_id(self) -> str | None:
        return id_of(self.activity.get("object"))


InboundHandler = Callable[[Inbound], Awaitable[str]]
# Handles many activities inside the caller's transaction, without network access; returns
# each one's outcome (or the Ignored it raised) in order. It must write nothing for an
# activity it answers with Ignored.
BulkHandler = Callable[[AsyncSession, list[Inbound]], Awaitable[list["str | Ignored"]]]

inbound_table = table_of(InboundActivity)


EMBEDDING_TYPES = frozenset({"Undo", "Offer", "Accept", "Reject", "Update"})


def dispatch_keys(activity_kind: str, activity: dict[str, Any]) -> list[str]:
    """Handler keys to try, most specific first: `Undo:Like`, `Offer:SettlementStatement`,
    `Accept:StatementResponse`, then the plain type (`Accept` of a Follow, say)."""
    embedded = activity.get("object")
    if activity_kind in EMBEDDING_TYPES and isinstance(embedded, dict):
        fallback = "Undo:*" if activity_kind == "Undo" else activity_kind
        return [f"{activity_kind}:{activity_type(embedded.get('type'))}", fallback]
    if activity_kind == "Undo":
        return ["Undo:*"]
    return [activity_kind]


def dispatch_key(activity_kind: str, activity: dict[str, Any]) -> str:
    return dispatch_keys(activity_kind, activity)[0]


class Dispatcher:
    """The registry app.py fills; activitypub itself knows nothing of flattrs or money."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock
        self.handlers: dict[str, InboundHandler] = {}
        self.bulk_handlers: dict[str, BulkHandler] = {}

    def register(
        self, key: str, handler: InboundHandler, *, bulk: BulkHandler | None = None
    ) -> None:
        """`handler` runs one activity in its own transactions; `bulk`, if given, runs many in
        the worker's batch transaction (it must touch nothing but the database)."""
        self.handlers[key] = handler
        if bulk is not None:
            self.bulk_handlers[key] = bulk
        else:
            self.bulk_handlers.pop(key, None)

    def _handler_key(self, kind: str, activity: dict[str, Any]) -> str | None:
        return next((key for key in dispatch_keys(kind, activity) if key in self.handlers), None)

    async def handle_batch(self, batch: Batch) -> None:
        """A claimed batch of inbound rows: those with bulk handlers (Likes, Undos of Likes) in
        one transaction, which also marks them processed; the others one by one.

        If the shared transaction fails, nothing of it was written, and its activities are run
        again one by one like the others, so a bad one fails alone.
        """
        wanted = {int(job.payload["inbound_id"]): job for job in batch.jobs}
        async with self.database.connect() as connection:
            found = {
                row.id: row
                for row in await connection.execute(
                    select(
                        inbound_table.c.id,
                        inbound_table.c.actor_uri,
                        inbound_table.c.type,
                        inbound_table.c.payload,
                        inbound_table.c.processed_at,
                    ).where(inbound_table.c.id.in_(sorted(wanted)))
                )
            }
        together: list[tuple[Job, Inbound, str]] = []
        alone: list[Job] = []
        for row_id, job in wanted.items():
            row = found.get(row_id)
            if row is None:
                batch.failed(job, PermanentFailure("inbound activity row is gone"))
            elif row.processed_at is not None:
                batch.succeeded(job)
            else:
                key = self._handler_key(row.type, row.payload)
                if key is not None and key in self.bulk_handlers:
                    inbound = Inbound(row.id, row.payload, row.actor_uri, row.type)
                    together.append((job, inbound, key))
                else:
                    alone.append(job)
        if together:
            try:
                await self._handle_together([(inbound, key) for _job, inbound, key in together])
            except Exception:
                log.exception("a batch of inbound activities failed; running each on its own")
                alone.extend(job for job, _inbound, _key in together)
            else:
                for job, _inbound, _key in together:
                    batch.succeeded(job)
        for job in sorted(alone, key=lambda job: job.id):
            if not batch.may_start(job):
                continue
            try:
                await self.handle(job)
            except Exception as error:
                batch.failed(job, error)
            else:
                batch.succeeded(job)

    async def _handle_together(self, items: list[tuple[Inbound, str]]) -> None:
        outcomes: list[dict[str, Any]] = []
        async with self.database.transaction() as session:
            await _begin_writing(session)
            start = 0
            while start < len(items):
                # Runs of the same handler key, in arrival order: a Like and its Undo in one
                # batch are applied in the order they came.
                key = items[start][1]
                end = start
                while end < len(items) and items[end][1] == key:
                    end += 1
                inbounds = [inbound for inbound, _key in items[start:end]]
                results = await self.bulk_handlers[key](session, inbounds)
                for inbound, result in zip(inbounds, results, strict=True):
                    text = f"ignored: {result}" if isinstance(result, Ignored) else result
                    outcomes.append({"row_id": inbound.row_id, "text": text[:255]})
                start = end
            # Most activities of a batch share their outcome ("like recorded"): one UPDATE for
            # each distinct outcome.
            by_outcome: dict[str, list[int]] = {}
            for item in outcomes:
                by_outcome.setdefault(item["text"], []).append(item["row_id"])
            now = self.clock.now()
            for text, row_ids in by_outcome.items():
                await session.execute(
                    update(inbound_table)
                    .where(inbound_table.c.id.in_(row_ids))
                    .values(outcome=text, processed_at=now)
                )
        log.info("inbound activities processed together", extra={"count": len(outcomes)})

    async def handle(self, job: Job) -> None:
        async with self.database.sessions() as session:
            row = await session.get(InboundActivity, int(job.payload["inbound_id"]))
        if row is None:
            raise PermanentFailure("inbound activity row is gone")
        if row.processed_at is not None:
            return
        inbound = Inbound(row.id, row.payload, row.actor_uri, row.type)
        keys = dispatch_keys(row.type, row.payload)
        handler = next((self.handlers[key] for key in keys if key in self.handlers), None)
        if handler is None:
            outcome = f"ignored: no handler for {keys[0]}"
        else:
            try:
                outcome = await handler(inbound)
            except Ignored as why:
                outcome = f"ignored: {why}"
        async with self.database.transaction() as session:
            await session.execute(
                update(InboundActivity)
                .where(InboundActivity.id == row.id)
                .values(outcome=outcome[:255], processed_at=self.clock.now())
            )
        log.info("inbound activity processed", extra={"type": row.type, "outcome": outcome})


async def _begin_writing(session: AsyncSession) -> None:
    """On SQLite, take the write lock when the transaction starts. A transaction that reads
    first and writes later is refused at once, without waiting (SQLITE_BUSY_SNAPSHOT), when
    another connection committed in between, as the inbox does all the time."""
    if session.get_bind().dialect.name == "sqlite":
        connection = await session.connection()
        await connection.exec_driver_sql("BEGIN IMMEDIATE")
