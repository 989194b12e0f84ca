"""The month close: staged and resumable; each donor's budget split into shares and posted.

Stages, each idempotent, each committed before the next begins:

1. `started`  — the run row exists (one per period, unique), holding the lock lease.
2. `snapshot` — every donor with flattrs counting in the period gets a DonorClose row with
   budget, wallet and flattrfed-split/1 frozen as of now. Recomputing later would see other
   balances, so a resumed run reads these rows instead.
3. `shares`   — one Share per counted flattr, amount q of its donor.
4. `posted`   — per donor one ledger transaction with a deterministic id: the wallet pays the
   fee, local creators' earnings and each peer's payable. Replays are no-ops.
5. `done`.

A crash anywhere, followed by another run, gives exactly the rows and balances an
uninterrupted run gives (tests inject a crash after every stage).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_by_uri
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.db.models import (
    ClearingRun,
    DonorClose,
    Flattr,
    Member,
    Share,
    Thing,
)
from flattrfed.db.session import Database
from flattrfed.db.statements import insert_ignoring_duplicates
from flattrfed.money import split_budget
from flattrfed.periods import Period
from flattrfed.settlement import ledger

log = logging.getLogger(__name__)

STAGES = ("started", "snapshot", "shares", "posted", "done")
LEASE = timedelta(minutes=30)


class CloseError(Exception):
    """The close cannot run now; the message says why (too early, already running)."""


class CrashForTest(Exception):
    """Raised by the test hook to simulate a crash between stages."""


@dataclass(frozen=True)
class CloseResult:
    period: str
    stage: str
    donors: int
    shares: int


def counted_in(period: str, cutoff: datetime):  # type: ignore[no-untyped-def]
    """Flattrs that count in `period`: payable, not undone before the cutoff, clicked in the
    period (or, if they waited as pending, claimed in it)."""
    return and_(
        Flattr.status == "payable",
        or_(Flattr.undone_at.is_(None), Flattr.undone_at >= cutoff),
        or_(
            and_(Flattr.period == period, Flattr.counts_in_period.is_(None)),
            Flattr.counts_in_period == period,
        ),
    )


class MonthClose:
    """Runs the close of one period against one instance's database."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        currency: str,
        grace: timedelta,
        urls: LocalUrls,
        runner_id: str = "close",
        crash_after: Callable[[str], bool] | None = None,
    ) -> None:
        self.database = database
        self.clock = clock
        self.currency = currency
        self.grace = grace
        self.urls = urls
        self.runner_id = runner_id
        self.crash_after = crash_after or (lambda stage: False)

    async def run(self, period: Period, fee_bp: int) -> CloseResult:
        now = self.clock.now()
        if now < period.closes_at(self.grace):
            raise CloseError(
                f"{period} can be closed from {period.closes_at(self.grace).isoformat()} "
                "(cutoff plus the grace window for late Likes)"
            )
        run_id = await self._acquire(period, fee_bp, now)
        stage = await self._stage(run_id)
        while stage != "done":
            if stage == "started":
                await self._snapshot(run_id, period)
            elif stage == "snapshot":
                await self._shares(run_id, period)
            elif stage == "shares":
                await self._post(run_id, period)
            elif stage == "posted":
                await self._finish(run_id)
            stage = await self._stage(run_id)
            if self.crash_after(stage):
                raise CrashForTest(stage)
        return await self.result(run_id)

    async def _acquire(self, period: Period, fee_bp: int, now: datetime) -> int:
        """Create or take over the period's run; refuse while another runner holds the lease."""
        async with self.database.transaction() as session:
            await session.execute(
                insert_ignoring_duplicates(
                    self.database.dialect,
                    ClearingRun,
                    period=str(period),
                    stage="started",
                    cutoff=period.end,
                    fee_bp=fee_bp,
                    currency=self.currency,
                    started_at=now,
                )
            )
        async with self.database.transaction() as session:
            result = await session.execute(
                update(ClearingRun)
                .where(
                    ClearingRun.period == str(period),
                    ClearingRun.stage != "done",
                    or_(
                        ClearingRun.lease_expires.is_(None),
                        ClearingRun.lease_expires < now,
                        ClearingRun.lease_owner == self.runner_id,
                    ),
                )
                .values(lease_owner=self.runner_id, lease_expires=now + LEASE)
                .returning(ClearingRun.id)
            )
            run_id = result.scalar_one_or_none()
            if run_id is not None:
                return int(run_id)
            run = await session.scalar(select(ClearingRun).where(ClearingRun.period == str(period)))
        assert run is not None
        if run.stage == "done":
            return run.id  # already closed: the loop does nothing and reports the result
        raise CloseError(f"the close of {period} is running elsewhere ({run.lease_owner})")

    async def _stage(self, run_id: int) -> str:
        async with self.database.sessions() as session:
            run = await session.get(ClearingRun, run_id)
        assert run is not None
        return run.stage

    async def _advance(self, session: AsyncSession, run_id: int, frm: str, to: str) -> None:
        result = await session.execute(
            update(ClearingRun)
            .where(ClearingRun.id == run_id, ClearingRun.stage == frm)
            .values(stage=to)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise CloseError(f"run {run_id} is no longer at stage {frm}")

    async def _snapshot(self, run_id: int, period: Period) -> None:
        async with self.database.transaction() as session:
            run = await session.get(ClearingRun, run_id)
            assert run is not None
            counts: dict[int, int] = defaultdict(int)
            rows = await session.execute(
                select(Flattr.donor_id, Flattr.target_uri).where(
                    counted_in(str(period), run.cutoff)
                )
            )
            targets: dict[int, set[str]] = defaultdict(set)
            for donor_id, target_uri in rows:
                targets[donor_id].add(target_uri)
            for donor_id, distinct in targets.items():
                counts[donor_id] = len(distinct)
            for donor_id in sorted(counts):
                donor = await session.get(Member, donor_id)
                assert donor is not None
                wallet = await ledger.owed_to_member(session, ledger.wallet(donor_id))
                split = split_budget(
                    donor.monthly_budget_minor or 0, max(wallet, 0), run.fee_bp, counts[donor_id]
                )
                await session.execute(
                    insert_ignoring_duplicates(
                        self.database.dialect,
                        DonorClose,
                        run_id=run_id,
                        donor_id=donor_id,
                        budget_minor=donor.monthly_budget_minor or 0,
                        wallet_minor=wallet,
                        spent_minor=split.spent_minor,
                        fee_minor=split.fee_minor,
                        share_minor=split.share_minor,
                        things=split.things,
                        carry_minor=split.carry_minor,
                    )
                )
            await self._advance(session, run_id, "started", "snapshot")

    async def _shares(self, run_id: int, period: Period) -> None:
        async with self.database.transaction() as session:
            run = await session.get(ClearingRun, run_id)
            assert run is not None
            closes = {
                row.donor_id: row
                for row in (
                    await session.scalars(select(DonorClose).where(DonorClose.run_id == run_id))
                ).all()
            }
            flattrs = (
                await session.scalars(
                    select(Flattr).where(counted_in(str(period), run.cutoff)).order_by(Flattr.id)
                )
            ).all()
            seen: set[tuple[int, str]] = set()
            for flattr in flattrs:
                close = closes.get(flattr.donor_id)
                key = (flattr.donor_id, flattr.target_uri)
                if close is None or key in seen:
                    continue
                seen.add(key)
                await session.execute(
                    insert_ignoring_duplicates(
                        self.database.dialect,
                        Share,
                        run_id=run_id,
                        donor_id=flattr.donor_id,
                        flattr_id=flattr.id,
                        like_uri=flattr.like_uri,
                        target_uri=flattr.target_uri,
                        payee_uri=flattr.payee_uri,
                        payee_host=flattr.payee_host,
                        creator_id=await self._local_creator(session, flattr),
                        amount_minor=close.share_minor,
                    )
                )
            await self._advance(session, run_id, "snapshot", "shares")

    async def _local_creator(self, session: AsyncSession, flattr: Flattr) -> int | None:
        """The member of ours the share is for: a thing's owner, or a member who claimed the
        identity the flattr was for (then the payee is that member's own actor)."""
        if flattr.thing_id is not None:
            thing = await session.get(Thing, flattr.thing_id)
            return thing.owner_id if thing is not None else None
        actor = await actor_by_uri(session, self.urls, flattr.payee_uri)
        if actor is None:
            return None
        if actor.member_id is not None:
            return actor.member_id
        if actor.thing_id is not None:
            thing = await session.get(Thing, actor.thing_id)
            return thing.owner_id if thing is not None else None
        return None

    async def _post(self, run_id: int, period: Period) -> None:
        async with self.database.transaction() as session:
            run = await session.get(ClearingRun, run_id)
            assert run is not None
            closes = (
                await session.scalars(
                    select(DonorClose)
                    .where(DonorClose.run_id == run_id)
                    .order_by(DonorClose.donor_id)
                )
            ).all()
            shares = (await session.scalars(select(Share).where(Share.run_id == run_id))).all()
            by_donor: dict[int, list[Share]] = defaultdict(list)
            for share in shares:
                by_donor[share.donor_id].append(share)
            for close in closes:
                if close.things == 0 or close.spent_minor == 0:
                    continue
                credits: dict[str, int] = defaultdict(int)
                for share in by_donor[close.donor_id]:
                    if share.creator_id is not None:
                        # Local creators: the cash is already here, so earnings are available.
                        credits[ledger.earnings_available(share.creator_id)] -= share.amount_minor
                    elif self.urls.owns(share.payee_uri):
                        # Never book a payable to ourselves: stop rather than misplace money.
                        raise CloseError(f"no local creator for {share.payee_uri}")
                    else:
                        credits[ledger.peer_payable(share.payee_host)] -= share.amount_minor
                if close.fee_minor:
                    credits[ledger.FEES] -= close.fee_minor
                debit = close.fee_minor + close.share_minor * close.things
                if debit == 0:
                    continue  # e.g. a wallet of 5 cents over 10 things: q = 0, nothing moves
                nonzero = [(code, amount) for code, amount in credits.items() if amount]
                postings = [(ledger.wallet(close.donor_id), debit), *nonzero]
                await ledger.post(
                    session,
                    txid=ledger.close_txid(run.period, close.donor_id),
                    kind="close",
                    postings=postings,
                    currency=run.currency,
                    memo=f"flattrfed-split/1 for {run.period}",
                    now=self.clock.now(),
                )
            await self._advance(session, run_id, "shares", "posted")

    async def _finish(self, run_id: int) -> None:
        async with self.database.transaction() as session:
            await self._advance(session, run_id, "posted", "done")
            await session.execute(
                update(ClearingRun)
                .where(ClearingRun.id == run_id)
                .values(finished_at=self.clock.now(), lease_owner=None, lease_expires=None)
            )

    async def result(self, run_id: int) -> CloseResult:
        async with self.database.sessions() as session:
            run = await session.get(ClearingRun, run_id)
            assert run is not None
            donors = len(
                (
                    await session.scalars(select(DonorClose.id).where(DonorClose.run_id == run_id))
                ).all()
            )
            shares = len(
                (await session.scalars(select(Share.id).where(Share.run_id == run_id))).all()
            )
        return CloseResult(run.period, run.stage, int(donors or 0), int(shares or 0))
