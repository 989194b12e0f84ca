"""Admin screens of the money between instances: clearing runs, statements, settlements, check.

Every handler starts with require_admin. The close runs through CloseScheduler.close (as
`flattrfed clearing close`), settlement actions through services.exchange, and the check is
`checks.check_ledger` (as `flattrfed check`).
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from flattrfed.context import SERVICES
from flattrfed.db.models import (
    ClearingRun,
    DonorClose,
    Settlement,
    SettlementEvent,
    Share,
    Statement,
    StatementLine,
)
from flattrfed.periods import Period
from flattrfed.settlement import statements as st
from flattrfed.settlement.checks import INVARIANTS, Problem, check_ledger
from flattrfed.settlement.close import CloseError
from flattrfed.settlement.exchange import MAX_DISPUTE_REASON, ExchangeError
from flattrfed.settlement.ledger import LedgerError
from flattrfed.settlement.schedule import CloseScheduler
from flattrfed.web.admin import PAGE_SIZE, form_text, page_number, redirect_with
from flattrfed.web.render import message_page, render, require_admin, sentence

routes = web.RouteTableDef()

RUNS_PER_PAGE = 24
EVENTS_PER_SETTLEMENT = 20


# --- settlements -------------------------------------------------------------------------------


@routes.get("/admin/settlements")
async def settlements(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    page = page_number(request)
    async with services.database.sessions() as session:
        rows = (
            await session.scalars(
                select(Settlement)
                .order_by(Settlement.id.desc())
                .offset((page - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE + 1)
            )
        ).all()
        shown = rows[:PAGE_SIZE]
        events: dict[int, list[SettlementEvent]] = defaultdict(list)
        if shown:
            for event in await session.scalars(
                select(SettlementEvent)
                .where(SettlementEvent.settlement_id.in_([row.id for row in shown]))
                .order_by(SettlementEvent.id.desc())
            ):
                if len(events[event.settlement_id]) < EVENTS_PER_SETTLEMENT:
                    events[event.settlement_id].append(event)
        statements = (
            await session.scalars(select(Statement).order_by(Statement.id.desc()).limit(PAGE_SIZE))
        ).all()
    return await render(
        request,
        "admin/settlements.html",
        {
            "settlements": shown,
            "events": events,
            "statements": statements,
            "max_reason": MAX_DISPUTE_REASON,
            "pager": {
                "page": page,
                "has_next": len(rows) > PAGE_SIZE,
                "path": "/admin/settlements",
                "label": "settlements",
                "fragment": "",
            },
        },
    )


def _settlement_id(request: web.Request) -> int:
    return int(request.match_info["settlement_id"])


@routes.post("/admin/settlements/{settlement_id:[0-9]{1,18}}/paid")
async def settlement_paid(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    exchange = request.app[SERVICES].exchange
    form = await request.post()
    try:
        await exchange.mark_paid(
            _settlement_id(request), form_text(form, "bank_reference"), admin.username
        )
    except (ExchangeError, LedgerError) as error:
        return await message_page(
            request,
            "The settlement was not marked paid",
            sentence(error),
            back="/admin/settlements",
        )
    raise redirect_with("/admin/settlements", "settlement-paid")


@routes.post("/admin/settlements/{settlement_id:[0-9]{1,18}}/confirm")
async def settlement_confirm(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    exchange = request.app[SERVICES].exchange
    try:
        await exchange.confirm(_settlement_id(request), admin.username)
    except (ExchangeError, LedgerError) as error:
        return await message_page(
            request, "The settlement was not confirmed", sentence(error), back="/admin/settlements"
        )
    raise redirect_with("/admin/settlements", "settlement-confirmed")


@routes.post("/admin/settlements/{settlement_id:[0-9]{1,18}}/dispute")
async def settlement_dispute(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    exchange = request.app[SERVICES].exchange
    form = await request.post()
    try:
        await exchange.dispute(
            _settlement_id(request), form_text(form, "reason", MAX_DISPUTE_REASON), admin.username
        )
    except ExchangeError as error:
        return await message_page(
            request, "The settlement was not disputed", sentence(error), back="/admin/settlements"
        )
    raise redirect_with("/admin/settlements", "settlement-disputed")


# --- statements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """What this instance can recompute about a stored statement, without the network."""

    digest_matches: bool
    lines_sum_minor: int
    line_count: int
    all_lines_here: bool  # False: only the lines the signed document carries are stored
    declared_total_minor: int | None
    declared_lines: int | None
    has_proof: bool
    verdict: str  # what the receiver answered: accepted, rejected, or no answer yet
    accepted_minor: int | None
    disputes: list[dict[str, str]]

    @property
    def totals_match(self) -> bool:
        return (
            self.declared_total_minor == self.lines_sum_minor
            and self.declared_lines == self.line_count
        )


def _minor(value: Any) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _document_lines(statement: Statement) -> list[dict[str, Any]]:
    lines = statement.document.get("lines")
    return [line for line in lines if isinstance(line, dict)] if isinstance(lines, list) else []


def verify_stored(
    statement: Statement, line_count: int, lines_sum_minor: int, all_lines_here: bool
) -> Verification:
    """The stored statement's digest, its totals against its lines, and the answer it got."""
    document = statement.document
    raw_totals = document.get("totals")
    totals: dict[str, Any] = raw_totals if isinstance(raw_totals, dict) else {}
    declared_lines = totals.get("lines")
    response = statement.response or {}
    raw = response.get("disputed")
    disputes = [
        {
            "line": str(item.get("line", ""))[:100],
            "reason": str(item.get("reason", ""))[:200],
            "like": str(item.get("like", ""))[:2048],
        }
        for item in (raw if isinstance(raw, list) else [])[:1000]
        if isinstance(item, dict)
    ]
    return Verification(
        digest_matches=st.statement_digest(document) == statement.digest,
        lines_sum_minor=lines_sum_minor,
        line_count=line_count,
        all_lines_here=all_lines_here,
        declared_total_minor=_minor(totals.get("amount")),
        declared_lines=declared_lines if isinstance(declared_lines, int) else None,
        has_proof=isinstance(document.get("proof"), dict),
        verdict="no answer yet" if statement.response is None else statement.state,
        accepted_minor=_minor(response.get("acceptedAmount")),
        disputes=disputes,
    )


