"""Admin pages: members, deposits to record, payouts to mark paid, settlements with peers.

Every handler starts with require_admin: members who are not admins get 403. Money moves only
through the services (wallets.record_deposit, wallets.mark_payout_paid, services.exchange).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from yarl import URL

from flattrfed.context import SERVICES
from flattrfed.db.models import DepositRequest, Member, PayoutRequest, Settlement
from flattrfed.flattring.members import approve, create_invite
from flattrfed.flattring.policy import current_policy
from flattrfed.flattring.wallets import WalletError, mark_payout_paid, record_deposit
from flattrfed.money import Money
from flattrfed.settlement import ledger
from flattrfed.settlement.exchange import ExchangeError
from flattrfed.settlement.ledger import LedgerError
from flattrfed.web.render import message_page, render, require_admin, sentence

routes = web.RouteTableDef()


def _text(form: Any, name: str, limit: int = 200) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _done(path: str, msg: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(str(URL(path).with_query(msg=msg)))


# --- members -----------------------------------------------------------------------------------


async def _members_page(request: web.Request, new_invite: str | None = None) -> web.Response:
    services = request.app[SERVICES]
    async with services.database.transaction() as session:
        rows = (await session.scalars(select(Member).order_by(Member.id))).all()
        wallets = {row.id: (await ledger.member_balances(session, row.id)) for row in rows}
        policy = await current_policy(session, services.settings, services.clock.now())
    return await render(
        request,
        "admin/members.html",
        {
            "members": rows,
            "wallets": wallets,
            "registration": policy.registration,
            "new_invite": new_invite,
        },
    )


@routes.get("/admin")
async def members(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    return await _members_page(request)


@routes.post("/admin/invites")
async def invite(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    services = request.app[SERVICES]
    async with services.database.transaction() as session:
        creator = await session.get(Member, admin.id)
        code = (await create_invite(session, creator, services.clock.now())).code
    return await _members_page(request, new_invite=code)


@routes.post("/admin/members/{member_id:[0-9]{1,18}}/approve")
async def approve_member(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    async with services.database.transaction() as session:
        member = await session.get(Member, int(request.match_info["member_id"]))
        if member is None:
            raise web.HTTPNotFound()
        await approve(session, member, services.clock.now())
    raise _done("/admin", "approved")


# --- deposits ----------------------------------------------------------------------------------


async def _deposits_page(
    request: web.Request, *, status: int = 200, error: str | None = None, form: Any = None
) -> web.Response:
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        rows = (
            await session.execute(
                select(DepositRequest, Member.username)
                .join(Member, Member.id == DepositRequest.member_id)
                .order_by(DepositRequest.id.desc())
                .limit(200)
            )
        ).all()
    return await render(
        request,
        "admin/deposits.html",
        {
            "open_requests": [(row, name) for row, name in rows if row.state == "open"],
            "credited": [(row, name) for row, name in rows if row.state == "credited"][:50],
            "error": error,
            "form": {
                key: _text(form, key) for key in ("member", "amount", "bank_reference", "request")
            }
            if form is not None
            else {},
        },
        status=status,
    )


@routes.get("/admin/deposits")
async def deposits(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    return await _deposits_page(request)


@routes.post("/admin/deposits")
async def record(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    services = request.app[SERVICES]
    currency = services.settings.currency
    form = await request.post()
    username = _text(form, "member", 30).lstrip("@").lower()
    try:
        amount = Money.parse(_text(form, "amount"), currency)
    except ValueError as error:
        return await _deposits_page(
            request, status=400, error=f"Give the amount in {currency}: {error}.", form=form
        )
    try:
        async with services.database.transaction() as session:
            member = await session.scalar(select(Member).where(Member.username == username))
            if member is None:
                raise WalletError(f"no member named {username!r}")
            recorder = await session.get(Member, admin.id)
            await record_deposit(
                session,
                member=member,
                amount=amount,
                bank_reference=_text(form, "bank_reference"),
                currency=currency,
                now=services.clock.now(),
                reference=_text(form, "request", 64) or None,
                recorded_by=recorder,
            )
    except (WalletError, LedgerError) as error:
        return await _deposits_page(request, status=400, error=sentence(error), form=form)
    raise _done("/admin/deposits", "recorded")


# --- payouts -----------------------------------------------------------------------------------


@routes.get("/admin/payouts")
async def payouts(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        rows = (
            await session.execute(
                select(PayoutRequest, Member.username)
                .join(Member, Member.id == PayoutRequest.member_id)
                .order_by(PayoutRequest.id.desc())
                .limit(200)
            )
        ).all()
    return await render(request, "admin/payouts.html", {"payouts": rows})


@routes.post("/admin/payouts/{payout_id:[0-9]{1,18}}/paid")
async def payout_paid(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    form = await request.post()
    try:
        async with services.database.transaction() as session:
            payout = await session.get(PayoutRequest, int(request.match_info["payout_id"]))
            if payout is None:
                raise web.HTTPNotFound()
            await mark_payout_paid(
                session,
                payout,
                _text(form, "bank_reference"),
                services.settings.currency,
                services.clock.now(),
            )
    except (WalletError, LedgerError) as error:
        return await message_page(
            request, "The payout was not marked paid", sentence(error), back="/admin/payouts"
        )
    raise _done("/admin/payouts", "payout-paid")


# --- settlements -------------------------------------------------------------------------------


@routes.get("/admin/settlements")
async def settlements(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        rows = (
            await session.scalars(select(Settlement).order_by(Settlement.id.desc()).limit(200))
        ).all()
    return await render(request, "admin/settlements.html", {"settlements": rows})


@routes.post("/admin/settlements/{settlement_id:[0-9]{1,18}}/paid")
async def settlement_paid(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    exchange = request.app[SERVICES].exchange
    form = await request.post()
    try:
        await exchange.mark_paid(
            int(request.match_info["settlement_id"]), _text(form, "bank_reference"), admin.username
        )
    except (ExchangeError, LedgerError) as error:
        return await message_page(
            request,
            "The settlement was not marked paid",
            sentence(error),
            back="/admin/settlements",
        )
    raise _done("/admin/settlements", "settlement-paid")


@routes.post("/admin/settlements/{settlement_id:[0-9]{1,18}}/confirm")
async def settlement_confirm(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    exchange = request.app[SERVICES].exchange
    try:
        await exchange.confirm(int(request.match_info["settlement_id"]), admin.username)
    except (ExchangeError, LedgerError) as error:
        return await message_page(
            request, "The settlement was not confirmed", sentence(error), back="/admin/settlements"
        )
    raise _done("/admin/settlements", "settlement-confirmed")
