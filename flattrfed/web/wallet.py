"""The member's wallet: deposit references and instructions, deposit history, budget, payouts."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from yarl import URL

from flattrfed.context import SERVICES
from flattrfed.db.models import DepositRequest, Member, PayoutRequest
from flattrfed.flattring.policy import current_policy
from flattrfed.flattring.wallets import (
    ManualBankTransfer,
    WalletError,
    request_deposit,
    request_payout,
    set_budget,
)
from flattrfed.money import Money
from flattrfed.settlement import ledger
from flattrfed.settlement.ledger import LedgerError
from flattrfed.web.render import render, sentence
from flattrfed.web.security import require_member

routes = web.RouteTableDef()

PROVIDER = ManualBankTransfer()


def _text(form: Any, name: str, limit: int = 100) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


async def _wallet_page(
    request: web.Request, member: Member, *, status: int = 200, **errors: str
) -> web.Response:
    services = request.app[SERVICES]
    currency = services.settings.currency
    now = services.clock.now()
    async with services.database.transaction() as session:
        policy = await current_policy(session, services.settings, now)
        row = await session.get(Member, member.id)
        assert row is not None
        balances = await ledger.member_balances(session, member.id)
        deposits = (
            await session.scalars(
                select(DepositRequest)
                .where(DepositRequest.member_id == member.id)
                .order_by(DepositRequest.id.desc())
                .limit(100)
            )
        ).all()
        payouts = (
            await session.scalars(
                select(PayoutRequest)
                .where(PayoutRequest.member_id == member.id)
                .order_by(PayoutRequest.id.desc())
                .limit(100)
            )
        ).all()
    open_requests = [deposit for deposit in deposits if deposit.state == "open"]
    newest_open = open_requests[0] if open_requests else None
    budget = row.monthly_budget_minor
    return await render(
        request,
        "wallet.html",
        {
            "member": row,
            "balances": balances,
            "deposits": deposits,
            "payouts": payouts,
            "newest_open": newest_open,
            "instructions": PROVIDER.instructions(newest_open.reference, currency)
            if newest_open
            else None,
            "policy": policy,
            "budget_text": _amount_text(budget, currency) if budget is not None else "",
            "planned_minor": min(budget or 0, max(balances["wallet"], 0)),
            "min_budget": _amount_text(policy.budget_min_minor, currency),
            "max_budget": _amount_text(policy.budget_max_minor, currency),
            "step": _step(currency),
            **errors,
        },
        status=status,
    )


def _amount_text(minor: int, currency: str) -> str:
    """The amount as an input value: "12.50" for EUR (no currency code)."""
    return Money(minor, currency).format().rsplit(" ", 1)[0]


def _step(currency: str) -> str:
    exponent = Money.zero(currency).exponent
    return "1" if exponent == 0 else "0." + "0" * (exponent - 1) + "1"


def _redirect(msg: str, fragment: str = "") -> web.HTTPSeeOther:
    return web.HTTPSeeOther(str(URL("/wallet").with_query(msg=msg).with_fragment(fragment)))


@routes.get("/wallet")
async def wallet(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    return await _wallet_page(request, member)


@routes.post("/wallet/deposit")
async def deposit(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    async with services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        await request_deposit(session, row, PROVIDER, services.clock.now())
    raise _redirect("deposit", "deposit-heading")


@routes.post("/wallet/budget")
async def budget(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    currency = services.settings.currency
    form = await request.post()
    remove = "remove" in form
    amount: int | None = None
    if not remove:
        try:
            amount = Money.parse(_text(form, "budget"), currency).amount_minor
        except ValueError as error:
            return await _wallet_page(
                request, member, status=400, budget_error=f"Give an amount in {currency}: {error}."
            )
    try:
        async with services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            policy = await current_policy(session, services.settings, services.clock.now())
            await set_budget(session, row, amount, policy, currency)
    except WalletError as error:
        return await _wallet_page(request, member, status=400, budget_error=sentence(error))
    raise _redirect("budget-removed" if remove else "budget", "budget-heading")


@routes.post("/wallet/payout")
async def payout(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    currency = services.settings.currency
    form = await request.post()
    try:
        amount = Money.parse(_text(form, "amount"), currency)
    except ValueError as error:
        return await _wallet_page(
            request, member, status=400, payout_error=f"Give an amount in {currency}: {error}."
        )
    now = services.clock.now()
    try:
        async with services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            policy = await current_policy(session, services.settings, now)
            await request_payout(session, row, amount, policy, currency, now)
    except (WalletError, LedgerError) as error:
        return await _wallet_page(request, member, status=400, payout_error=sentence(error))
    raise _redirect("payout", "payout-heading")
