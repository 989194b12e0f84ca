"""The figures a member's dashboard shows: wallet, budget, this month's flattrs and their shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.db.models import DepositRequest, Flattr, LedgerAccount, Member
from flattrfed.db.statements import table_of
from flattrfed.flattring.flattrs import PAYABLE, PENDING
from flattrfed.flattring.policy import Policy
from flattrfed.money import Split, split_budget
from flattrfed.periods import Period
from flattrfed.settlement import ledger

PER_PAGE = 50
HISTORY_MONTHS = 24


@dataclass(frozen=True)
class FlattrLine:
    id: int
    target_uri: str
    payee_uri: str
    status: str
    period: str
    projected_share_minor: int


@dataclass(frozen=True)
class Dashboard:
    """All amounts are integers in minor units of `currency`.

    `flattrs` and `pending` hold one page each (`page`, `pending_page`, PER_PAGE lines);
    `flattr_count` and `pending_count` are the totals the pages are cut from.
    """

    currency: str
    period: str
    wallet_minor: int
    budget_minor: int | None
    planned_minor: int  # min(budget, wallet): what the close will spend at most
    split: Split
    flattrs: list[FlattrLine]
    pending: list[FlattrLine]
    deposited_minor: int
    earnings_pending_minor: int
    earnings_available_minor: int
    history: list[dict[str, int | str]] = field(default_factory=list)
    flattr_count: int = 0
    pending_count: int = 0
    page: int = 1
    pending_page: int = 1
    per_page: int = PER_PAGE

    @property
    def pages(self) -> int:
        return max(1, -(-self.flattr_count // self.per_page))

    @property
    def pending_pages(self) -> int:
        return max(1, -(-self.pending_count // self.per_page))


def counts_this_period(period: str) -> ColumnElement[bool]:
    """Flattrs that count in `period`: clicked in it, or claimed in it after waiting."""
    return or_(
        (Flattr.period == period) & Flattr.counts_in_period.is_(None),
        Flattr.counts_in_period == period,
    )


async def member_dashboard(
    session: AsyncSession,
    member: Member,
    policy: Policy,
    currency: str,
    now: datetime,
    *,
    page: int = 1,
    pending_page: int = 1,
) -> Dashboard:
    """The dashboard's figures: totals in SQL, one page of each flattr list, no per-row queries.

    A page number past the last page shows the last page.
    """
    period = str(Period.of(now))
    flattrs = table_of(Flattr)
    accounts = table_of(LedgerAccount)
    # Three branches, each a prefix of the (donor, status, counts_in_period, period, undone)
    # index, so every count reads index entries only.
    clicked = _mine(member.id, PAYABLE) & flattrs.c.counts_in_period.is_(None)
    clicked &= flattrs.c.period == period
    claimed = _mine(member.id, PAYABLE) & (flattrs.c.counts_in_period == period)
    waiting = _mine(member.id, PENDING)
    # Every figure in one round trip: each is a scalar subquery of one indexed lookup.
    balances = [
        select(-accounts.c.balance_minor).where(accounts.c.code == code).scalar_subquery()
        for code in (
            ledger.wallet(member.id),
            ledger.earnings_pending(member.id),
            ledger.earnings_available(member.id),
        )
    ]
    deposited_query = (
        select(func.coalesce(func.sum(DepositRequest.amount_minor), 0))
        .where(DepositRequest.member_id == member.id, DepositRequest.state == "credited")
        .scalar_subquery()
    )
    figures = (
        await session.execute(
            select(
                *(
                    select(func.count()).select_from(flattrs).where(branch).scalar_subquery()
                    for branch in (clicked, claimed, waiting)
                ),
                deposited_query,
                *balances,
            )
        )
    ).one()
    clicked_count, claimed_count, pending_count, deposited, *owed = (int(n or 0) for n in figures)
    wallet_minor, earnings_pending, earnings_available = owed
    payable_count = clicked_count + claimed_count
    budget = member.monthly_budget_minor
    split = split_budget(budget or 0, max(wallet_minor, 0), policy.fee_bp, payable_count)
    page = _clamp(page, payable_count)
    pending_page = _clamp(pending_page, pending_count)
    # Claimed flattrs are rare; without them the page is read in index order, unsorted.
    this_month = (clicked | claimed) if claimed_count else clicked
    lines = await _page(session, this_month, page, split.share_minor) if payable_count else []
    pending = await _page(session, waiting, pending_page, 0) if pending_count else []
    history_rows = (
        await session.execute(
            select(flattrs.c.period, func.count())
            .where((flattrs.c.donor_id == member.id) & flattrs.c.undone_at.is_(None))
            .group_by(flattrs.c.period)
            .order_by(flattrs.c.period.desc())
            .limit(HISTORY_MONTHS)
        )
    ).all()
    return Dashboard(
        currency=currency,
        period=period,
        wallet_minor=wallet_minor,
        budget_minor=budget,
        planned_minor=min(budget or 0, max(wallet_minor, 0)),
        split=split,
        flattrs=lines,
        pending=pending,
        deposited_minor=int(deposited or 0),
        earnings_pending_minor=earnings_pending,
        earnings_available_minor=earnings_available,
        history=[{"period": p, "flattrs": int(n)} for p, n in history_rows],
        flattr_count=payable_count,
        pending_count=pending_count,
        page=page,
        pending_page=pending_page,
    )


def _mine(member_id: int, status: str) -> ColumnElement[bool]:
    flattrs = table_of(Flattr)
    return (
        (flattrs.c.donor_id == member_id)
        & (flattrs.c.status == status)
        & flattrs.c.undone_at.is_(None)
    )


async def _page(
    session: AsyncSession, where: ColumnElement[bool], page: int, share_minor: int
) -> list[FlattrLine]:
    flattrs = table_of(Flattr)
    rows = (
        await session.execute(
            select(
                flattrs.c.id,
                flattrs.c.target_uri,
                flattrs.c.payee_uri,
                flattrs.c.status,
                flattrs.c.period,
            )
            .where(where)
            .order_by(flattrs.c.id)
            .limit(PER_PAGE)
            .offset((page - 1) * PER_PAGE)
        )
    ).all()
    return [FlattrLine(*row, share_minor) for row in rows]


def _clamp(page: int, count: int) -> int:
    last = max(1, -(-count // PER_PAGE))
    return min(max(page, 1), last)
