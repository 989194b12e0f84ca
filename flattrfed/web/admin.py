"""Admin pages: members, the instance policy, deposits, payouts, settlements with peers.

Every handler starts with require_admin: members who are not admins get 403. Money moves only
through the services (wallets.record_deposit, wallets.mark_payout_paid, services.exchange).
The federation screens are in admin_federation.py, the clearing ones in admin_settlement.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from yarl import URL

from flattrfed.context import SERVICES
from flattrfed.db.models import (
    ClearingRun,
    DepositRequest,
    InstancePolicy,
    Member,
    PayoutRequest,
    PolicyChange,
)
from flattrfed.flattring.members import approve, create_invite
from flattrfed.flattring.policy import (
    REGISTRATION_MODES,
    PolicyError,
    current_policy,
    update_policy,
)
from flattrfed.flattring.wallets import WalletError, mark_payout_paid, record_deposit
from flattrfed.money import Money
from flattrfed.settlement import ledger
from flattrfed.settlement.ledger import LedgerError
from flattrfed.web.render import message_page, render, require_admin, sentence

routes = web.RouteTableDef()


# Lists on admin pages show this many rows per page (?page=N).
PAGE_SIZE = 50
MAX_PAGE = 100_000


def form_text(form: Any, name: str, limit: int = 200) -> str:
    """A form field as stripped text, cut to `limit` characters ("" when absent or a file)."""
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def redirect_with(path: str, msg: str) -> web.HTTPSeeOther:
    """303 to `path` with a notice code (render.NOTICES) to show there."""
    return web.HTTPSeeOther(str(URL(path).with_query(msg=msg)))


def page_number(request: web.Request) -> int:
    """The list page asked for (?page=N), 1 when absent or not a sane number."""
    text = request.query.get("page", "1")
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        return 1
    return min(max(int(text), 1), MAX_PAGE)


# --- members -----------------------------------------------------------------------------------


async def _members_page(request: web.Request, new_invite: str | None = None) -> web.Response:
    services = request.app[SERVICES]
    page = page_number(request)
    async with services.database.transaction() as session:
        # Accounts waiting for approval first: they are what an admin comes here for.
        rows = (
            await session.scalars(
                select(Member)
                .order_by(Member.approved_at.is_not(None), Member.id)
                .offset((page - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE + 1)
            )
        ).all()
        shown = rows[:PAGE_SIZE]
        wallets = {row.id: (await ledger.member_balances(session, row.id)) for row in shown}
        policy = await current_policy(session, services.settings, services.clock.now())
    return await render(
        request,
        "admin/members.html",
        {
            "members": shown,
            "wallets": wallets,
            "registration": policy.registration,
            "new_invite": new_invite,
            "pager": {
                "page": page,
                "has_next": len(rows) > PAGE_SIZE,
                "path": "/admin",
                "label": "members",
                "fragment": "",
            },
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
    raise redirect_with("/admin", "approved")


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
                key: form_text(form, key)
                for key in ("member", "amount", "bank_reference", "request")
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
    username = form_text(form, "member", 30).lstrip("@").lower()
    try:
        amount = Money.parse(form_text(form, "amount"), currency)
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
                bank_reference=form_text(form, "bank_reference"),
                currency=currency,
                now=services.clock.now(),
                reference=form_text(form, "request", 64) or None,
                recorded_by=recorder,
            )
    except (WalletError, LedgerError) as error:
        return await _deposits_page(request, status=400, error=sentence(error), form=form)
    raise redirect_with("/admin/deposits", "recorded")


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
                form_text(form, "bank_reference"),
                services.settings.currency,
                services.clock.now(),
            )
    except (WalletError, LedgerError) as error:
        return await message_page(
            request, "The payout was not marked paid", sentence(error), back="/admin/payouts"
        )
    raise redirect_with("/admin/payouts", "payout-paid")


# --- policy ------------------------------------------------------------------------------------


def _amount_text(minor: int, currency: str) -> str:
    """An amount as a form value: "12.50" for EUR (no currency code)."""
    return Money(minor, currency).format().rsplit(" ", 1)[0]


async def _policy_page(
    request: web.Request, *, status: int = 200, error: str | None = None, entered: Any = None
) -> web.Response:
    services = request.app[SERVICES]
    currency = services.settings.currency
    page = page_number(request)
    async with services.database.transaction() as session:
        policy = await current_policy(session, services.settings, services.clock.now())
        row = await session.get(InstancePolicy, 1)
        runs = (
            await session.execute(
                select(ClearingRun.period, ClearingRun.fee_bp, ClearingRun.started_at)
                .order_by(ClearingRun.period.desc())
                .limit(24)
            )
        ).all()
        changes = (
            await session.scalars(
                select(PolicyChange)
                .order_by(PolicyChange.id.desc())
                .offset((page - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE + 1)
            )
        ).all()
    values = {
        "registration": policy.registration,
        "fee_bp": str(policy.fee_bp),
        "budget_min": _amount_text(policy.budget_min_minor, currency),
        "budget_max": _amount_text(policy.budget_max_minor, currency),
        "min_payout": _amount_text(policy.min_payout_minor, currency),
        "receiving_needs_budget": policy.receiving_needs_budget,
    }
    if entered is not None:
        # Show what the admin typed, so a mistake is corrected rather than retyped.
        values.update({key: form_text(entered, key, 40) for key in POLICY_TEXT_FIELDS})
        values["receiving_needs_budget"] = "receiving_needs_budget" in entered
    return await render(
        request,
        "admin/policy.html",
        {
            "policy": policy,
            "values": values,
            "modes": REGISTRATION_MODES,
            "updated_at": row.updated_at if row is not None else None,
            "runs": runs,
            "changes": [(change, _shown_value(change, currency)) for change in changes[:PAGE_SIZE]],
            "pager": {
                "page": page,
                "has_next": len(changes) > PAGE_SIZE,
                "path": "/admin/policy",
                "label": "policy changes",
                "fragment": "#history-heading",
            },
            "percent": percent,
            "error": error,
        },
        status=status,
    )


def _shown_value(change: PolicyChange, currency: str) -> tuple[str, str]:
    """A stored change's old and new values as the page shows them (amounts, percentages)."""

    def shown(value: str) -> str:
        if not (value.isascii() and value.isdigit()):
            return value
        if change.setting == "fee_bp":
            return percent(int(value))
        if change.setting.endswith("_minor"):
            return Money(int(value), currency).format()
        return value

    return shown(change.old_value), shown(change.new_value)


