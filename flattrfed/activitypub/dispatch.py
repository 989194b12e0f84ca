"""Routes stored inbound activities to the handlers registered for their type, once each."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from flattrfed.activitypub.reading import activity_type, id_of
from flattrfed.clock import Clock
from flattrfed.db.models import InboundActivity
from flattrfed.db.session import Database
from flattrfed.worker import PermanentFailure
from flattrfed.worker.loop import Job

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

    def register(self, key: str, handler: InboundHandler) -> None:
        self.handlers[key] = handler

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