@routes.get("/admin/statements/{statement_id:[0-9]{1,18}}")
async def statement_detail(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    page = page_number(request)
    start = (page - 1) * PAGE_SIZE
    async with services.database.sessions() as session:
        statement = await session.get(Statement, int(request.match_info["statement_id"]))
        if statement is None:
            raise web.HTTPNotFound(text="No such statement.")
        stored_count, stored_sum = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(StatementLine.amount_minor), 0)).where(
                    StatementLine.statement_id == statement.id
                )
            )
        ).one()
        stored = (
            await session.execute(
                select(
                    StatementLine.like_uri,
                    StatementLine.donor_uri,
                    StatementLine.object_uri,
                    StatementLine.amount_minor,
                )
                .where(StatementLine.statement_id == statement.id)
                .order_by(StatementLine.position)
                .offset(start)
                .limit(PAGE_SIZE + 1)
            )
        ).all()
    if stored_count:
        # Issued and accepted statements keep every line, on all their pages, in order.
        line_count, lines_sum, all_here = int(stored_count), int(stored_sum), True
        lines = [
            {"like": like, "donor": donor, "object": target, "amount_minor": int(amount)}
            for like, donor, target, amount in stored
        ]
        has_next = len(stored) > PAGE_SIZE
    else:
        # Otherwise (e.g. a rejected statement) only the lines inside the document are here.
        carried = _document_lines(statement)
        line_count = len(carried)
        lines_sum = sum(_minor(line.get("amount")) or 0 for line in carried)
        totals = statement.document.get("totals")
        declared = totals.get("lines") if isinstance(totals, dict) else None
        all_here = not isinstance(declared, int) or declared <= line_count
        lines = [
            {key: str(line.get(key, "")) for key in ("like", "donor", "object")}
            | {"amount_minor": _minor(line.get("amount"))}
            for line in carried[start : start + PAGE_SIZE + 1]
        ]
        has_next = len(lines) > PAGE_SIZE
    return await render(
        request,
        "admin/statement.html",
        {
            "statement": statement,
            "check": verify_stored(statement, line_count, lines_sum, all_here),
            "lines": lines[:PAGE_SIZE],
            "first_line": start + 1,
            "pager": {
                "page": page,
                "has_next": has_next,
                "path": f"/admin/statements/{statement.id}",
                "label": "statement lines",
                "fragment": "#lines-heading",
            },
        },
    )


