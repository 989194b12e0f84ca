"""Starts each month's close automatically: a work row due at cutoff + grace, one per period."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.config import Settings
from flattrfed.db.session import Database
from flattrfed.flattring.policy import current_policy
from flattrfed.periods import Period
from flattrfed.settlement.close import CloseResult, MonthClose
from flattrfed.worker import enqueue
from flattrfed.worker.loop import Job

log = logging.getLogger(__name__)

CLOSE_KIND = "month-close"


WATCH_KIND = "settlement-watch"


class SettlementWatch:
    """Once a day: payments not confirmed by their deadline open an investigation."""

    def __init__(self, database: Database, clock: Clock, overdue: Callable[[], Awaitable[int]]):
        self.database = database
        self.clock = clock
        self.overdue = overdue

    async def schedule(self) -> None:
        tomorrow = (self.clock.now() + timedelta(days=1)).replace(
            hour=6, minute=0, second=0, microsecond=0
        )
        async with self.database.transaction() as session:
            await enqueue(
                session,
                kind=WATCH_KIND,
                payload={},
                now=self.clock.now(),
                run_after=tomorrow,
                dedupe_key=f"{WATCH_KIND}:{tomorrow.date().isoformat()}",
            )

    async def handle(self, job: Job) -> None:
        await self.schedule()
        opened = await self.overdue()
        if opened:
            log.warning("settlements overdue; investigations opened", extra={"count": opened})


class CloseScheduler:
    """Queues the close of every period and runs it when due (on whichever worker claims it).

    The work row's dedupe key makes scheduling idempotent across restarts and processes; the
    close's own lease makes running it twice harmless.
    """

    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: Settings,
        before_close: Callable[[], Awaitable[None]] | None = None,
        after_close: Callable[[Period], Awaitable[object]] | None = None,
    ) -> None:
        self.database = database
        self.clock = clock
        self.settings = settings
        self.grace = timedelta(hours=settings.close_grace_hours)
        # Claims found and pending flattrs expired just before the close (app.py wires it).
        self.before_close = before_close
        # Statements to peers go out once the close is done (app.py wires the exchange).
        self.after_close = after_close

    def closer(self, runner_id: str = "scheduler") -> MonthClose:
        return MonthClose(
            self.database,
            self.clock,
            currency=self.settings.currency,
            grace=self.grace,
            urls=LocalUrls(self.settings.base_url),
            runner_id=runner_id,
        )

    async def schedule(self, period: Period) -> None:
        async with self.database.transaction() as session:
            await enqueue(
                session,
                kind=CLOSE_KIND,
                payload={"period": str(period)},
                now=self.clock.now(),
                run_after=period.closes_at(self.grace),
                dedupe_key=f"{CLOSE_KIND}:{period}",
                # Statements to a peer that is down are retried hourly: about four days.
                max_attempts=100,
            )

    async def schedule_open_periods(self) -> None:
        """At start-up: the current month, and the previous one in case its close was missed."""
        current = Period.of(self.clock.now())
        await self.schedule(current.previous())
        await self.schedule(current)

    async def close(self, period: Period, runner_id: str = "scheduler") -> CloseResult:
        async with self.database.transaction() as session:
            policy = await current_policy(session, self.settings, self.clock.now())
        return await self.closer(runner_id).run(period, policy.fee_bp)

    async def handle(self, job: Job) -> None:
        period = Period.parse(str(job.payload["period"]))
        # Queue next month first: a close that keeps failing must not stop the months after it.
        await self.schedule(period.next())
        if self.before_close is not None:
            await self.before_close()
        result = await self.close(period, runner_id=f"worker-job-{job.id}")
        log.info(
            "month closed",
            extra={"period": result.period, "donors": result.donors, "shares": result.shares},
        )
        if self.after_close is not None:
            await self.after_close(period)