POLICY_TEXT_FIELDS = ("registration", "fee_bp", "budget_min", "budget_max", "min_payout")


def percent(basis_points: int) -> str:
    """Basis points as a percentage: 250 -> "2.50 %"."""
    return f"{basis_points // 100}.{basis_points % 100:02d} %"


def _policy_changes(form: Any, currency: str) -> dict[str, object]:
    """The policy values of the form, checked for form; update_policy checks the rules."""
    fee_text = form_text(form, "fee_bp", 40)
    digits = fee_text.isascii() and fee_text.isdigit()
    if not digits or len(fee_text) > 5 or int(fee_text) > 10_000:
        raise PolicyError(
            "give the fee as a whole number of basis points from 0 to 10000 (250 is 2.50 %)"
        )
    changes: dict[str, object] = {
        "registration": form_text(form, "registration", 40),
        "fee_bp": int(fee_text),
        "receiving_needs_budget": "receiving_needs_budget" in form,
    }
    for field, key, what in [
        ("budget_min", "budget_min_minor", "the smallest monthly budget"),
        ("budget_max", "budget_max_minor", "the largest monthly budget"),
        ("min_payout", "min_payout_minor", "the minimum payout"),
    ]:
        try:
            amount = Money.parse(form_text(form, field, 40), currency).amount_minor
        except ValueError as error:
            raise PolicyError(f"give {what} in {currency}: {error}") from None
        if amount <= 0:
            raise PolicyError(f"{what} must be more than zero")
        changes[key] = amount
    return changes


@routes.get("/admin/policy")
async def policy_form(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    return await _policy_page(request)


@routes.post("/admin/policy")
async def policy_save(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    services = request.app[SERVICES]
    form = await request.post()
    try:
        changes = _policy_changes(form, services.settings.currency)
        async with services.database.transaction() as session:
            await update_policy(
                session,
                services.settings,
                services.clock.now(),
                changed_by=admin.username,
                **changes,
            )
    except PolicyError as error:
        return await _policy_page(request, status=400, error=sentence(error), entered=form)
    raise redirect_with("/admin/policy", "policy-saved")
