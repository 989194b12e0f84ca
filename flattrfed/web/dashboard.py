"""The member's dashboard: money in, earnings, this month's flattrs with their shares, history."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from flattrfed.context import SERVICES
from flattrfed.db.models import ClearingRun, DonorClose, Member
from flattrfed.flattring.dashboard import member_dashboard
from flattrfed.flattring.flattrs import unflattr
from flattrfed.flattring.policy import current_policy
from flattrfed.flattring.resolve import CannotFlattr
from flattrfed.periods import Period
from flattrfed.web.labels import label_targets
from flattrfed.web.render import message_page, render, sentence
from flattrfed.web.security import require_member, safe_next

routes = web.RouteTableDef()


@dataclass(frozen=True)
class MonthLine:
    """One month of a member's history: flattrs made and, once closed, what was spent."""

    period: str
    flattrs: int
    closed: bool
    spent_minor: int | None = None
    fee_minor: int | None = None
    share_minor: int | None = None
    things: int | None = None
    carry_minor: int | None = None


async def month_history(
    session: AsyncSession, member_id: int, counts: list[dict[str, int | str]]
) -> list[MonthLine]:
    closes = {
        period: close
        for period, close in (
            await session.execute(
                select(ClearingRun.period, DonorClose)
                .join(DonorClose, DonorClose.run_id == ClearingRun.id)
                .where(DonorClose.donor_id == member_id)
            )
        ).all()
    }
    periods = sorted({str(row["period"]) for row in counts} | set(closes), reverse=True)
    flattrs = {str(row["period"]): int(row["flattrs"]) for row in counts}
    lines: list[MonthLine] = []
    for period in periods[:24]:
        close = closes.get(period)
        if close is None:
            lines.append(MonthLine(period, flattrs.get(period, 0), closed=False))
        else:
            lines.append(
                MonthLine(
                    period,
                    flattrs.get(period, 0),
                    closed=True,
                    spent_minor=close.fee_minor + close.share_minor * close.things,
                    fee_minor=close.fee_minor,
                    share_minor=close.share_minor,
                    things=close.things,
                    carry_minor=close.carry_minor,
                )
            )
    return lines


def page_number(value: str | None) -> int:
    """A `?page=` value: a positive number of at most six digits, else the first page."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 6:
        return 1
    return max(int(value), 1)


@routes.get("/dashboard")
async def dashboard(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    now = services.clock.now()
    async with services.database.transaction() as session:
        policy = await current_policy(session, services.settings, now)
        # The member as require_member loaded it for this request: no second lookup.
        row = member
        board = await member_dashboard(
            session,
            row,
            policy,
            services.settings.currency,
            now,
            page=page_number(request.query.get("page")),
            pending_page=page_number(request.query.get("pending_page")),
        )
        labels = await label_targets(
            session,
            services.urls,
            [(line.target_uri, line.payee_uri) for line in board.flattrs + board.pending],
        )
        history = await month_history(session, member.id, board.history)
    period = Period.of(now)
    return await render(
        request,
        "dashboard.html",
        {
            "member": row,
            "board": board,
            "labels": labels,
            "history": history,
            "policy": policy,
            "period_end": period.end,
            "here": _here(board.page, board.pending_page),
        },
    )


@routes.post("/flattrs/{flattr_id:[0-9]{1,18}}/undo")
async def undo(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    form = await request.post()
    back = safe_next(form.get("next"))
    try:
        async with services.database.transaction() as session:
            donor = await session.get(Member, member.id)
            assert donor is not None
            await unflattr(
                session, donor, int(request.match_info["flattr_id"]), services.clock.now()
            )
    except CannotFlattr as error:
        return await message_page(
            request, "The flattr cannot be undone", sentence(error), back=back
        )
    raise web.HTTPSeeOther(_with_msg(back, "undone"))


def _here(page: int, pending_page: int) -> str:
    """Where an Undo button returns to: the dashboard with the same pages open."""
    query = {
        key: str(value)
        for key, value in (("page", page), ("pending_page", pending_page))
        if value > 1
    }
    return str(URL("/dashboard").with_query(query))


def _with_msg(path: str, msg: str) -> str:
    return str(URL(path).update_query(msg=msg))
