"""The figures a member's dashboard shows: wallet, budget, this month's flattrs and their shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.db.models import DepositRequest, Flattr, Member
from flattrfed.flattring.flattrs import PAYABLE, PENDING
from flattrfed.flattring.policy import Policy
from flattrfed.money import Split, split_budget
from flattrfed.periods import Period
from flattrfed.settlement import ledger


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
    """All amounts are integers in minor units of `currency`."""

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


def counts_this_period(period: str):  # type: ignore[no-untyped-def]
    """Flattrs that count in `period`: clicked in it, or claimed in it after waiting."""
    return or_(
        (Flattr.period == period) & Flattr.counts_in_period.is_(None),
        Flattr.counts_in_period == period,
    )


async def member_dashboard(
    session: AsyncSession, member: Member, policy: Policy, currency: str, now: datetime
) -> Dashboard:
    period = str(Period.of(now))
    balances = await ledger.member_balances(session, member.id)
    wallet_minor = balances["wallet"]
    rows = (
        await session.scalars(
            select(Flattr)
            .where(Flattr.donor_id == member.id, Flattr.undone_at.is_(None))
            .where(counts_this_period(period) | (Flattr.status == PENDING))
            .order_by(Flattr.id)
        )
    ).all()
    payable = [row for row in rows if row.status == PAYABLE]
    budget = member.monthly_budget_minor
    split = split_budget(budget or 0, max(wallet_minor, 0), policy.fee_bp, len(payable))
    deposited = await session.scalar(
        select(func.coalesce(func.sum(DepositRequest.amount_minor), 0)).where(
            DepositRequest.member_id == member.id, DepositRequest.state == "credited"
        )
    )
    history_rows = (
        await session.execute(
            select(Flattr.period, func.count())
            .where(Flattr.donor_id == member.id, Flattr.undone_at.is_(None))
            .group_by(Flattr.period)
            .order_by(Flattr.period.desc())
            .limit(24)
        )
    ).all()
    return Dashboard(
        currency=currency,
        period=period,
        wallet_minor=wallet_minor,
        budget_minor=budget,
        planned_minor=min(budget or 0, max(wallet_minor, 0)),
        split=split,
        flattrs=[_line(row, split.share_minor) for row in payable],
        pending=[_line(row, 0) for row in rows if row.status == PENDING],
        deposited_minor=int(deposited or 0),
        earnings_pending_minor=balances["earnings_pending"],
        earnings_available_minor=balances["earnings_available"],
        history=[{"period": p, "flattrs": int(n)} for p, n in history_rows],
    )


def _line(row: Flattr, share: int) -> FlattrLine:
    return FlattrLine(row.id, row.target_uri, row.payee_uri, row.status, row.period, share)