# --- clearing runs -----------------------------------------------------------------------------


@routes.get("/admin/clearing")
async def clearing(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    return await _clearing_page(request)


async def _clearing_page(
    request: web.Request, *, status: int = 200, error: str | None = None, period: str = ""
) -> web.Response:
    services = request.app[SERVICES]
    page = page_number(request)
    now = services.clock.now()
    async with services.database.sessions() as session:
        runs = (
            await session.scalars(
                select(ClearingRun)
                .order_by(ClearingRun.period.desc())
                .offset((page - 1) * RUNS_PER_PAGE)
                .limit(RUNS_PER_PAGE + 1)
            )
        ).all()
        ids = [run.id for run in runs[:RUNS_PER_PAGE]]
        donors = {
            run_id: (int(count), int(spent or 0), int(fees or 0), int(carry or 0))
            for run_id, count, spent, fees, carry in await session.execute(
                select(
                    DonorClose.run_id,
                    func.count(),
                    func.sum(DonorClose.spent_minor),
                    func.sum(DonorClose.fee_minor),
                    func.sum(DonorClose.carry_minor),
                )
                .where(DonorClose.run_id.in_(ids))
                .group_by(DonorClose.run_id)
            )
        }
        shares = {
            run_id: (int(count), int(amount or 0))
            for run_id, count, amount in await session.execute(
                select(Share.run_id, func.count(), func.sum(Share.amount_minor))
                .where(Share.run_id.in_(ids))
                .group_by(Share.run_id)
            )
        }
        grace = timedelta(hours=services.settings.close_grace_hours)
        last_closable = Period.of(now).previous()
        if now < last_closable.closes_at(grace):
            last_closable = last_closable.previous()
        closable_stage = await session.scalar(
            select(ClearingRun.stage).where(ClearingRun.period == str(last_closable))
        )
    return await render(
        request,
        "admin/clearing.html",
        {
            "runs": [
                {
                    "run": run,
                    "donors": donors.get(run.id, (0, 0, 0, 0)),
                    "shares": shares.get(run.id, (0, 0)),
                }
                for run in runs[:RUNS_PER_PAGE]
            ],
            "current": str(Period.of(now)),
            "closable": str(last_closable),
            "closable_stage": closable_stage,
            "closable_from": last_closable.closes_at(grace),
            "grace_hours": services.settings.close_grace_hours,
            "error": error,
            "period": period or str(last_closable),
            "pager": {
                "page": page,
                "has_next": len(runs) > RUNS_PER_PAGE,
                "path": "/admin/clearing",
                "label": "clearing runs",
                "fragment": "",
            },
        },
        status=status,
    )


@routes.post("/admin/clearing/close")
async def clearing_close(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    services = request.app[SERVICES]
    form = await request.post()
    text = form_text(form, "period", 20)
    try:
        period = Period.parse(text)
    except ValueError:
        return await _clearing_page(
            request, status=400, error=f"{text!r} is not a month like 2026-11.", period=text
        )
    async with services.database.sessions() as session:
        stage = await session.scalar(
            select(ClearingRun.stage).where(ClearingRun.period == str(period))
        )
    if stage == "done":
        return await _clearing_page(
            request, status=409, error=f"{period} is already closed.", period=text
        )
    scheduler = CloseScheduler(services.database, services.clock, services.settings)
    # A runner id of its own: two admins pressing at once must not share the close's lease.
    runner = f"web-{admin.username}-{secrets.token_hex(4)}"
    try:
        await scheduler.close(period, runner_id=runner)
    except CloseError as error:
        return await _clearing_page(request, status=409, error=sentence(error), period=text)
    raise redirect_with("/admin/clearing", "closed")


# --- the check ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    invariant: str
    rule: str
    problems: list[Problem]


@routes.get("/admin/check")
async def check(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        problems = await check_ledger(session, services.settings.currency)
    by_invariant: dict[str, list[Problem]] = defaultdict(list)
    for problem in problems:
        by_invariant[problem.invariant].append(problem)
    results = [
        CheckResult(name, rule, by_invariant.get(name, [])) for name, rule in INVARIANTS.items()
    ]
    return await render(
        request,
        "admin/check.html",
        {
            "results": results,
            "ok": not problems,
            "failed": sum(1 for result in results if result.problems),
            "checked_at": services.clock.now(),
        },
    )
