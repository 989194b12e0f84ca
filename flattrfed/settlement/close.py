"""The month close: staged and resumable; each donor's budget split into shares and posted.

Stages, each idempotent, each made of chunks of donors committed one by one:

1. `started`  — the run row exists (one per period, unique), holding the lock lease.
2. `snapshot` — every donor with flattrs counting in the period gets a DonorClose row with
   budget, wallet and flattrfed-split/1 frozen as of now. Recomputing later would see other
   balances, so a resumed run reads these rows instead.
3. `shares`   — one Share per counted flattr, amount q of its donor, written by one
   INSERT ... SELECT per chunk; then the local creator of every share paid to one of our
   actors that is not a thing's (a claimed identity) is filled in.
4. `posted`   — per donor one ledger transaction with a deterministic id: the wallet pays the
   fee, local creators' earnings and each peer's payable; a chunk's transactions are posted
   together (`ledger.post_many`). Replays are no-ops.
5. `done`.

The work is set-based and chunked by ranges of member ids (`chunk_members` members at a time),
so memory stays flat however many flattrs the month has, and the time grows with the number of
rows rather than with round trips. A crash anywhere, followed by another run, gives exactly the
rows and balances an uninterrupted run gives: a stage resumes after the last chunk it committed
(tests inject a crash after every stage and after chunks). Every chunk also renews the run's
lease, and a runner that lost its lease stops.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import BigInteger, and_, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from flattrfed.activitypub.actors import actor_by_uri
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.db.models import (
    ClearingRun,
    DonorClose,
    Flattr,
    LedgerAccount,
    Member,
    Share,
    Thing,
)
from flattrfed.db.session import Database
from flattrfed.db.statements import insert_ignoring_duplicates, table_of
from flattrfed.money import split_budget
from flattrfed.periods import Period
from flattrfed.settlement import ledger

log = logging.getLogger(__name__)

STAGES = ("started", "snapshot", "shares", "posted", "done")
LEASE = timedelta(minutes=30)
# Members per chunk: small enough that a chunk's rows and postings fit easily in memory and one
# chunk's transaction stays short; large enough that round trips do not dominate.
CHUNK_MEMBERS = 5_000


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


def counted_in(period: str, cutoff: datetime, flattr: Any = Flattr):  # type: ignore[no-untyped-def]
    """Flattrs that count in `period`: payable, not undone before the cutoff, clicked in the
    period (or, if they waited as pending, claimed in it). `flattr` may be an alias of Flattr."""
    return and_(
        flattr.status == "payable",
        or_(flattr.undone_at.is_(None), flattr.undone_at >= cutoff),
        or_(
            and_(flattr.period == period, flattr.counts_in_period.is_(None)),
            flattr.counts_in_period == period,
        ),
    )


def _insert(dialect: str, model: type[Any]) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table_of(model))


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
        chunk_members: int = CHUNK_MEMBERS,
    ) -> None:
        self.database = database
        self.clock = clock
        self.currency = currency
        self.grace = grace
        self.urls = urls
        self.runner_id = runner_id
        # Called with a stage name after each stage, and with "STAGE:chunk" after each chunk.
        self.crash_after = crash_after or (lambda stage: False)
        self.chunk_members = chunk_members
        self.host = urlsplit(urls.base_url).netloc

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
                await self._post(run_id)
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

    async def _run(self, run_id: int) -> ClearingRun:
        async with self.database.sessions() as session:
            run = await session.get(ClearingRun, run_id)
        assert run is not None
        return run

    async def _renew(self, session: AsyncSession, run_id: int) -> None:
        """Extend our lease in the chunk's transaction; stop if another runner took the run."""
        result = await session.execute(
            update(ClearingRun)
            .where(ClearingRun.id == run_id, ClearingRun.lease_owner == self.runner_id)
            .values(lease_expires=self.clock.now() + LEASE)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise CloseError(f"run {run_id} lost its lease to another runner; stopping")

    async def _advance(self, session: AsyncSession, run_id: int, frm: str, to: str) -> None:
        result = await session.execute(
            update(ClearingRun)
            .where(ClearingRun.id == run_id, ClearingRun.stage == frm)
            .values(stage=to)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise CloseError(f"run {run_id} is no longer at stage {frm}")

    async def _next_bound(self, after: int) -> int | None:
        """The member id that ends the chunk starting after `after`, None when none is left."""
        async with self.database.sessions() as session:
            last = await session.scalar(
                select(Member.id)
                .where(Member.id > after)
                .order_by(Member.id)
                .offset(self.chunk_members - 1)
                .limit(1)
            )
            if last is None:
                last = await session.scalar(select(func.max(Member.id)).where(Member.id > after))
        return int(last) if last is not None else None

    async def _chunks(self, after: int) -> Any:
        """(lo, hi] ranges of member ids, `chunk_members` members each, from `after` on."""
        while (hi := await self._next_bound(after)) is not None:
            yield after, hi
            after = hi

    def _chunk_done(self, stage: str) -> None:
        if self.crash_after(f"{stage}:chunk"):
            raise CrashForTest(f"{stage}:chunk")

    async def _snapshot(self, run_id: int, period: Period) -> None:
        run = await self._run(run_id)
        async with self.database.sessions() as session:
            resumed = await session.scalar(
                select(func.max(DonorClose.donor_id)).where(DonorClose.run_id == run_id)
            )
        async for lo, hi in self._chunks(int(resumed or 0)):
            async with self.database.transaction() as session:
                await self._renew(session, run_id)
                await self._snapshot_chunk(session, run, lo, hi)
            self._chunk_done("snapshot")
        async with self.database.transaction() as session:
            await self._advance(session, run_id, "started", "snapshot")

    async def _snapshot_chunk(
        self, session: AsyncSession, run: ClearingRun, lo: int, hi: int
    ) -> None:
        counts = (
            await session.execute(
                select(Flattr.donor_id, func.count(func.distinct(Flattr.target_uri)))
                .where(
                    Flattr.donor_id > lo,
                    Flattr.donor_id <= hi,
                    counted_in(run.period, run.cutoff),
                )
                .group_by(Flattr.donor_id)
            )
        ).all()
        if not counts:
            return
        budgets = dict(
            (
                await session.execute(
                    select(Member.id, Member.monthly_budget_minor).where(
                        Member.id > lo, Member.id <= hi
                    )
                )
            ).all()
        )
        wallets: dict[int, int] = {}
        for member_id, code, balance in await session.execute(
            select(LedgerAccount.member_id, LedgerAccount.code, LedgerAccount.balance_minor).where(
                LedgerAccount.member_id > lo, LedgerAccount.member_id <= hi
            )
        ):
            if member_id is not None and code == ledger.wallet(member_id):
                wallets[member_id] = -int(balance)
        rows = []
        for donor_id, things in sorted(counts):
            budget = budgets.get(donor_id) or 0
            wallet = wallets.get(donor_id, 0)
            split = split_budget(budget, max(wallet, 0), run.fee_bp, int(things))
            rows.append(
                {
                    "run_id": run.id,
                    "donor_id": donor_id,
                    "budget_minor": budget,
                    "wallet_minor": wallet,
                    "spent_minor": split.spent_minor,
                    "fee_minor": split.fee_minor,
                    "share_minor": split.share_minor,
                    "things": split.things,
                    "carry_minor": split.carry_minor,
                }
            )
        await session.execute(
            _insert(self.database.dialect, DonorClose).on_conflict_do_nothing(), rows
        )

    async def _shares(self, run_id: int, period: Period) -> None:
        run = await self._run(run_id)
        async with self.database.sessions() as session:
            resumed = await session.scalar(
                select(func.max(Share.donor_id)).where(Share.run_id == run_id)
            )
        async for lo, hi in self._chunks(int(resumed or 0)):
            async with self.database.transaction() as session:
                await self._renew(session, run_id)
                await self._shares_chunk(session, run, lo, hi)
            self._chunk_done("shares")
        async with self.database.transaction() as session:
            await self._renew(session, run_id)
            await self._claimed_creators(session, run_id)
            await self._advance(session, run_id, "snapshot", "shares")

    async def _shares_chunk(
        self, session: AsyncSession, run: ClearingRun, lo: int, hi: int
    ) -> None:
        """One share per (donor, target): the earliest counted flattr of the pair carries it."""
        earlier = aliased(Flattr)
        chosen = (
            select(
                literal(run.id, BigInteger),
                Flattr.donor_id,
                Flattr.id,
                Flattr.like_uri,
                Flattr.target_uri,
                Flattr.payee_uri,
                Flattr.payee_host,
                Thing.owner_id,
                DonorClose.share_minor,
            )
            .select_from(Flattr)
            .join(
                DonorClose,
                and_(DonorClose.run_id == run.id, DonorClose.donor_id == Flattr.donor_id),
            )
            .outerjoin(Thing, Thing.id == Flattr.thing_id)
            .where(
                Flattr.donor_id > lo,
                Flattr.donor_id <= hi,
                counted_in(run.period, run.cutoff),
                ~exists().where(
                    earlier.donor_id == Flattr.donor_id,
                    earlier.target_uri == Flattr.target_uri,
                    earlier.id < Flattr.id,
                    counted_in(run.period, run.cutoff, earlier),
                ),
            )
        )
        columns = [
            "run_id",
            "donor_id",
            "flattr_id",
            "like_uri",
            "target_uri",
            "payee_uri",
            "payee_host",
            "creator_id",
            "amount_minor",
        ]
        await session.execute(
            _insert(self.database.dialect, Share)
            .from_select(columns, chosen)
            .on_conflict_do_nothing()
        )

    async def _claimed_creators(self, session: AsyncSession, run_id: int) -> None:
        """Fill in the member of ours for shares paid to one of our actors that is not a
        thing's flattr (a member who claimed the identity: the payee is the member's actor)."""
        prefix = self.urls.base_url + "/"
        ours = (
            await session.scalars(
                select(Share.payee_uri)
                .where(
                    Share.payee_host == self.host,
                    Share.run_id == run_id,
                    Share.creator_id.is_(None),
                    func.substr(Share.payee_uri, 1, len(prefix)) == prefix,
                )
                .distinct()
            )
        ).all()
        for payee_uri in ours:
            creator_id = await self._local_creator(session, payee_uri)
            if creator_id is None:
                # Never book a payable to ourselves: stop rather than misplace money.
                raise CloseError(f"no local creator for {payee_uri}")
            await session.execute(
                update(Share)
                .where(
                    Share.run_id == run_id,
                    Share.creator_id.is_(None),
                    Share.payee_uri == payee_uri,
                )
                .values(creator_id=creator_id)
            )

    async def _local_creator(self, session: AsyncSession, payee_uri: str) -> int | None:
        actor = await actor_by_uri(session, self.urls, payee_uri)
        if actor is None:
            return None
        if actor.member_id is not None:
            return actor.member_id
        if actor.thing_id is not None:
            thing = await session.get(Thing, actor.thing_id)
            return thing.owner_id if thing is not None else None
        return None

    async def _post(self, run_id: int) -> None:
        run = await self._run(run_id)
        # Chunks already posted are found by their txids and skipped inside post_many.
        async for lo, hi in self._chunks(0):
            async with self.database.transaction() as session:
                await self._renew(session, run_id)
                await self._post_chunk(session, run, lo, hi)
            self._chunk_done("posted")
        async with self.database.transaction() as session:
            await self._advance(session, run_id, "shares", "posted")

    async def _post_chunk(self, session: AsyncSession, run: ClearingRun, lo: int, hi: int) -> None:
        closes = (
            await session.execute(
                select(
                    DonorClose.donor_id,
                    DonorClose.fee_minor,
                    DonorClose.share_minor,
                    DonorClose.things,
                )
                .where(
                    DonorClose.run_id == run.id,
                    DonorClose.donor_id > lo,
                    DonorClose.donor_id <= hi,
                    DonorClose.things > 0,
                    DonorClose.spent_minor > 0,
                )
                .order_by(DonorClose.donor_id)
            )
        ).all()
        if not closes:
            return
        credits: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        sums = await session.execute(
            select(
                Share.donor_id,
                Share.creator_id,
                Share.payee_host,
                func.sum(Share.amount_minor),
            )
            .where(Share.run_id == run.id, Share.donor_id > lo, Share.donor_id <= hi)
            .group_by(Share.donor_id, Share.creator_id, Share.payee_host)
        )
        for donor_id, creator_id, payee_host, amount in sums:
            if creator_id is not None:
                # Local creators: the cash is already here, so earnings are available.
                code = ledger.earnings_available(int(creator_id))
            elif payee_host == self.host:
                # Never book a payable to ourselves: stop rather than misplace money.
                raise CloseError(f"a share of member {donor_id} is for {payee_host} but no member")
            else:
                code = ledger.peer_payable(payee_host)
            credits[int(donor_id)][code] -= int(amount)
        entries = []
        now = self.clock.now()
        for donor_id, fee_minor, share_minor, things in closes:
            debit = fee_minor + share_minor * things
            if debit == 0:
                continue  # e.g. a wallet of 5 cents over 10 things: q = 0, nothing moves
            donor_credits = credits.get(donor_id, {})
            if fee_minor:
                donor_credits = {**donor_credits, ledger.FEES: -fee_minor}
            postings = [
                (ledger.wallet(donor_id), debit),
                *((code, amount) for code, amount in donor_credits.items() if amount),
            ]
            entries.append(
                ledger.Entry(
                    txid=ledger.close_txid(run.period, donor_id),
                    kind="close",
                    postings=postings,
                    memo=f"flattrfed-split/1 for {run.period}",
                )
            )
        await ledger.post_many(session, entries, currency=run.currency, now=now)

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
            donors = await session.scalar(
                select(func.count()).select_from(DonorClose).where(DonorClose.run_id == run_id)
            )
            shares = await session.scalar(
                select(func.count()).select_from(Share).where(Share.run_id == run_id)
            )
        return CloseResult(run.period, run.stage, int(donors or 0), int(shares or 0))
